// The real datasets, as scripts/fetch-data leaves them (labelled `data`; skipped when absent).
#include <gtest/gtest.h>

#include <array>
#include <filesystem>

#include "nuq/io/dataset.h"

namespace nuq::io {
namespace {

// $NUQ_DATA when set, else the repository's data/ folder, where scripts/fetch-data puts them.
std::string dir_of(const std::string& name) {
  const std::string root = data_root();
  return dataset_dir(root == "data" ? std::string(NUQ_SOURCE_DIR) + "/data" : root, name);
}

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
