// The CUDA backend against the CPU reference: codes bit-identical, statistics (of a whole tensor
// and of each row) and error totals within 1e-6 relative, on Laplacian, Gaussian and uniform weights of sizes 0 .. 10^8, one chunk
// or many (streamed), per-tensor and per-row codebooks; NaN as a clear error; dequantization.
// Labelled `gpu`; skipped where no CUDA device is visible, never passed without running.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "../backend_cases.h"
#include "nuq/backend.h"
#include "nuq/cuda.h"
#include "nuq/error.h"
#include "nuq/packed.h"
#include "nuq/quantize_table.h"

namespace nuq {
namespace {

using test::Law;

class BackendGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::devices().empty()) GTEST_SKIP() << cuda::unavailable_reason();
  }
};

void expect_relative(double gpu, double cpu, double tolerance, const std::string& what) {
  EXPECT_NEAR(gpu, cpu, tolerance * std::max(std::abs(cpu), 1e-300)) << what;
}

// One size, one law, one codebook: stats and the fused pass against quantize_ref.
void compare(Backend& gpu, const std::vector<float>& w, std::size_t rows, std::size_t cols,
             const test::NamedCodebook& c, bool per_row, const std::string& what) {
  const WeightStats ref = stats_ref(w.data(), w.size(), "w");
  const WeightStats got = gpu.stats(w.data(), w.size(), "w", NonFinite::Reject);
  ASSERT_EQ(got.count, ref.count) << what;
  if (ref.count > 0) {
    expect_relative(got.mean, ref.mean, 1e-6, what + " mean");
    expect_relative(got.stddev(), ref.stddev(), 1e-6, what + " stddev");
    EXPECT_EQ(got.min, ref.min) << what;
    EXPECT_EQ(got.max, ref.max) << what;
  }
  std::vector<Affine> groups(per_row ? rows : 1, Affine{ref.mean, ref.count ? ref.stddev() : 1.0});
  for (std::size_t g = 0; g < groups.size(); ++g) groups[g].scale *= 1.0 + 0.05 * double(g % 7);
  const QuantizeTable table = make_quantize_table(c.codebook, c.storage_bits, groups);
  const std::size_t bytes = rows * packed_row_bytes(cols, c.storage_bits);
  std::vector<std::uint8_t> expected(bytes), packed(bytes, 0x5A);
  const QuantizeTotals r = quantize_ref(w.data(), rows, cols, table, expected.data());
  const QuantizeTotals g = gpu.quantize(w.data(), rows, cols, table, packed.data());
  std::size_t first_difference = bytes;
  for (std::size_t i = 0; i < bytes && first_difference == bytes; ++i)
    if (packed[i] != expected[i]) first_difference = i;
  ASSERT_EQ(first_difference, bytes) << what << ": codes differ from byte " << first_difference;
  expect_relative(g.signal, r.signal, 1e-6, what + " signal");
  expect_relative(g.noise, r.noise, 1e-6, what + " noise");
  EXPECT_EQ(g.max_error, r.max_error) << what;
  EXPECT_EQ(g.inside, r.inside) << what;
  if (!w.empty()) {
    EXPECT_GT(g.noise, 0.0) << what;  // a kernel that accumulates nothing fails
  }
  std::vector<float> back(w.size(), -1.0f), back_ref(w.size());
  gpu.dequantize(packed.data(), rows, cols, table, back.data());
  dequantize_ref(expected.data(), rows, cols, table, back_ref.data());
  EXPECT_EQ(back, back_ref) << what;
}

TEST_F(BackendGpu, BitIdenticalCodesAndStatisticsOnEverySize) {
  const auto gpu = cuda::make_backend(0);
  const auto codebooks = test::codebooks_of_every_width();
  for (Law law : {Law::Laplace, Law::Gauss, Law::Uniform})
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{31}, std::size_t{32}, std::size_t{33},
                          (std::size_t{1} << 20) + 7}) {
      const std::vector<float> w = test::draw(law, n, 0.02, 0.07, std::uint32_t(n + 1));
      for (const auto& c : codebooks)
        compare(*gpu, w, 1, n, c, false, test::to_string(law) + " n=" + std::to_string(n) + " " + c.name);
    }
}

// Weights of tiny sigma (down to subnormals): their squares leave FP32's normal range, so the
// kernels sum those items in double, as the CPU does (at sigma 1e-24 the FP32 sums once gave a
// quarter of the spread and a signal and noise of 0). Both layouts: one row, and padded rows.
TEST_F(BackendGpu, TinyWeightsGiveTheCpusStatisticsAndTotals) {
  const auto gpu = cuda::make_backend(0);
  const auto codebooks = test::codebooks_of_every_width();
  for (double sigma : {1e-21, 1e-24, 1e-30, 1e-40})
    for (auto [rows, cols] : std::vector<std::pair<std::size_t, std::size_t>>{{1, 100003}, {37, 1001}}) {
      const std::vector<float> w = test::draw(Law::Laplace, rows * cols, 0.0, sigma, std::uint32_t(cols));
      for (const auto& c : codebooks)
        compare(*gpu, w, rows, cols, c, false,
                "sigma " + std::to_string(sigma) + " " + std::to_string(rows) + "x" + std::to_string(cols) + " " + c.name);
    }
}

TEST_F(BackendGpu, HundredMillionWeights) {
  const auto gpu = cuda::make_backend(0);
  const std::size_t rows = 10000, cols = 10000;
  const std::vector<float> w = test::draw(Law::Laplace, rows * cols, -0.001, 0.05, 99);
  for (int index : {1, 3})  // two bits (linear search), four bits (grid-free linear)
    compare(*gpu, w, rows, cols, test::codebooks_of_every_width()[index], false, "1e8");
}

TEST_F(BackendGpu, StreamedInManyChunksAndPerRowGroups) {
  // 64 KiB chunks: a 300 x 5000 matrix takes many row pieces; a 3 x 100000 one splits its rows.
  const auto gpu = cuda::make_backend(0, 64 << 10);
  const auto codebooks = test::codebooks_of_every_width();
  for (const auto& [rows, cols] : std::vector<std::pair<std::size_t, std::size_t>>{{300, 5000}, {3, 100000}, {53, 17}})
    for (bool per_row : {false, true}) {
      const std::vector<float> w = test::draw(Law::Gauss, rows * cols, 0.0, 1.0, std::uint32_t(rows));
      for (const auto& c : codebooks)
        compare(*gpu, w, rows, cols, c, per_row,
                std::to_string(rows) + "x" + std::to_string(cols) + (per_row ? " per-row " : " ") + c.name);
    }
}

// Every path of statistics, quantization and dequantization (one chunk and streamed chunks, rows
// cut into pieces, per-row groups, every code width) on shapes small enough for compute-sanitizer's
// four tools within scripts/gpu-check's time limits.
TEST_F(BackendGpu, SmallShapesOfEveryPath) {
  const auto whole = cuda::make_backend(0);
  const auto streamed = cuda::make_backend(0, 4 << 10);  // 4 KiB chunks: a 3 x 3000 row is cut
  for (Backend* gpu : {whole.get(), streamed.get()})
    for (const auto& [rows, cols] : std::vector<std::pair<std::size_t, std::size_t>>{{53, 17}, {3, 3000}})
      for (bool per_row : {false, true}) {
        const std::vector<float> w = test::draw(Law::Laplace, rows * cols, 0.0, 1.0, std::uint32_t(cols));
        for (const auto& c : test::codebooks_of_every_width())
          compare(*gpu, w, rows, cols, c, per_row,
                  std::to_string(rows) + "x" + std::to_string(cols) + (per_row ? " per-row " : " ") + c.name);
        std::vector<WeightStats> row(rows);  // the per-row statistics kernel, for the sanitizers too
        gpu->row_stats(w.data(), WeightType::F32, rows, cols, "w", NonFinite::Reject, row.data());
        const WeightStats last = stats_ref(w.data() + (rows - 1) * cols, cols, "w");
        EXPECT_EQ(row[rows - 1].count, last.count);
        expect_relative(row[rows - 1].mean, last.mean, 1e-9, "row statistics");
      }
}

// Per-row tables on the flat word layout (rows of whole items: 4096 and 32 columns) and on the
// unit layout (1000 columns at one bit: 32-weight items straddle rows), every width up to 8 bits.
TEST_F(BackendGpu, PerRowTablesOnBothLayouts) {
  const auto gpu = cuda::make_backend(0);
  for (const auto& [rows, cols] : std::vector<std::pair<std::size_t, std::size_t>>{{64, 4096}, {333, 32}, {20, 1000}}) {
    const std::vector<float> w = test::draw(Law::Laplace, rows * cols, 0.01, 0.5, std::uint32_t(rows * cols));
    for (const auto& c : test::codebooks_of_every_width())
      if (c.storage_bits <= 8)
        compare(*gpu, w, rows, cols, c, true, std::to_string(rows) + "x" + std::to_string(cols) + " per-row " + c.name);
  }
}

// The backend keeps its last one-group table on the device (TableCache): a table that differs in
// one level, one threshold or one bound of the support region, after the one it keeps, must give
// that table's codes, totals and values, not the kept one's; so must a per-row table between two.
TEST_F(BackendGpu, ATableChangedInOneValueIsUploadedAgain) {
  const auto gpu = cuda::make_backend(0);
  const std::size_t rows = 40, cols = 999;
  const std::vector<float> w = test::draw(Law::Laplace, rows * cols, 0.0, 1.0, 5);
  const auto& c = test::codebooks_of_every_width()[1];  // two bits
  const QuantizeTable a = make_quantize_table(c.codebook, c.storage_bits, {Affine{0.0, 1.0}});
  QuantizeTable level = a, threshold = a, bound = a;
  level.levels[1] *= 1.5f;
  threshold.thresholds[0] *= 0.5f;
  bound.params[0].inside_hi *= 0.5f;
  const QuantizeTable per_row = make_quantize_table(c.codebook, c.storage_bits, std::vector<Affine>(rows, {0.0, 2.0}));
  const std::vector<std::pair<const QuantizeTable*, const char*>> calls = {
      {&a, "a"}, {&level, "a level changed"}, {&a, "a again"}, {&threshold, "a threshold changed"},
      {&bound, "a bound changed"}, {&per_row, "per-row"}, {&a, "a after per-row"}};
  for (const auto& [table, what] : calls) {
    const std::size_t bytes = rows * packed_row_bytes(cols, table->bits);
    std::vector<std::uint8_t> expected(bytes), packed(bytes);
    const QuantizeTotals r = quantize_ref(w.data(), rows, cols, *table, expected.data());
    const QuantizeTotals g = gpu->quantize(w.data(), rows, cols, *table, packed.data());
    EXPECT_EQ(packed, expected) << what;
    expect_relative(g.noise, r.noise, 1e-6, what);
    EXPECT_EQ(g.inside, r.inside) << what;
    std::vector<float> back(w.size()), back_ref(w.size());
    gpu->dequantize(expected.data(), rows, cols, *table, back.data());
    dequantize_ref(expected.data(), rows, cols, *table, back_ref.data());
    EXPECT_EQ(back, back_ref) << what;
  }
}

// Blocks' partials are joined in a fixed order: the same weights give the same bits every run.
TEST_F(BackendGpu, StatisticsAndTotalsRepeatBitForBit) {
  const auto gpu = cuda::make_backend(0);
  const std::vector<float> w = test::draw(Law::Laplace, (std::size_t{1} << 22) + 7, 0.003, 0.05, 8);
  const WeightStats s1 = gpu->stats(w.data(), w.size(), "w", NonFinite::Reject);
  const WeightStats s2 = gpu->stats(w.data(), w.size(), "w", NonFinite::Reject);
  EXPECT_EQ(s1.mean, s2.mean);
  EXPECT_EQ(s1.m2, s2.m2);
  for (const auto& c : test::codebooks_of_every_width()) {
    const QuantizeTable table = make_quantize_table(c.codebook, c.storage_bits, {Affine{s1.mean, s1.stddev()}});
    std::vector<std::uint8_t> packed(packed_row_bytes(w.size(), c.storage_bits));
    const QuantizeTotals a = gpu->quantize(w.data(), 1, w.size(), table, packed.data());
    const QuantizeTotals b = gpu->quantize(w.data(), 1, w.size(), table, packed.data());
    EXPECT_EQ(a.signal, b.signal) << c.name;
    EXPECT_EQ(a.noise, b.noise) << c.name;
    EXPECT_EQ(a.max_error, b.max_error) << c.name;
    EXPECT_EQ(a.inside, b.inside) << c.name;
  }
}

// Statistics of weights far from zero against their spread: the device's FP32 sums are of
// deviations within 16-weight items, so the mean and deviation keep the double reference's digits.
TEST_F(BackendGpu, StatisticsOfAnOffsetTensor) {
  const auto gpu = cuda::make_backend(0);
  const std::vector<float> w = test::draw(Law::Gauss, (std::size_t{1} << 20) + 3, 1000.0, 0.01, 21);
  const WeightStats ref = stats_ref(w.data(), w.size(), "w");
  const WeightStats got = gpu->stats(w.data(), w.size(), "w", NonFinite::Reject);
  expect_relative(got.mean, ref.mean, 1e-12, "offset mean");
  expect_relative(got.stddev(), ref.stddev(), 1e-9, "offset stddev");
}

TEST_F(BackendGpu, NonFiniteIsAClearErrorOrSaturatesLikeTheCpu) {
  const auto gpu = cuda::make_backend(0, 64 << 10);
  std::vector<float> w = test::draw(Law::Laplace, 200000, 0.0, 1.0, 4);
  w[150001] = NAN;
  w[199999] = -INFINITY;
  try {
    gpu->stats(w.data(), w.size(), "fc1.weight", NonFinite::Reject);
    FAIL() << "NaN accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fc1.weight: element 150001 is nan"), std::string::npos) << e.what();
  }
  const WeightStats s = gpu->stats(w.data(), w.size(), "w", NonFinite::Skip);
  EXPECT_EQ(s.nonfinite, 2u);
  EXPECT_EQ(s.count, w.size() - 2);
  const QuantizeTable table = make_quantize_table(test::codebooks_of_every_width()[1].codebook, 2, {Affine{0.0, 1.0}});
  std::vector<std::uint8_t> expected(packed_row_bytes(w.size(), 2)), packed(expected.size());
  const QuantizeTotals r = quantize_ref(w.data(), 1, w.size(), table, expected.data());
  const QuantizeTotals g = gpu->quantize(w.data(), 1, w.size(), table, packed.data());
  EXPECT_EQ(packed, expected);
  EXPECT_EQ(g.nonfinite, 2u);
  EXPECT_EQ(g.first_nonfinite, r.first_nonfinite);
}

TEST_F(BackendGpu, RowStatisticsAreEachRowsOwn) {
  // Groups of 128, rows of odd lengths (every alignment of a row's start), one long row, rows of
  // one weight; 64 KiB chunks, so a batch of rows is streamed in many chunks of whole rows.
  const auto gpu = cuda::make_backend(0, 64 << 10);
  for (const auto& [rows, cols] : std::vector<std::pair<std::size_t, std::size_t>>{
           {4096, 128}, {301, 127}, {40, 3001}, {1, 100000}, {77, 1}}) {
    const std::vector<float> w = test::draw(Law::Laplace, rows * cols, 0.3, 0.02, std::uint32_t(rows + cols));
    std::vector<WeightStats> got(rows);
    gpu->row_stats(w.data(), WeightType::F32, rows, cols, "w", NonFinite::Reject, got.data());
    for (std::size_t r = 0; r < rows; ++r) {
      const std::string what = std::to_string(rows) + "x" + std::to_string(cols) + " row " + std::to_string(r);
      const WeightStats ref = stats_ref(w.data() + r * cols, cols, "w");
      ASSERT_EQ(got[r].count, ref.count) << what;
      expect_relative(got[r].mean, ref.mean, 1e-9, what + " mean");
      EXPECT_NEAR(got[r].stddev(), ref.stddev(), 1e-7 * ref.stddev() + 1e-12) << what;
      EXPECT_EQ(got[r].min, ref.min) << what;
      EXPECT_EQ(got[r].max, ref.max) << what;
    }
  }
  std::vector<float> w = test::draw(Law::Gauss, 64 * 128, 0.0, 1.0, 5);
  w[40 * 128 + 7] = NAN;
  std::vector<WeightStats> out(64);
  try {
    gpu->row_stats(w.data(), WeightType::F32, 64, 128, "layer.weight", NonFinite::Reject, out.data());
    FAIL() << "NaN accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer.weight row 40: element 7 is nan"), std::string::npos) << e.what();
  }
  gpu->row_stats(w.data(), WeightType::F32, 64, 128, "w", NonFinite::Skip, out.data());
  EXPECT_EQ(out[40].nonfinite, 1u);
  EXPECT_EQ(out[40].count, 127u);
  EXPECT_EQ(out[41].count, 128u);
}

TEST_F(BackendGpu, ChoosingTheDevice) {
  EXPECT_NE(make_backend(Device::Auto)->name().find("cuda:0"), std::string::npos);
  EXPECT_NE(make_backend(Device::Cuda)->name().find("cuda:0"), std::string::npos);
  EXPECT_EQ(make_backend(Device::Cpu)->name(), "cpu");
  EXPECT_THROW(cuda::make_backend(1000), Error);
  EXPECT_THROW(cuda::make_backend(0, 3), Error);  // a chunk that holds no float would divide by zero
}

}  // namespace
}  // namespace nuq
