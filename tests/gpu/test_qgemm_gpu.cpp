// The CUDA quantized GEMM against the CPU reference (dequantize, then sgemm): ragged shapes on
// both paths (M <= 16 and tiled), exact checks with small-integer inputs and identity inputs, a
// guard that outputs are non-zero, and the failing inputs printed when a check fails.
// Labelled `gpu`; skipped where no CUDA device is visible.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <sstream>

#include "nuq/backend.h"
#include "nuq/cuda.h"
#include "nuq/packed.h"
#include "nuq/qgemm.h"
#include "../qgemm_cases.h"

namespace nuq {
namespace {

class QgemmGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::devices().empty()) GTEST_SKIP() << cuda::unavailable_reason();
    gpu_ = cuda::make_backend(0);
  }
  std::unique_ptr<Backend> gpu_;
};

using test::random_matrix;

std::string dump(const std::vector<float>& v, std::size_t limit = 16) {
  std::ostringstream out;
  for (std::size_t i = 0; i < std::min(limit, v.size()); ++i) out << v[i] << ' ';
  return out.str();
}

TEST_F(QgemmGpu, MatchesTheCpuReferenceOnRaggedShapes) {
  std::mt19937 rng(21);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (int bits : {1, 2, 4, 8, 16})
    for (std::size_t m : {1u, 3u, 16u, 53u, 118u, 152u, 1024u})
      for (auto [n, k] : std::vector<std::pair<std::size_t, std::size_t>>{{10, 512}, {97, 131}, {512, 784}, {130, 33}}) {
        // Every other matrix of up to 8 bits with a table per row (per-channel normalisation).
        const bool per_row = bits <= 8 && (m + n) % 2 == 1;
        const QuantizedMatrix w = random_matrix(n, k, bits, rng, false, per_row);
        std::vector<float> x(m * k), bias(n), got(m * n, NAN), expected(m * n);
        for (auto& v : x) v = value(rng);
        for (auto& v : bias) v = value(rng);
        gpu_->qgemm(x.data(), m, w, bias.data(), got.data());
        qgemm_ref(x.data(), m, w, bias.data(), expected.data());
        double largest = 0.0, nonzero = 0.0;
        for (std::size_t i = 0; i < got.size(); ++i) {
          largest = std::max(largest, double(std::abs(got[i] - expected[i])));
          nonzero += got[i] != 0.0f;
        }
        ASSERT_LE(largest, 1e-4 * std::sqrt(double(k))) << bits << " bits" << (per_row ? " per row" : "") << ", m=" << m << " n=" << n << " k=" << k
                                                        << "\ngot      " << dump(got) << "\nexpected " << dump(expected)
                                                        << "\nx " << dump(x);
        EXPECT_GT(nonzero, 0.9 * double(got.size())) << "outputs are mostly zero";
      }
}

TEST_F(QgemmGpu, ExactOnSmallIntegersAndIdentity) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> small(-3, 3);
  for (int bits : {2, 4, 8, 16})
    for (std::size_t m : {1u, 16u, 53u}) {
      const std::size_t n = 67, k = 129;
      const QuantizedMatrix w = random_matrix(n, k, bits, rng, true, bits <= 8 && m != 16);
      std::vector<float> x(m * k), got(m * n), expected(m * n);
      for (auto& v : x) v = float(small(rng));
      gpu_->qgemm(x.data(), m, w, nullptr, got.data());
      qgemm_ref(x.data(), m, w, nullptr, expected.data());
      EXPECT_EQ(got, expected) << bits << " bits, m=" << m;  // integers below 2^24: exact in any order
    }
  // X = identity: Y = W^T's rows, i.e. the dequantized weights bit for bit.
  const std::size_t n = 40, k = 37;
  const QuantizedMatrix w = random_matrix(n, k, 2, rng, false, true);
  for (std::size_t m : {std::size_t{16}, k}) {
    std::vector<float> x(m * k, 0.0f), got(m * n);
    for (std::size_t i = 0; i < std::min(m, k); ++i) x[i * k + i] = 1.0f;
    gpu_->qgemm(x.data(), m, w, nullptr, got.data());
    const std::vector<float> dense = dequantize(w);
    for (std::size_t i = 0; i < std::min(m, k); ++i)
      for (std::size_t r = 0; r < n; ++r) ASSERT_EQ(got[i * n + r], dense[r * k + i]) << "m=" << m;
  }
}

}  // namespace
}  // namespace nuq
