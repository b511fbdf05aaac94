// Large batches through W decoded to BF16 bands and cuBLAS's BF16 GEMM (cuda::QgemmKernel::
// DequantCublas, kernels/qgemm_dequant.cu) against dequantize-then-GEMM in double on the
// BF16-rounded X and levels: every width, one table or a table per row, rows of odd length, of
// even length not a multiple of 8 and of a multiple of 8 (the decode's element, pair and 16-byte
// stores), a bias, several bands of rows; and
// batches of up to 16 left to the default kernels. Labelled `gpu`; skipped without a device.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <tuple>

#include "nuq/backend.h"
#include "nuq/cuda.h"
#include "nuq/qgemm.h"
#include "../qgemm_cases.h"
#include "bf16_reference.h"

namespace nuq {
namespace {

class QgemmDequantGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::devices().empty()) GTEST_SKIP() << cuda::unavailable_reason();
    backend_ = cuda::make_backend(0, 0, cuda::Precision::Fp32, cuda::QgemmKernel::DequantCublas);
  }
  std::unique_ptr<Backend> backend_;
};

std::vector<float> random_values(std::size_t count, std::mt19937& rng) {
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  std::vector<float> v(count);
  for (auto& e : v) e = value(rng);
  return v;
}

void expect_near_reference(Backend& backend, std::size_t m, const QuantizedMatrix& w, std::mt19937& rng,
                           const std::string& what) {
  const std::size_t n = w.codes.rows, k = w.codes.cols;
  const std::vector<float> x = random_values(m * k, rng), bias = random_values(n, rng);
  std::vector<float> got(m * n, NAN);
  backend.qgemm(x.data(), m, w, bias.data(), got.data());
  const test::Reference ref = test::bf16_reference(x, m, w, bias);
  for (std::size_t e = 0; e < got.size(); ++e)
    ASSERT_LE(std::abs(double(got[e]) - ref.y[e]), test::bound(ref, bias, e, n, k))
        << what << " at (" << e / n << ", " << e % n << "): got " << got[e] << ", expected " << ref.y[e];
}

TEST_F(QgemmDequantGpu, MatchesTheBf16ReferenceAtEveryWidth) {
  std::mt19937 rng(91);
  for (int bits : {1, 2, 4, 8, 16})
    for (auto [m, n, k] : std::vector<std::tuple<std::size_t, std::size_t, std::size_t>>{
             {17, 130, 1000}, {64, 37, 1001}, {300, 129, 96}, {33, 5, 4099}, {40, 70, 1002}}) {
      const bool per_row = bits <= 8 && (n + m) % 2 == 1;
      const QuantizedMatrix w = test::random_matrix(n, k, bits, rng, false, per_row);
      expect_near_reference(*backend_, m, w, rng,
                            std::to_string(bits) + " bits" + (per_row ? " per row" : "") + ", m=" + std::to_string(m) +
                                " n=" + std::to_string(n) + " k=" + std::to_string(k));
    }
}

// More rows than one band of BF16 holds (64 MiB: 8,064 rows of 4,100 columns): the bands' products
// land in their own rows of Y.
TEST_F(QgemmDequantGpu, SeveralBandsOfRows) {
  std::mt19937 rng(92);
  const QuantizedMatrix w = test::random_matrix(8300, 4100, 2, rng, false);
  expect_near_reference(*backend_, 20, w, rng, "two bands");
}

TEST_F(QgemmDequantGpu, LeavesSmallBatchesToTheDefaultKernels) {
  std::mt19937 rng(93);
  const auto fallback = cuda::make_backend(0, 0, cuda::Precision::Fp32, cuda::QgemmKernel::Default);
  const QuantizedMatrix w = test::random_matrix(70, 777, 2, rng, false);
  for (std::size_t m : {1u, 16u}) {
    const std::vector<float> x = random_values(m * 777, rng);
    std::vector<float> got(m * 70), expected(m * 70);
    backend_->qgemm(x.data(), m, w, nullptr, got.data());
    fallback->qgemm(x.data(), m, w, nullptr, expected.data());
    EXPECT_EQ(got, expected) << "m=" << m;
  }
}

}  // namespace
}  // namespace nuq
