// The fragment-order tensor-core kernel (cuda::QgemmKernel::Mma, kernels/qgemm_mma.cu) against
// dequantize-then-GEMM in double on the BF16-rounded X and levels, at m = 1, 4, 16 and 64 and odd
// shapes, 2, 4 and 8 bits, tables per matrix and per row; exact on small integers; the same result
// on every run (split-K adds its slices in order); and batches or widths it does not take fall back
// to the default kernels. Labelled `gpu`; skipped without a device of compute capability 8.0.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <tuple>

#include "nuq/backend.h"
#include "nuq/cuda.h"
#include "nuq/mma_fragment.h"
#include "nuq/qgemm.h"
#include "../qgemm_cases.h"
#include "bf16_reference.h"

namespace nuq {
namespace {

class QgemmMmaGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto devices = cuda::devices();
    if (devices.empty()) GTEST_SKIP() << cuda::unavailable_reason();
    if (devices.front().compute_major < 8) GTEST_SKIP() << "mma.sync with BF16 needs compute capability 8.0";
    mma_ = cuda::make_backend(0, 0, cuda::Precision::Fp32, cuda::QgemmKernel::Mma);
  }
  std::unique_ptr<Backend> mma_;
};

using test::bf16_reference;
using test::bound;
using test::Reference;

TEST_F(QgemmMmaGpu, MatchesTheBf16ReferenceAtEveryWidthAndBatch) {
  std::mt19937 rng(61);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (int bits : {2, 4, 8})
    for (std::size_t m : {1u, 4u, 16u, 17u, 33u, 64u})
      for (auto [n, k] : std::vector<std::pair<std::size_t, std::size_t>>{{8, 256}, {97, 131}, {130, 1000}, {40, 4099}, {300, 2048}}) {
        const bool per_row = (m + n + std::size_t(bits)) % 2 == 1;
        const QuantizedMatrix w = test::random_matrix(n, k, bits, rng, false, per_row);
        std::vector<float> x(m * k), bias(n), got(m * n, NAN);
        for (auto& v : x) v = value(rng);
        for (auto& v : bias) v = value(rng);
        mma_->qgemm(x.data(), m, w, bias.data(), got.data());
        const Reference ref = bf16_reference(x, m, w, bias);
        std::size_t nonzero = 0;
        for (std::size_t e = 0; e < got.size(); ++e) {
          ASSERT_LE(std::abs(double(got[e]) - ref.y[e]), bound(ref, bias, e, n, k))
              << bits << " bits" << (per_row ? " per row" : "") << ", m=" << m << " n=" << n << " k=" << k << " at (" << e / n
              << ", " << e % n << "): got " << got[e] << ", expected " << ref.y[e];
          nonzero += got[e] != 0.0f;
        }
        EXPECT_GT(double(nonzero), 0.9 * double(got.size()));
      }
}

// Small integers: every product and partial sum is exact, so any order gives the exact result.
TEST_F(QgemmMmaGpu, ExactOnSmallIntegersAndDeterministic) {
  std::mt19937 rng(67);
  std::uniform_int_distribution<int> small(-3, 3);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (int bits : {2, 4, 8})
    for (auto [m, n, k] : std::vector<std::tuple<std::size_t, std::size_t, std::size_t>>{
             {1, 67, 129}, {4, 16, 8192}, {16, 9, 20001}, {64, 67, 777}}) {
      const QuantizedMatrix w = test::random_matrix(n, k, bits, rng, true, n % 2 == 1);
      std::vector<float> x(m * k), got(m * n), again(m * n), expected(m * n);
      for (auto& v : x) v = float(small(rng));
      mma_->qgemm(x.data(), m, w, nullptr, got.data());
      qgemm_ref(x.data(), m, w, nullptr, expected.data());
      EXPECT_EQ(got, expected) << bits << " bits, m=" << m << " n=" << n << " k=" << k;
      for (auto& v : x) v = value(rng);  // rounding now: two runs must still agree bit for bit
      mma_->qgemm(x.data(), m, w, nullptr, got.data());
      mma_->qgemm(x.data(), m, w, nullptr, again.data());
      EXPECT_EQ(got, again) << bits << " bits, m=" << m << ": not deterministic";
    }
}

// Prepared once, many batches; above 64 rows and at 1 and 16 bits the default kernels answer
// (FP32: the CPU's result to rounding).
TEST_F(QgemmMmaGpu, PreparedWeightsAndFallbacks) {
  std::mt19937 rng(71);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (int bits : {1, 2, 16}) {
    const QuantizedMatrix w = test::random_matrix(70, 500, bits, rng, false);
    const auto prepared = mma_->prepare(w);
    for (std::size_t m : {3u, 64u, 65u, 200u}) {
      std::vector<float> x(m * 500), got(m * 70), expected(m * 70);
      for (auto& v : x) v = value(rng);
      mma_->qgemm(x.data(), m, *prepared, nullptr, got.data());
      const bool on_mma = bits == 2 && m <= 64;
      if (on_mma) {
        const Reference ref = bf16_reference(x, m, w, {});
        for (std::size_t e = 0; e < got.size(); ++e)
          ASSERT_LE(std::abs(double(got[e]) - ref.y[e]), bound(ref, {}, e, 70, 500)) << bits << " bits, m=" << m;
      } else {
        qgemm_ref(x.data(), m, w, nullptr, expected.data());
        for (std::size_t e = 0; e < got.size(); ++e)
          ASSERT_NEAR(got[e], expected[e], 1e-4 * std::sqrt(500.0)) << bits << " bits, m=" << m << " (default kernels)";
      }
    }
  }
}

// Small ragged shapes of every instantiation (1, 2 and 4 tiles of 16 rows; 2, 4, 8 bits; one and
// several slices), for compute-sanitizer's tools within scripts/gpu-check's time limits.
TEST_F(QgemmMmaGpu, SmallShapes) {
  std::mt19937 rng(73);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (int bits : {2, 4, 8})
    for (std::size_t m : {1u, 20u, 50u})
      for (auto [n, k] : std::vector<std::pair<std::size_t, std::size_t>>{{37, 130}, {3, 2100}}) {
        const QuantizedMatrix w = test::random_matrix(n, k, bits, rng, false, n == 37);
        std::vector<float> x(m * k), bias(n), got(m * n, NAN);
        for (auto& v : x) v = value(rng);
        for (auto& v : bias) v = value(rng);
        mma_->qgemm(x.data(), m, w, bias.data(), got.data());
        const Reference ref = bf16_reference(x, m, w, bias);
        for (std::size_t e = 0; e < got.size(); ++e)
          ASSERT_LE(std::abs(double(got[e]) - ref.y[e]), bound(ref, bias, e, n, k))
              << bits << " bits, m=" << m << " n=" << n << " k=" << k << " at " << e;
      }
}

}  // namespace
}  // namespace nuq
