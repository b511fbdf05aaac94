// The CUDA-core GEMV (cuda::QgemmKernel::Gemv, kernels/qgemm_gemv.cu) against its host model
// (tests/gemv_model.h), float for float: every width, batches of 1 to 4, one slice of k, a slice
// and a part, several slices, one table or a table per row, with a bias. Then: levels on a uniform
// grid (computed, not looked up) against a double reference; the same result on every run (split-K
// adds its slices in order); and the products it does not take (m > 4, short rows) left to the
// default kernels, whose results they are. Labelled `gpu`; skipped without a device.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "nuq/backend.h"
#include "nuq/cuda.h"
#include "../gemv_model.h"
#include "../qgemm_cases.h"

namespace nuq {
namespace {

class QgemmGemvGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::devices().empty()) GTEST_SKIP() << cuda::unavailable_reason();
    gemv_ = cuda::make_backend(0, 0, cuda::Precision::Fp32, cuda::QgemmKernel::Gemv);
    default_ = cuda::make_backend(0, 0, cuda::Precision::Fp32, cuda::QgemmKernel::Default);
  }
  std::unique_ptr<Backend> gemv_, default_;
};

std::vector<float> random_values(std::size_t count, std::mt19937& rng) {
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  std::vector<float> v(count);
  for (auto& e : v) e = value(rng);
  return v;
}

TEST_F(QgemmGemvGpu, IsItsHostModelFloatForFloat) {
  std::mt19937 rng(81);
  for (int bits : {1, 2, 4, 8, 16})
    for (std::size_t m = 1; m <= 4; ++m) {
      const std::size_t slice = std::size_t(gemv::slice_columns(bits));
      for (std::size_t k : {slice, slice + 37, 3 * slice - 5, std::size_t(8192 + 4)})
        for (std::size_t n : {1u, 31u, 300u}) {
          const bool per_row = (k + n + m) % 2 == 1;
          const QuantizedMatrix w = test::random_matrix(n, k, bits, rng, false, per_row);
          const std::vector<float> x = random_values(m * k, rng), bias = random_values(n, rng);
          std::vector<float> got(m * n, NAN);
          gemv_->qgemm(x.data(), m, w, bias.data(), got.data());
          const std::vector<float> expected = test::gemv_model(x.data(), m, w, bias.data(), false);
          for (std::size_t e = 0; e < got.size(); ++e)
            ASSERT_EQ(got[e], expected[e]) << bits << " bits" << (per_row ? " per row" : "") << ", m=" << m
                                           << " n=" << n << " k=" << k << " at (" << e / n << ", " << e % n << ")";
        }
    }
}

// Shapes small enough for compute-sanitizer (scripts/gpu-check): every width, one and four rows,
// one slice and part of a second, a table per row.
TEST_F(QgemmGemvGpu, SmallShapes) {
  std::mt19937 rng(85);
  for (int bits : {1, 2, 4, 8, 16})
    for (std::size_t m : {1u, 4u}) {
      const std::size_t n = 33, k = std::size_t(gemv::slice_columns(bits)) + 5;
      const QuantizedMatrix w = test::random_matrix(n, k, bits, rng, false, m == 4);
      const std::vector<float> x = random_values(m * k, rng), bias = random_values(n, rng);
      std::vector<float> got(m * n, NAN);
      gemv_->qgemm(x.data(), m, w, bias.data(), got.data());
      EXPECT_EQ(got, test::gemv_model(x.data(), m, w, bias.data(), false)) << bits << " bits, m=" << m;
    }
}

TEST_F(QgemmGemvGpu, ComputesLevelsOnAUniformGridWithinRounding) {
  std::mt19937 rng(82);
  for (int bits : {8, 16}) {
    const std::size_t n = 70, k = 4096 + 3, m = 3;
    QuantizedMatrix w = test::random_matrix(n, k, bits, rng, false);
    for (std::size_t c = 0; c < w.levels.size(); ++c) w.levels[c] = -1.0f + float(c) * (2.0f / float(w.levels.size()));
    const std::vector<float> x = random_values(m * k, rng);
    std::vector<float> got(m * n);
    gemv_->qgemm(x.data(), m, w, nullptr, got.data());
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t r = 0; r < n; ++r) {
        double sum = 0.0, magnitude = 0.0;
        for (std::size_t c = 0; c < k; ++c) {
          const double product = double(x[i * k + c]) * double(w.levels[w.codes.at(r, c)]);
          sum += product, magnitude += std::abs(product);
        }
        // Each level computed with one rounding, then the model's roundings (tests/test_gemv_layout.cpp).
        const double roundings = gemv::unit_codes(bits) + 5 + double(gemv::slices(k, bits)) + 2;
        ASSERT_NEAR(got[i * n + r], sum, 1.01 * roundings * 0x1p-24 * magnitude) << bits << " bits at (" << i << ", " << r << ")";
      }
  }
}

TEST_F(QgemmGemvGpu, GivesTheSameResultOnEveryRun) {
  std::mt19937 rng(83);
  const std::size_t m = 4, n = 4096, k = 8192;
  const QuantizedMatrix w = test::random_matrix(n, k, 2, rng, false, true);
  const std::vector<float> x = random_values(m * k, rng);
  const auto prepared = gemv_->prepare(w);
  std::vector<float> first(m * n), again(m * n);
  gemv_->qgemm(x.data(), m, *prepared, nullptr, first.data());
  for (int run = 0; run < 3; ++run) {
    gemv_->qgemm(x.data(), m, *prepared, nullptr, again.data());
    ASSERT_EQ(first, again) << "run " << run;
  }
}

TEST_F(QgemmGemvGpu, LeavesWhatItDoesNotTakeToTheDefaultKernels) {
  std::mt19937 rng(84);
  // Five rows of X; rows of 784 codes (under a warp step at 2 bits); 3-row X at 1 bit, 4000 columns.
  for (auto [m, k, bits] : std::vector<std::tuple<std::size_t, std::size_t, int>>{{5, 8192, 2}, {1, 784, 2}, {3, 4000, 1}}) {
    const std::size_t n = 65;
    const QuantizedMatrix w = test::random_matrix(n, k, bits, rng, false);
    const std::vector<float> x = random_values(m * k, rng), bias = random_values(n, rng);
    std::vector<float> got(m * n), expected(m * n);
    gemv_->qgemm(x.data(), m, w, bias.data(), got.data());
    default_->qgemm(x.data(), m, w, bias.data(), expected.data());
    EXPECT_EQ(got, expected) << "m=" << m << " k=" << k << " at " << bits << " bits";
  }
}

}  // namespace
}  // namespace nuq
