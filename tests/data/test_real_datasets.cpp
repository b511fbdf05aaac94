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
#include "nuq/network.h"
#include "nuq/ptq.h"
#include "nuq/train.h"

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
  const std::string path = (std::filesystem::temp_directory_path() / "nuq-mnist-e2e.safetensors").string();
  save_quantized(path, q);
  const double packed = quantized_accuracy(load_quantized(path), test_set);
  std::filesystem::remove(path);
  Model dequantized = dequantize_model(q);
  EXPECT_DOUBLE_EQ(packed, accuracy(dequantized, test_set));
  EXPECT_GT(packed, fp32 - 2.0);
  EXPECT_GT(report.sqnr_ex_db, 7.5);  // the paper's 8.56 dB at 3Δmod, within a dB
  EXPECT_GT(report.within, 98.5);
}

}  // namespace
}  // namespace nuq
