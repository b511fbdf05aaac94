#include "nuq/figures.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>

#include "nuq/design.h"
#include "nuq/error.h"
#include "nuq/io/atomic_file.h"
#include "nuq/laplace.h"
#include "nuq/mismatch.h"
#include "nuq/paper.h"
#include "nuq/power_of_two.h"
#include "nuq/ptq.h"

namespace nuq {
namespace {

std::string format(double v) {
  char text[40];
  std::snprintf(text, sizeof text, "%.9g", v);
  return text;
}

// A CSV cell: quoted when it holds a comma or a quote (region names like "±min(|w_min|, |w_max|)").
std::string csv_cell(const std::string& text) {
  if (text.find_first_of(",\"\n") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

Codebook optimal(Method method) {
  DesignSpec spec;
  spec.method = method;
  return design(spec).codebook;
}

}  // namespace

void CsvTable::add(const std::vector<double>& values) {
  std::vector<std::string> cells;
  for (double v : values) cells.push_back(format(v));
  add(cells);
}

void CsvTable::add(const std::vector<std::string>& cells) {
  NUQ_ASSERT(cells.size() == header.size(), "CSV row of ", cells.size(), " cells under a header of ", header.size());
  rows.push_back(cells);
}

std::string to_csv(const CsvTable& table) {
  std::ostringstream out;
  auto line = [&](const std::vector<std::string>& cells) {
    for (std::size_t i = 0; i < cells.size(); ++i) out << (i ? "," : "") << csv_cell(cells[i]);
    out << '\n';
  };
  line(table.header);
  for (const auto& row : table.rows) line(row);
  return out.str();
}

CsvTable transfer_characteristic_data(double from, double to, std::size_t points) {
  NUQ_REQUIRE(points >= 2 && to > from, "transfer characteristic: need from < to and at least two points");
  const Codebook sptq = optimal(Method::Sptq), msptq = optimal(Method::Msptq);
  CsvTable t{{"x", "sptq", "msptq"}, {}};
  for (std::size_t i = 0; i < points; ++i) {
    const double x = from + (to - from) * double(i) / double(points - 1);
    t.add(std::vector<double>{x, sptq.quantize(x), msptq.quantize(x)});
  }
  return t;
}

CsvTable convergence_data() {
  CsvTable t{{"design", "delta0", "iteration", "delta"}, {}};
  auto add_trace = [&](const std::string& name, double delta0, const FixedPointTrace& trace) {
    for (std::size_t i = 0; i < trace.sequence.size(); ++i)
      t.add({name, format(delta0), std::to_string(i), format(trace.sequence[i])});
  };
  for (const paper::Table2Column& column : paper::table2()) add_trace("sptq", column.delta0, sptq_iterate(column.delta0));
  const double sptq_delta = sptq_iterate(1.0).value();
  add_trace("msptq", sptq_delta, msptq_iterate(sptq_delta));
  return t;
}

CsvTable distortion_sweep_data(double from, double to, double step) {
  DesignSpec sptq, msptq;
  sptq.method = Method::Sptq;
  msptq.method = Method::Msptq;
  const std::vector<SweepPoint> a = sweep(sptq, from, to, step), b = sweep(msptq, from, to, step);
  CsvTable t{{"delta", "sptq", "msptq"}, {}};
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i)
    t.add(std::vector<double>{a[i].parameter, a[i].distortion.total(), b[i].distortion.total()});
  return t;
}

CsvTable distortion_optima_data() {
  CsvTable t{{"design", "delta", "distortion"}, {}};
  for (Method method : {Method::Sptq, Method::Msptq}) {
    DesignSpec spec;
    spec.method = method;
    const DesignResult r = design(spec);
    t.add({to_string(method), format(r.codebook.xmax() / 3.0), format(r.distortion.total())});
  }
  return t;
}

CsvTable sqnr_vs_xmax_data(double from, double to, double step) {
  NUQ_REQUIRE(step > 0.0 && to > from && from > 0.0, "SQNR against x_max: need 0 < from < to and step > 0");
  const std::vector<Method> methods = {Method::Uniform, Method::Sptq, Method::Msptq, Method::Ternary, Method::MuLaw};
  DesignSpec ceiling;
  ceiling.method = Method::LloydMax;
  const double lloyd_max = design(ceiling).sqnr_db;
  CsvTable t{{"xmax"}, {}};
  for (Method m : methods) t.header.push_back(to_string(m));
  t.header.push_back("lloyd-max");
  const auto count = static_cast<std::size_t>(std::floor((to - from) / step + 1e-9)) + 1;
  for (std::size_t i = 0; i < count; ++i) {
    const double xmax = from + step * double(i);
    std::vector<double> row{xmax};
    for (Method m : methods) {
      DesignSpec spec;
      spec.method = m;
      row.push_back(laplace_sqnr_db(codebook_at_xmax(spec, xmax)));
    }
    row.push_back(lloyd_max);
    t.add(row);
  }
  return t;
}

CsvTable weight_histogram_data(const Model& model, double bin_width) {
  NUQ_REQUIRE(bin_width > 0.0, "histogram: the bin width must be positive");
  const WeightStats stats = model_stats(model);
  NUQ_REQUIRE(stats.count > 0 && stats.stddev() > 0.0, "histogram: the model's parameters have no spread");
  const double w_min = (stats.min - stats.mean) / stats.stddev(), w_max = (stats.max - stats.mean) / stats.stddev();
  const double lo = std::floor(w_min / bin_width) * bin_width, hi = std::ceil(w_max / bin_width) * bin_width;
  // Bounded: normalised extremes of a finite model are at most sqrt(count) standard deviations out.
  const auto bins = std::max<std::size_t>(1, static_cast<std::size_t>(std::llround((hi - lo) / bin_width)));
  std::vector<std::size_t> counts(bins, 0);
  for (const Parameter& p : model.parameters)
    for (float w : p.values) {
      const double x = (w - stats.mean) / stats.stddev();
      const auto k = static_cast<std::size_t>(std::clamp((x - lo) / bin_width, 0.0, double(bins - 1)));
      ++counts[k];
    }
  CsvTable t{{"left", "right", "count", "density"}, {}};
  for (std::size_t k = 0; k < bins; ++k)
    t.add(std::vector<double>{lo + bin_width * double(k), lo + bin_width * double(k + 1), double(counts[k]),
                              double(counts[k]) / (double(stats.count) * bin_width)});
  return t;
}

CsvTable support_regions_data(const ExperimentResult& result) {
  CsvTable t{{"label", "xmax"}, {}};
  std::map<std::string, double> seen;  // one line per region, whichever table it came from
  for (const CaseResult& c : result.cases)
    if (c.region.find("α") == std::string::npos && seen.emplace(c.region, c.ptq.xmax).second)
      t.add({c.region, format(c.ptq.xmax)});
  return t;
}

CsvTable mismatch_data(int min_bits, int max_bits, double from_db, double to_db, double step_db) {
  CsvTable t{{"mismatch_db"}, {}};
  std::vector<std::vector<MismatchPoint>> curves;
  for (int bits = min_bits; bits <= max_bits; ++bits) {
    t.header.push_back("r" + std::to_string(bits));
    t.header.push_back("r" + std::to_string(bits) + "_approx");
    curves.push_back(mismatch_curve(mismatch_design(bits), from_db, to_db, step_db));
  }
  for (std::size_t i = 0; !curves.empty() && i < curves.front().size(); ++i) {
    std::vector<double> row{curves.front()[i].mismatch_db};
    for (const auto& curve : curves) row.insert(row.end(), {curve[i].sqnr_db, curve[i].approx_sqnr_db});
    t.add(row);
  }
  return t;
}

CsvTable accuracy_vs_xmax_data(const std::vector<ExperimentResult>& results) {
  CsvTable t{{"network", "table", "series", "case", "xmax", "accuracy", "paper_xmax", "paper_accuracy", "fp32_accuracy"},
             {}};
  std::vector<std::string> shown;
  for (const ExperimentResult& r : results) {
    const std::string name = display_name(r);
    if (std::find(shown.begin(), shown.end(), name) != shown.end()) continue;  // first seed only
    shown.push_back(name);
    auto add = [&](const CaseResult& c, const std::string& series) {
      // Cases 1 and 2 sit at the paper's own extremes there (published for the MNIST MLP only).
      const Support& support = c.published.support;
      std::string paper_xmax = format(c.ptq.xmax);
      if (depends_on_extremes(support))
        paper_xmax = r.dataset == "mnist" && r.model == "mlp" ? format(resolve_xmax(support, paper::kMnistMlpRange)) : "";
      t.add({name, c.table, series, c.case_label, format(c.ptq.xmax), format(c.accuracy), paper_xmax,
             c.published.accuracy && !paper_xmax.empty() ? format(*c.published.accuracy) : "", format(r.fp32_accuracy)});
    };
    for (const CaseResult& c : r.cases) add(c, to_string(c.method));
    for (const CaseResult& c : r.controls)
      for (Normalisation n : {Normalisation::PerTensor, Normalisation::PerChannel})
        if (c.control == to_string(n) + " normalisation") add(c, to_string(c.method) + ", " + to_string(n));
  }
  return t;
}

CsvTable mismatch_runs_data(const MismatchExperiment& e) {
  CsvTable t;
  t.header = {"normalisation", "bits", "mismatch_db", "sqnr_th_db", "sqnr_ex_db", "within", "accuracy", "loss", "chosen"};
  for (const MismatchRun& r : e.runs) {
    bool chosen = false;
    for (const RuleChoice& c : e.choices) chosen = chosen || (c.normalisation == r.normalisation && c.bits == r.bits);
    t.add({to_string(r.normalisation), std::to_string(r.bits), format(r.mismatch_db), format(r.ptq.sqnr_th_db),
           format(r.ptq.sqnr_ex_db), format(r.ptq.within), format(r.accuracy), format(r.loss), chosen ? "1" : "0"});
  }
  return t;
}

CsvTable noise_probe_data(const MismatchExperiment& e) {
  CsvTable t;
  t.header = {"sqnr_db", "worst_loss", "mean_loss", "max_loss", "floor"};
  for (const NoiseProbePoint& p : e.probe)
    t.add({p.sqnr_db, p.worst_loss, p.mean_loss, e.options.max_loss,
           e.floor_found && p.sqnr_db == e.sqnr_floor_db ? 1.0 : 0.0});
  return t;
}

std::vector<Figure> write_figure_data(const std::string& dir, const std::vector<ExperimentResult>& results,
                                      const MismatchExperiment* mismatch) {
  std::filesystem::create_directories(dir);
  auto write = [&](const std::string& file, const CsvTable& table) {
    io::write_atomically((std::filesystem::path(dir) / file).string(), [&](std::ostream& out) { out << to_csv(table); });
  };
  std::vector<Figure> figures;
  write("fig2-transfer.csv", transfer_characteristic_data());
  figures.push_back({"fig2-transfer", "Fig. 2: transfer characteristics of SPTQ (and MSPTQ)",
                     "Q(x) of SPTQ at x_max = 3Δ, as the paper draws it, and of MSPTQ at 3Δmod beside it (not in "
                     "the paper's figure); the dotted lines are the thresholds, where Q jumps."});
  write("fig5-convergence.csv", convergence_data());
  figures.push_back({"fig5-convergence", "Fig. 5: convergence of Δ in Algorithm 1",
                     "Iterates of rule (18) from the five Δ(0) of Table 2, as the paper draws them, and of rule (28) "
                     "from SPTQ's Δ (not in the paper's figure); every start of rule (18) reaches the same Δ."});
  write("fig6-distortion.csv", distortion_sweep_data());
  write("fig6-distortion-optima.csv", distortion_optima_data());
  figures.push_back({"fig6-distortion", "Fig. 6: distortion against Δ",
                     "Exact D of SPTQ and MSPTQ on the unit Laplacian as Δ varies; the markers are the iterative "
                     "optima of Algorithm 1, at the minimum of each curve."});
  write("sqnr-vs-xmax.csv", sqnr_vs_xmax_data());
  figures.push_back({"sqnr-vs-xmax", "SQNR_th against x_max, every two-bit design",
                     "Beyond the paper: how each design's SQNR on the unit Laplacian depends on its support; the "
                     "dashed line is the four-level Lloyd-Max optimum no scalar quantizer can exceed."});
  write("mismatch-uniform.csv", mismatch_data());
  figures.push_back({"mismatch-uniform", "Variance mismatch, uniform quantizers at 9-16 bits",
                     "Companion paper: SQNR of the uniform quantizer designed for σ_ref = 1 (iterative x_max) when "
                     "the data has σ; solid exact, dotted the high-rate approximation. Below σ_ref each bit adds "
                     "about 5-6 dB; above it overload takes over whatever R is."});
  std::vector<std::string> histograms;
  for (const ExperimentResult& r : results) {
    const std::string stem = "histogram-" + r.dataset + "-" + r.model;
    if (std::find(histograms.begin(), histograms.end(), stem) != histograms.end() || r.model_file.empty() ||
        !std::filesystem::exists(r.model_file))
      continue;
    histograms.push_back(stem);
    write(stem + ".csv", weight_histogram_data(load_model(r.model_file)));
    write(stem + "-regions.csv", support_regions_data(r));
    const bool paper_figure = (r.dataset == "mnist" && r.model == "mlp") || (r.dataset == "fashion" && r.model == "cnn");
    const std::string number = r.model == "mlp" && r.dataset == "mnist" ? "Fig. 7: " : paper_figure ? "Fig. 8: " : "";
    figures.push_back({stem, number + "normalised weights of the " + display_name(r),
                       "Histogram of all parameters after global normalisation (log scale) with the unit Laplacian "
                       "pdf; vertical lines mark ±x_max of the support regions of the tables."});
  }
  if (!results.empty()) {
    write("accuracy-vs-xmax.csv", accuracy_vs_xmax_data(results));
    figures.push_back({"accuracy-vs-xmax", "Accuracy against x_max",
                       "Beyond the paper: test accuracy of every published case on our networks (first seed) "
                       "against its x_max, one line per design (dashed per-tensor, dotted per-channel: the control runs on "
                       "the CNN, each tensor or each output channel normalised with its own statistics); crosses are the "
                       "paper's accuracies at the paper's x_max; the dashed line is our FP32 accuracy."});
  }
  if (mismatch) {
    write("itc2021-rate.csv", mismatch_runs_data(*mismatch));
    write("itc2021-rate-probe.csv", noise_probe_data(*mismatch));
    figures.push_back({"itc2021-rate", "Bit rate, SQNR and accuracy loss (companion paper)",
                       "Left: SQNR_th (lines) and SQNR_ex (markers) of the unit-variance uniform design against R, "
                       "without normalisation (the weights' σ_w meets σ_ref = 1) and with it. Middle: accuracy loss "
                       "against R; the dashed line is the bound, circles the R the rule picked. Right: the noise "
                       "probe that sets the rule's SQNR floor (worst and mean loss over the draws)."});
  }
  return figures;
}

}  // namespace nuq
