// The figures' data: what each CSV holds is checked against the paper and against properties the
// curves must have, and every header against the fixtures the plotting test renders from (so
// the fixtures cannot drift from what nuq writes).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "nuq/design.h"
#include "nuq/error.h"
#include "nuq/figures.h"
#include "nuq/paper.h"
#include "temp_dir.h"

namespace nuq {
namespace {

double cell(const CsvTable& t, std::size_t row, const std::string& name) {
  for (std::size_t c = 0; c < t.header.size(); ++c)
    if (t.header[c] == name) return std::stod(t.rows.at(row).at(c));
  ADD_FAILURE() << "no column " << name;
  return NAN;
}

std::string fixture_header(const std::string& file) {
  std::ifstream in(std::string(NUQ_SOURCE_DIR) + "/tests/fixtures/figures/" + file);
  std::string line;
  std::getline(in, line);
  return line;
}

std::string header_of(const CsvTable& t) {
  const std::string csv = to_csv(CsvTable{t.header, {}});
  return csv.substr(0, csv.size() - 1);
}

Codebook optimal(Method method) {
  DesignSpec spec;
  spec.method = method;
  return design(spec).codebook;
}

TEST(Figures, TransferCharacteristicIsTheQuantizersOwn) {
  const CsvTable t = transfer_characteristic_data(-3.0, 3.0, 601);
  ASSERT_EQ(t.rows.size(), 601u);
  const Codebook sptq = optimal(Method::Sptq), msptq = optimal(Method::Msptq);
  for (std::size_t i = 0; i < t.rows.size(); ++i) {
    const double x = cell(t, i, "x");
    EXPECT_NEAR(cell(t, i, "sptq"), sptq.quantize(x), 1e-8) << x;
    EXPECT_NEAR(cell(t, i, "msptq"), msptq.quantize(x), 1e-8) << x;
  }
  EXPECT_NEAR(cell(t, 600, "sptq"), 2.0 * paper::kSptqDelta, 2e-4);  // outer level 2Δ
}

TEST(Figures, ConvergenceEndsWhereTable2Does) {
  const CsvTable t = convergence_data();
  std::map<std::string, std::pair<int, double>> last;  // design/delta0 -> (iteration, delta)
  for (std::size_t i = 0; i < t.rows.size(); ++i)
    last[t.rows[i][0] + "/" + t.rows[i][1]] = {int(cell(t, i, "iteration")), cell(t, i, "delta")};
  ASSERT_EQ(last.size(), paper::table2().size() + 1);
  for (const auto& [key, end] : last) {
    const bool msptq = key.rfind("msptq", 0) == 0;
    EXPECT_NEAR(end.second, msptq ? paper::kMsptqDelta : paper::kSptqDelta, 1e-4) << key;
    if (msptq) {
      EXPECT_EQ(end.first, paper::kMsptqIterations);
    }
  }
  for (const paper::Table2Column& column : paper::table2()) {
    const auto it = std::find_if(last.begin(), last.end(), [&](const auto& entry) {
      return entry.first.rfind("sptq/", 0) == 0 && std::abs(std::stod(entry.first.substr(5)) - column.delta0) < 1e-6;
    });
    ASSERT_NE(it, last.end()) << column.label;
    EXPECT_EQ(it->second.first, column.iterations) << column.label;
  }
}

TEST(Figures, TheIterativeOptimaSitAtTheBottomOfTheDistortionCurves) {
  const CsvTable sweep = distortion_sweep_data(0.4, 1.6, 0.01), optima = distortion_optima_data();
  ASSERT_EQ(optima.rows.size(), 2u);
  for (std::size_t o = 0; o < 2; ++o) {
    const std::string design = optima.rows[o][0];
    const double minimum = cell(optima, o, "distortion");
    for (std::size_t i = 0; i < sweep.rows.size(); ++i) EXPECT_GE(cell(sweep, i, design) + 1e-7, minimum) << design;
  }
  EXPECT_NEAR(cell(optima, 0, "delta"), paper::kSptqDelta, 1e-4);
  EXPECT_NEAR(cell(optima, 1, "delta"), paper::kMsptqDelta, 1e-4);
}

TEST(Figures, NoTwoBitDesignBeatsLloydMax) {
  const CsvTable t = sqnr_vs_xmax_data(0.25, 8.0, 0.025);
  std::size_t best_row = 0;
  for (std::size_t i = 0; i < t.rows.size(); ++i) {
    for (const char* design : {"uniform", "sptq", "msptq", "ternary", "mulaw"})
      EXPECT_LE(cell(t, i, design), cell(t, i, "lloyd-max") + 1e-9) << design << " at " << cell(t, i, "xmax");
    if (cell(t, i, "msptq") > cell(t, best_row, "msptq")) best_row = i;
  }
  EXPECT_NEAR(cell(t, best_row, "xmax"), paper::kMsptqXmax, 0.0125 + 1e-4);  // the grid's half step
  EXPECT_NEAR(cell(t, 0, "lloyd-max"), 7.5401, 1e-4);
}

TEST(Figures, HistogramIsADensityOverTheWholeRange) {
  Model model = make_model(Architecture::Mlp, 5);
  const CsvTable t = weight_histogram_data(model, 0.25);
  double mass = 0.0, count = 0.0;
  for (std::size_t i = 0; i < t.rows.size(); ++i) {
    mass += cell(t, i, "density") * (cell(t, i, "right") - cell(t, i, "left"));
    count += cell(t, i, "count");
  }
  EXPECT_NEAR(mass, 1.0, 1e-9);
  EXPECT_EQ(count, double(model.parameter_count()));
  const WeightRange range = normalised_range(model);
  EXPECT_LE(cell(t, 0, "left"), range.min);
  EXPECT_GE(cell(t, t.rows.size() - 1, "right"), range.max);
  Model flat = make_model(Architecture::Mlp, 5);
  for (auto& p : flat.parameters) std::fill(p.values.begin(), p.values.end(), 0.5f);
  EXPECT_THROW(weight_histogram_data(flat), Error);
}

TEST(Figures, CsvQuotesCellsThatNeedIt) {
  CsvTable t{{"label", "xmax"}, {}};
  t.add(std::vector<std::string>{"±min(|w_min|, |w_max|)", "6.5"});
  t.add(std::vector<std::string>{"say \"hi\"", "1"});
  EXPECT_EQ(to_csv(t), "label,xmax\n\"±min(|w_min|, |w_max|)\",6.5\n\"say \"\"hi\"\"\",1\n");
  EXPECT_THROW(t.add(std::vector<double>{1.0}), InternalError);
}

TEST(Figures, HeadersMatchThePlottingFixtures) {
  EXPECT_EQ(header_of(transfer_characteristic_data(-1, 1, 3)), fixture_header("fig2-transfer.csv"));
  EXPECT_EQ(header_of(convergence_data()), fixture_header("fig5-convergence.csv"));
  EXPECT_EQ(header_of(distortion_sweep_data(0.5, 0.6, 0.1)), fixture_header("fig6-distortion.csv"));
  EXPECT_EQ(header_of(distortion_optima_data()), fixture_header("fig6-distortion-optima.csv"));
  EXPECT_EQ(header_of(sqnr_vs_xmax_data(1, 2, 1)), fixture_header("sqnr-vs-xmax.csv"));
  EXPECT_EQ(header_of(weight_histogram_data(make_model(Architecture::Mlp, 1))), fixture_header("histogram-mnist-mlp.csv"));
  EXPECT_EQ(header_of(support_regions_data(ExperimentResult{})), fixture_header("histogram-mnist-mlp-regions.csv"));
  EXPECT_EQ(header_of(accuracy_vs_xmax_data({})), fixture_header("accuracy-vs-xmax.csv"));
  EXPECT_EQ(header_of(mismatch_data(9, 16, 0, 1, 1)), fixture_header("mismatch-uniform.csv"));
  EXPECT_EQ(header_of(mismatch_runs_data({})), fixture_header("itc2021-rate.csv"));
  EXPECT_EQ(header_of(noise_probe_data({})), fixture_header("itc2021-rate-probe.csv"));
}

// A plotting script that fails leaves no earlier run's image counted as this run's; a script or
// bench folder named explicitly that is not there is an error, not a skip.
TEST(Figures, AFailedRenderingLeavesNoStaleImage) {
  test::TempDir dir;
  const std::string stale = dir.file("fig5-convergence.png"), script = dir.file("fails.py");
  std::ofstream(stale) << "an earlier run's image";
  std::ofstream(script) << "import sys\nsys.exit(3)\n";
  std::vector<Figure> figures = {{"fig5-convergence", "title", "caption"}};
  const std::string outcome = render_figures(dir.path().string(), figures, script, dir.path().string());
  EXPECT_FALSE(figures.front().rendered) << outcome;
  if (outcome.find("no Python with matplotlib") == std::string::npos) {
    EXPECT_FALSE(std::filesystem::exists(stale)) << outcome;
    EXPECT_NE(outcome.find("0 of 1 figures rendered"), std::string::npos) << outcome;
    EXPECT_NE(outcome.find("exited with status 3"), std::string::npos) << outcome;
  }
  EXPECT_THROW(render_figures(dir.path().string(), figures, dir.file("missing.py")), Error);
  EXPECT_THROW(render_figures(dir.path().string(), figures, script, dir.file("no-results")), Error);
}

TEST(Figures, WritesTheDataOfEveryFigureItLists) {
  test::TempDir dir;
  save_model(dir.file("m.safetensors"), make_model(Architecture::Mlp, 2));
  ExperimentResult r;
  r.dataset = "mnist";
  r.model = "mlp";
  r.model_file = dir.file("m.safetensors");
  const std::vector<Figure> figures = write_figure_data(dir.file("figures"), {r});
  ASSERT_EQ(figures.size(), 7u);
  for (const Figure& f : figures) {
    EXPECT_TRUE(std::filesystem::exists(dir.file("figures/" + f.stem + ".csv"))) << f.stem;
    EXPECT_FALSE(f.title.empty());
    EXPECT_FALSE(f.rendered);
  }
  EXPECT_EQ(figures[5].stem, "histogram-mnist-mlp");
  EXPECT_EQ(figures[5].title.rfind("Fig. 7", 0), 0u);
}

}  // namespace
}  // namespace nuq
