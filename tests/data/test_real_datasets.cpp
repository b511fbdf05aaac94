// The real datasets, as scripts/fetch-data leaves them (labelled `data`; skipped when absent).
#include <gtest/gtest.h>

#include <array>
#include <filesystem>

#include "nuq/io/dataset.h"

namespace nuq::io {

// $NUQ_DATA when set, else the repository's data/ folder, where scripts/fetch-data puts them.
std::string dir_of(const std::string& name) {
  const std::string root = data_root();
  return dataset_dir(root == "data" ? std::string(NUQ_SOURCE_DIR) + "/data" : root, name);
}

namespace {

class RealDataset : public ::testing::TestWithParam<const char*> {};

TEST_P(RealDataset, HasTheOriginalSplits) {
  const std::string dir = dir_of(GetParam());
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << dir << " is absent; run scripts/fetch-data";
  const Dataset train = load_split(dir, "train"), test = load_split(dir, "t10k");
  EXPECT_EQ(train.count, 60000u);
  EXPECT_EQ(test.count, 10000u);
  EXPECT_EQ(train.rows, 28u);
  EXPECT_EQ(train.cols, 28u);
  std::array<int, kClasses> per_class{};
  for (auto label : test.labels) ++per_class[label];
  for (int c = 0; c < kClasses; ++c) EXPECT_GT(per_class[c], 800) << "class " << c;
  if (std::string(GetParam()) == "fashion")
    for (int c = 0; c < kClasses; ++c) EXPECT_EQ(per_class[c], 1000);  // balanced by design
  else
    EXPECT_EQ(train.labels[0], 5);  // the famous first MNIST digit
}

INSTANTIATE_TEST_SUITE_P(Both, RealDataset, ::testing::Values("mnist", "fashion"));

}  // namespace
}  // namespace nuq::io

// End to end on real MNIST, shortened to one epoch: train, quantize (MSPTQ at 3Δmod), write,
// read back and evaluate from the packed codes.
#include "nuq/design.h"
#include "nuq/laplace.h"
#include "nuq/mismatch.h"
#include "nuq/mismatch_experiment.h"
#include "nuq/network.h"
#include "nuq/ptq.h"
#include "nuq/train.h"
#include "../temp_dir.h"

namespace nuq {
namespace {

TEST(MnistEndToEnd, OneEpochTrainsAndTwoBitsKeepTheAccuracy) {
  const std::string dir = io::dir_of("mnist");
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << dir << " is absent; run scripts/fetch-data";
  const io::Dataset train_set = io::load_split(dir, "train"), test_set = io::load_split(dir, "t10k");
  Model model = make_model(Architecture::Mlp, 1);
  TrainConfig config;
  config.epochs = 1;
  train(model, train_set, config);
  const double fp32 = accuracy(model, test_set);
  EXPECT_GT(fp32, 96.0);
  DesignSpec spec;
  spec.method = Method::Msptq;
  PtqReport report;
  const QuantizedModel q = quantize_model(model, design(spec).codebook, &report);
  test::TempDir temp;  // a folder of this run's own: another test run may be on this machine
  const std::string path = temp.file("q.safetensors");
  save_quantized(path, q);
  const double packed = quantized_accuracy(load_quantized(path), test_set);
  Model dequantized = dequantize_model(q);
  EXPECT_DOUBLE_EQ(packed, accuracy(dequantized, test_set));
  EXPECT_GT(packed, fp32 - 2.0);
  EXPECT_GT(report.sqnr_ex_db, 7.5);  // the paper's 8.56 dB at 3Δmod, within a dB
  EXPECT_GT(report.within, 98.5);
}

// The companion paper's experiment on real MNIST, shortened (one epoch, R = 8..16, a coarse
// probe): what the report's table and the abstract's claims rest on.
TEST(MnistEndToEnd, MismatchExperimentFollowsTheTheory) {
  const std::string dir = io::dir_of("mnist");
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << dir << " is absent; run scripts/fetch-data";
  const test::TempDir temp;  // (another test run may be on this machine)
  const std::filesystem::path out = temp.path();
  ExperimentOptions options;
  options.data_root = std::filesystem::path(dir).parent_path().string();
  options.out_dir = out.string();
  options.train.epochs = 1;
  MismatchExperimentOptions mo;
  mo.min_bits = 8;
  mo.probe_from_db = 10.0;
  mo.probe_to_db = 40.0;
  mo.probe_step_db = 10.0;
  mo.probe_draws = 2;
  const MismatchExperiment e = run_mismatch_experiment("mnist", "mlp", options, mo);
  ASSERT_EQ(e.runs.size(), 18u);
  const Model model = load_model(e.model_file);
  const WeightStats stats = model_stats(model);
  for (const MismatchRun& r : e.runs) {
    SCOPED_TRACE("R = " + std::to_string(r.bits) + ", " + to_string(r.normalisation));
    const bool none = r.normalisation == Normalisation::None;
    EXPECT_NEAR(r.mismatch_db, none ? 20.0 * std::log10(stats.stddev()) : 0.0, 1e-9);
    EXPECT_NEAR(r.ptq.sqnr_th_db, laplace_sqnr_db(mismatch_design(r.bits), none ? stats.stddev() : 1.0), 1e-9);
    if (r.ptq.within >= 100.0) {
      EXPECT_NEAR(r.ptq.sqnr_ex_db, r.ptq.sqnr_th_db, 1.0);
    }
    EXPECT_NEAR(r.loss, e.fp32_accuracy - r.accuracy, 1e-12);
    // The file holds what was measured: 9-16 bits as U16 codes with an affine map.
    const QuantizedModel q = load_quantized(r.quantized_file);
    EXPECT_EQ(q.tensors.begin()->second.matrix.codes.bits, r.bits <= 8 ? 8 : 16);
    if (r.bits >= 14) {
      EXPECT_LE(std::abs(r.loss), 0.05);  // 44 dB or more: at most a few images flip
    }
  }
  // Each bit adds about 5-6 dB in the granular regime (docs/variance-mismatch.md).
  for (std::size_t i = 1; i < 9; ++i) EXPECT_NEAR(e.runs[i].ptq.sqnr_th_db - e.runs[i - 1].ptq.sqnr_th_db, 5.5, 0.8);
  ASSERT_EQ(e.probe.size(), 4u);
  EXPECT_GT(e.probe.front().mean_loss, e.probe.back().mean_loss);  // 10 dB of noise costs accuracy, 40 dB does not
  ASSERT_EQ(e.choices.size(), 2u);
  if (e.floor_found)
    for (const RuleChoice& c : e.choices) {
      ASSERT_GT(c.bits, 0);
      EXPECT_GE(c.predicted_sqnr_db, e.sqnr_floor_db);
      const double at_db = c.normalisation == Normalisation::None ? e.runs[0].mismatch_db : 0.0;
      if (c.bits > mo.min_bits) {  // the smallest such R: one bit less misses the floor
        EXPECT_LT(worst_case(c.bits - 1, at_db, at_db).worst_sqnr_db, e.sqnr_floor_db);
      }
    }
}

}  // namespace
}  // namespace nuq
