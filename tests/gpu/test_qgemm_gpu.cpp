// The CUDA quantized GEMM against the CPU reference (dequantize, then sgemm): ragged shapes on
// both paths (M <= 16 and tiled), exact checks with small-integer inputs and identity inputs, a
// guard that outputs are non-zero, and the failing inputs printed when a check fails.
// Labelled `gpu`; skipped where no CUDA device is visible.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <sstream>

#include "nuq/backend.h"
#include "nuq/design.h"
#include "nuq/error.h"
#include "nuq/network.h"
#include "nuq/ptq.h"
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

// Few outputs with long rows (a classifier layer): the small-batch path cuts each row across
// blocks (split-K) and adds the slices in a fixed order, so the result is exact on integers and the
// same on every run; ragged k leaves a partial 16-byte unit at the end of each row.
TEST_F(QgemmGpu, SplitKSlicesLongRowsOfFewOutputs) {
  std::mt19937 rng(31);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  std::uniform_int_distribution<int> small(-3, 3);
  for (int bits : {1, 2, 4, 8})
    for (std::size_t m : {1u, 5u, 16u})
      for (auto [n, k] : std::vector<std::pair<std::size_t, std::size_t>>{{3, 8192}, {40, 4099}, {10, 20001}}) {
        const std::string where = std::to_string(bits) + " bits, m=" + std::to_string(m) + " n=" + std::to_string(n) +
                                  " k=" + std::to_string(k);
        const QuantizedMatrix w = random_matrix(n, k, bits, rng, false, n == 40);
        std::vector<float> x(m * k), bias(n), got(m * n, NAN), again(m * n, NAN), expected(m * n);
        for (auto& v : x) v = value(rng);
        for (auto& v : bias) v = value(rng);
        gpu_->qgemm(x.data(), m, w, bias.data(), got.data());
        gpu_->qgemm(x.data(), m, w, bias.data(), again.data());
        qgemm_ref(x.data(), m, w, bias.data(), expected.data());
        EXPECT_EQ(got, again) << where << ": not deterministic";
        for (std::size_t i = 0; i < got.size(); ++i)
          ASSERT_NEAR(got[i], expected[i], 1e-4 * std::sqrt(double(k))) << where << " at " << i << "\nx " << dump(x);
        const QuantizedMatrix integers = random_matrix(n, k, bits, rng, true);
        for (auto& v : x) v = float(small(rng));
        gpu_->qgemm(x.data(), m, integers, nullptr, got.data());
        qgemm_ref(x.data(), m, integers, nullptr, expected.data());
        EXPECT_EQ(got, expected) << where << ", integers";
      }
}

// float -> BF16 -> float, rounding to nearest even (as __float2bfloat16 does for finite values).
float to_bf16(float v) {
  std::uint32_t bits;
  std::memcpy(&bits, &v, 4);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  bits &= 0xFFFF0000u;
  std::memcpy(&v, &bits, 4);
  return v;
}

// Y = X W^T + bias in double on the BF16-rounded X and levels: what the tensor cores compute,
// up to the order of their FP32 accumulation.
std::vector<double> bf16_reference(const std::vector<float>& x, std::size_t m, const QuantizedMatrix& w,
                                   const std::vector<float>& bias) {
  const std::size_t n = w.codes.rows, k = w.codes.cols;
  std::vector<double> y(m * n);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t r = 0; r < n; ++r) {
      double sum = bias[r];
      for (std::size_t c = 0; c < k; ++c) sum += double(to_bf16(x[i * k + c])) * double(to_bf16(w.row_levels(r)[w.codes.at(r, c)]));
      y[i * n + r] = sum;
    }
  return y;
}

// 8- and 16-bit codes whose table is a uniform grid: the kernels compute each level (offset +
// scale * code) instead of reading the table; small batches, tiles, and tensor cores.
TEST_F(QgemmGpu, GridCodesComputeTheirLevels) {
  std::mt19937 rng(37);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  const bool tensor_cores = cuda::devices().front().compute_major >= 8;
  const std::unique_ptr<Backend> tensor = cuda::make_backend(0, 0, cuda::Precision::Bf16);
  for (int bits : {8, 16}) {
    QuantizedMatrix w = random_matrix(97, 1031, bits, rng, false);
    const double top = double(w.levels.size() - 1);
    for (std::size_t c = 0; c < w.levels.size(); ++c) w.levels[c] = float(-0.3 + 0.6 * double(c) / top);
    ASSERT_TRUE(level_grid(w.levels.data(), w.levels.size()).has_value());
    for (std::size_t m : {1u, 5u, 16u, 53u}) {
      std::vector<float> x(m * 1031), bias(97), got(m * 97, NAN), expected(m * 97);
      for (auto& v : x) v = value(rng);
      for (auto& v : bias) v = value(rng);
      qgemm_ref(x.data(), m, w, bias.data(), expected.data());
      gpu_->qgemm(x.data(), m, w, bias.data(), got.data());
      for (std::size_t i = 0; i < got.size(); ++i)
        ASSERT_NEAR(got[i], expected[i], 1e-4 * std::sqrt(1031.0)) << bits << " bits, m=" << m << " at " << i;
      if (!tensor_cores || m <= 16) continue;
      // Against the BF16-rounded double reference: only the FP32 accumulation order may differ, so
      // a kernel that dropped part of k (errors of order 1 on outputs of about 3) cannot pass.
      tensor->qgemm(x.data(), m, w, bias.data(), got.data());
      const std::vector<double> bf16 = bf16_reference(x, m, w, bias);
      for (std::size_t i = 0; i < got.size(); ++i)
        ASSERT_NEAR(got[i], bf16[i], 1e-4 * std::sqrt(1031.0)) << "BF16, " << bits << " bits, m=" << m << " at " << i;
    }
  }
}

// Weights prepared once stay on the device for many batches and give what the per-call path gives;
// weights the CPU prepared are refused on the GPU, and the other way round.
TEST_F(QgemmGpu, PreparedWeightsServeManyBatches) {
  std::mt19937 rng(8);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  const QuantizedMatrix w = random_matrix(300, 1000, 2, rng, false);
  const auto prepared = gpu_->prepare(w);
  for (std::size_t m : {1u, 7u, 16u, 40u}) {
    std::vector<float> x(m * 1000), bias(300), got(m * 300, NAN), expected(m * 300);
    for (auto& v : x) v = value(rng);
    for (auto& v : bias) v = value(rng);
    gpu_->qgemm(x.data(), m, *prepared, bias.data(), got.data());
    gpu_->qgemm(x.data(), m, w, bias.data(), expected.data());
    EXPECT_EQ(got, expected) << "m=" << m;
  }
  std::vector<float> x(1000), y(300);
  EXPECT_THROW(gpu_->qgemm(x.data(), 1, *cpu_backend().prepare(w), nullptr, y.data()), Error);
  EXPECT_THROW(cpu_backend().qgemm(x.data(), 1, *prepared, nullptr, y.data()), Error);
}

// Every kernel multiplies a row's padding (code 0 past column k) by zeros of X: an infinite level
// would turn whole rows to NaN, so such a table is refused when uploaded, naming the level.
TEST_F(QgemmGpu, NonFiniteLevelsAreRefusedWhenTheWeightsAreUploaded) {
  std::mt19937 rng(9);
  for (float bad : {INFINITY, -INFINITY, NAN}) {
    QuantizedMatrix w = random_matrix(8, 100, 2, rng, false);
    w.levels[3] = bad;
    try {
      gpu_->prepare(w);
      ADD_FAILURE() << "a level " << bad << " was uploaded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("level 3 of the table"), std::string::npos) << e.what();
    }
    std::vector<float> x(100, 1.0f), y(8);
    EXPECT_THROW(gpu_->qgemm(x.data(), 1, w, nullptr, y.data()), Error);
  }
}

// The tensor-core path (Precision::Bf16, batches above 16) against a double-precision reference
// on the BF16-rounded inputs: only the FP32 accumulation order may differ.
TEST_F(QgemmGpu, TensorCorePathMatchesABf16Reference) {
  if (cuda::devices().front().compute_major < 8) GTEST_SKIP() << "BF16 tensor cores need compute capability 8.0";
  const std::unique_ptr<Backend> tensor = cuda::make_backend(0, 0, cuda::Precision::Bf16);
  std::mt19937 rng(41);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (int bits : {1, 2, 4, 8, 16})
    for (std::size_t m : {17u, 53u, 152u, 1024u})
      for (auto [n, k] : std::vector<std::pair<std::size_t, std::size_t>>{{97, 131}, {512, 784}, {130, 33}}) {
        const bool per_row = bits <= 8 && (m + k) % 2 == 1;
        const QuantizedMatrix w = random_matrix(n, k, bits, rng, false, per_row);
        std::vector<float> x(m * k), bias(n), got(m * n, NAN);
        for (auto& v : x) v = value(rng);
        for (auto& v : bias) v = value(rng);
        tensor->qgemm(x.data(), m, w, bias.data(), got.data());
        const std::vector<double> expected = bf16_reference(x, m, w, bias);
        double largest = 0.0, nonzero = 0.0;
        for (std::size_t i = 0; i < got.size(); ++i) {
          largest = std::max(largest, std::abs(double(got[i]) - expected[i]));
          nonzero += got[i] != 0.0f;
        }
        ASSERT_LE(largest, 1e-4 * std::sqrt(double(k))) << bits << " bits" << (per_row ? " per row" : "") << ", m=" << m
                                                        << " n=" << n << " k=" << k << "\ngot " << dump(got) << "\nx "
                                                        << dump(x);
        EXPECT_GT(nonzero, 0.9 * double(got.size()));
      }
}

// BF16 activations: the same arithmetic as FP32 activations already rounded to BF16, so the result
// is bit for bit that of the FP32 entry on the rounded X: the streaming path up to 16 rows (FP32
// levels), the tensor cores above (BF16 levels); ragged k takes the element-by-element loads.
TEST_F(QgemmGpu, Bf16ActivationsMatchTheirFp32Rounding) {
  if (cuda::devices().front().compute_major < 8) GTEST_SKIP() << "BF16 tensor cores need compute capability 8.0";
  const std::unique_ptr<Backend> tensor = cuda::make_backend(0, 0, cuda::Precision::Bf16);
  std::mt19937 rng(43);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (int bits : {1, 2, 4, 8})
    for (std::size_t m : {1u, 5u, 16u, 53u, 300u})
      for (auto [n, k] : std::vector<std::pair<std::size_t, std::size_t>>{{97, 131}, {256, 512}, {40, 4104}}) {
        const QuantizedMatrix w = random_matrix(n, k, bits, rng, false, bits == 4);
        std::vector<float> rounded(m * k), bias(n), got(m * n, NAN), expected(m * n, NAN);
        std::vector<std::uint16_t> x(m * k);
        for (std::size_t i = 0; i < x.size(); ++i) {
          rounded[i] = to_bf16(value(rng));
          std::uint32_t pattern;
          std::memcpy(&pattern, &rounded[i], 4);
          x[i] = std::uint16_t(pattern >> 16);
        }
        for (auto& v : bias) v = value(rng);
        cuda::qgemm_bf16_activations(x.data(), m, w, bias.data(), got.data());
        (m <= 16 ? gpu_ : tensor)->qgemm(rounded.data(), m, w, bias.data(), expected.data());
        ASSERT_EQ(got, expected) << bits << " bits, m=" << m << " n=" << n << " k=" << k << "\ngot      " << dump(got)
                                 << "\nexpected " << dump(expected);
        std::size_t nonzero = 0;
        for (float v : got) nonzero += v != 0.0f;
        EXPECT_GT(double(nonzero), 0.9 * double(got.size()));
      }
}

// A NaN activation (a diverged layer upstream, a PyTorch tensor) makes its row of Y NaN on every
// kernel, as on the CPU, and leaves the other rows as they were: rounding to BF16 must keep it a
// NaN (the rounding add alone turns 0x7FFFFFFF, the NaN CUDA's FP32 arithmetic makes, into -0).
TEST_F(QgemmGpu, ANanActivationGivesANanRowOnEveryKernel) {
  if (cuda::devices().front().compute_major < 8) GTEST_SKIP() << "BF16 tensor cores need compute capability 8.0";
  std::mt19937 rng(59);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  const std::vector<std::pair<std::string, std::unique_ptr<Backend>>> kernels = [] {
    std::vector<std::pair<std::string, std::unique_ptr<Backend>>> all;
    all.emplace_back("default fp32", cuda::make_backend(0));
    all.emplace_back("default bf16", cuda::make_backend(0, 0, cuda::Precision::Bf16));
    all.emplace_back("mma", cuda::make_backend(0, 0, cuda::Precision::Fp32, cuda::QgemmKernel::Mma));
    all.emplace_back("gemv", cuda::make_backend(0, 0, cuda::Precision::Fp32, cuda::QgemmKernel::Gemv));
    all.emplace_back("dequant+cublas", cuda::make_backend(0, 0, cuda::Precision::Fp32, cuda::QgemmKernel::DequantCublas));
    return all;
  }();
  std::uint32_t canonical_nan = 0x7FFFFFFFu;
  float nan;
  std::memcpy(&nan, &canonical_nan, 4);
  for (const auto& [name, backend] : kernels)
    for (std::size_t m : {1u, 3u, 40u, 100u}) {
      const std::size_t n = 70, k = 2048;  // rows of 512 bytes of 2-bit codes: the GEMV takes them
      const QuantizedMatrix w = random_matrix(n, k, 2, rng, false);
      std::vector<float> x(m * k), bias(n), got(m * n, 0.0f);
      for (auto& v : x) v = value(rng);
      for (auto& v : bias) v = value(rng);
      const std::size_t poisoned = m / 2;
      x[poisoned * k + 5] = nan;
      backend->qgemm(x.data(), m, w, bias.data(), got.data());
      for (std::size_t i = 0; i < m; ++i)
        for (std::size_t j = 0; j < n; ++j)
          ASSERT_EQ(std::isnan(got[i * n + j]), i == poisoned)
              << name << ", m=" << m << ": y(" << i << ", " << j << ") = " << got[i * n + j];
    }
}

// `count` 28 x 28 images of uniform pixels, labelled i mod 10 (the tests compare predictions).
io::Dataset random_images(std::size_t count, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
  io::Dataset data;
  data.count = count;
  data.rows = data.cols = 28;
  data.images.resize(count * 784);
  data.labels.resize(count);
  for (float& p : data.images) p = pixel(rng);
  for (std::size_t i = 0; i < count; ++i) data.labels[i] = std::uint8_t(i % 10);
  return data;
}

// Every kernel path on small ragged shapes, for compute-sanitizer's four tools within
// scripts/gpu-check's time limits: the streaming path (m <= 16) with and without split-K, the
// FP32 tiles, the BF16 tensor-core tiles, BF16 activations, per-row tables and computed 8-bit
// levels, and the device-resident MLP in one fused kernel (batches up to 4) and layer by layer.
TEST_F(QgemmGpu, SmallShapesOfEveryPath) {
  std::mt19937 rng(53);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  const bool tensor_cores = cuda::devices().front().compute_major >= 8;
  const std::unique_ptr<Backend> tensor = cuda::make_backend(0, 0, cuda::Precision::Bf16);
  for (int bits : {2, 8})
    for (std::size_t m : {1u, 5u, 17u, 40u})
      for (auto [n, k] : std::vector<std::pair<std::size_t, std::size_t>>{{37, 130}, {3, 4099}}) {
        const std::string where = std::to_string(bits) + " bits, m=" + std::to_string(m) + " n=" + std::to_string(n);
        QuantizedMatrix w = random_matrix(n, k, bits, rng, false, n == 37 && bits == 2);
        if (bits == 8)  // a uniform grid: the kernels compute each level
          for (std::size_t c = 0; c < w.levels.size(); ++c) w.levels[c] = float(-0.5 + double(c) / 255.0);
        std::vector<float> x(m * k), bias(n), got(m * n, NAN), expected(m * n);
        for (auto& v : x) v = value(rng);
        for (auto& v : bias) v = value(rng);
        gpu_->qgemm(x.data(), m, w, bias.data(), got.data());
        qgemm_ref(x.data(), m, w, bias.data(), expected.data());
        for (std::size_t i = 0; i < got.size(); ++i)
          ASSERT_NEAR(got[i], expected[i], 1e-4 * std::sqrt(double(k))) << where << " at " << i;
        if (!tensor_cores) continue;
        if (m > 16) {  // batches up to 16 take the FP32 streaming kernel on a BF16 backend too (checked above)
          tensor->qgemm(x.data(), m, w, bias.data(), got.data());
          const std::vector<double> bf16 = bf16_reference(x, m, w, bias);
          for (std::size_t i = 0; i < got.size(); ++i)
            ASSERT_NEAR(got[i], bf16[i], 1e-4 * std::sqrt(double(k))) << "BF16, " << where << " at " << i;
        }
        // BF16 activations: bit for bit the FP32 entry on the rounded X (as Bf16ActivationsMatch...).
        std::vector<std::uint16_t> x_bf16(x.size());
        std::vector<float> rounded(x.size());
        for (std::size_t i = 0; i < x.size(); ++i) {
          rounded[i] = to_bf16(x[i]);
          std::uint32_t pattern;
          std::memcpy(&pattern, &rounded[i], 4);
          x_bf16[i] = std::uint16_t(pattern >> 16);
        }
        cuda::qgemm_bf16_activations(x_bf16.data(), m, w, bias.data(), got.data());
        (m <= 16 ? gpu_ : tensor)->qgemm(rounded.data(), m, w, bias.data(), expected.data());
        ASSERT_EQ(got, expected) << "BF16 activations, " << where;
      }
  const io::Dataset data = random_images(9, 10);
  const Model model = make_model(Architecture::Mlp, 6);
  const QuantizedModel q = quantize_model(model, design(DesignSpec{}).codebook);
  Model skeleton = dequantize_model(q);
  Network cpu_q(skeleton, &q);
  const std::vector<std::uint8_t> cpu = predict(cpu_q, data);
  for (std::size_t batch : {std::size_t{1}, std::size_t{4}, std::size_t{9}}) {
    const cuda::DeviceInference two_bit = cuda::infer_mlp(model, &q, data, batch);
    std::size_t same = 0;
    for (std::size_t i = 0; i < data.count; ++i) same += two_bit.predictions[i] == cpu[i];
    EXPECT_GE(same, data.count - 1) << "batch " << batch;  // one close call may fall either way
  }
}

// The FP32 baseline on cuBLAS (TF32 off) against OpenBLAS on ragged shapes.
TEST_F(QgemmGpu, CublasGemmMatchesTheCpu) {
  std::mt19937 rng(31);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (std::size_t m : {1u, 3u, 53u, 1024u})
    for (auto [n, k] : std::vector<std::pair<std::size_t, std::size_t>>{{10, 512}, {97, 131}, {512, 784}}) {
      std::vector<float> x(m * k), w(n * k), bias(n), got(m * n, NAN), expected(m * n);
      for (auto* v : {&x, &w, &bias})
        for (float& e : *v) e = value(rng);
      gpu_->gemm(x.data(), m, w.data(), n, k, bias.data(), got.data());
      cpu_backend().gemm(x.data(), m, w.data(), n, k, bias.data(), expected.data());
      double largest = 0.0;
      for (std::size_t i = 0; i < got.size(); ++i) largest = std::max(largest, double(std::abs(got[i] - expected[i])));
      ASSERT_LE(largest, 1e-5 * std::sqrt(double(k))) << "m=" << m << " n=" << n << " k=" << k << "\ngot      "
                                                      << dump(got) << "\nexpected " << dump(expected);
    }
}

// The MLP and the CNN, FP32 and two-bit, on the GPU against the CPU: the same class for at least
// 99.9 % of 2000 images (ties between logits may fall either way), accuracy within 0.05 points.
TEST_F(QgemmGpu, NetworksPredictLikeTheCpu) {
  const io::Dataset data = random_images(2000, 8);
  DesignSpec spec;
  spec.method = Method::Msptq;
  for (Architecture architecture : {Architecture::Mlp, Architecture::Cnn}) {
    Model model = make_model(architecture, 12);
    Network cpu_fp32(model), gpu_fp32(model, nullptr, gpu_.get());
    const std::vector<std::uint8_t> a = predict(cpu_fp32, data), b = predict(gpu_fp32, data);
    const QuantizedModel q = quantize_model(model, design(spec).codebook);
    Model skeleton = dequantize_model(q);
    Network cpu_q(skeleton, &q), gpu_q(skeleton, &q, gpu_.get());
    const std::vector<std::uint8_t> c = predict(cpu_q, data), d = predict(gpu_q, data);
    std::size_t same_fp32 = 0, same_q = 0;
    for (std::size_t i = 0; i < data.count; ++i) same_fp32 += a[i] == b[i], same_q += c[i] == d[i];
    EXPECT_GE(double(same_fp32), 0.999 * double(data.count)) << to_string(architecture) << " FP32";
    EXPECT_GE(double(same_q), 0.999 * double(data.count)) << to_string(architecture) << " two-bit";
    EXPECT_NEAR(accuracy(a, data), accuracy(b, data), 0.05);
    EXPECT_NEAR(accuracy(c, data), accuracy(d, data), 0.05);
  }
}

// The device-resident MLP (#5's network comparison) against the CPU network, FP32 and two-bit, in
// large batches (tiled qgemm, cuBLAS) and one image at a time (two-bit: the fused one-kernel MLP).
TEST_F(QgemmGpu, DeviceMlpPredictsLikeTheCpu) {
  const io::Dataset data = random_images(3000, 9);
  Model model = make_model(Architecture::Mlp, 5);
  DesignSpec spec;
  const QuantizedModel q = quantize_model(model, design(spec).codebook);
  Model skeleton = dequantize_model(q);
  Network cpu_q(skeleton, &q);
  const std::vector<std::uint8_t> cpu_fp32 = predict(model, data), cpu_two_bit = predict(cpu_q, data);
  const auto agree = [&](const std::vector<std::uint8_t>& a, const std::vector<std::uint8_t>& b, std::size_t n) {
    std::size_t same = 0;
    for (std::size_t i = 0; i < n; ++i) same += a[i] == b[i];
    return double(same) / double(n);
  };
  for (std::size_t batch : {std::size_t{1000}, std::size_t{1}}) {
    const std::size_t n = batch == 1 ? 200 : data.count;  // one image at a time: the first 200
    io::Dataset part = data;
    part.count = n;
    part.images.resize(n * 784);
    part.labels.resize(n);
    const cuda::DeviceInference fp32 = cuda::infer_mlp(model, nullptr, part, batch);
    const cuda::DeviceInference two_bit = cuda::infer_mlp(model, &q, part, batch);
    EXPECT_GE(agree(fp32.predictions, cpu_fp32, n), 0.999) << "FP32, batch " << batch;
    EXPECT_GE(agree(two_bit.predictions, cpu_two_bit, n), 0.999) << "two-bit, batch " << batch;
    EXPECT_GT(fp32.milliseconds, 0.0);
    EXPECT_GT(two_bit.milliseconds, 0.0);
  }
  // Batches shared by a cluster of blocks (compute capability 9.0, where the cluster kernel runs;
  // below, each batch falls back to one block and the check would prove nothing): every output is
  // computed as the one block computes it, so the predictions are the same.
  for (std::size_t batch : {std::size_t{1}, std::size_t{3}, std::size_t{4}}) {
    if (cuda::devices().front().compute_major < 9) break;
    io::Dataset part = data;
    part.count = 200;
    part.images.resize(200 * 784);
    part.labels.resize(200);
    const cuda::DeviceInference one_block = cuda::infer_mlp(model, &q, part, batch);
    const cuda::DeviceInference cluster =
        cuda::infer_mlp(model, &q, part, batch, 0, cuda::Precision::Fp32, cuda::MlpLayout::ClusterPerBatch);
    EXPECT_EQ(cluster.predictions, one_block.predictions) << "a cluster per batch of " << batch;
  }
  // BF16 tensor cores in the quantized layers: rounding may move a few close calls.
  if (cuda::devices().front().compute_major >= 8) {
    const cuda::DeviceInference tensor = cuda::infer_mlp(model, &q, data, 1000, 0, cuda::Precision::Bf16);
    EXPECT_GE(agree(tensor.predictions, cpu_two_bit, data.count), 0.98);
  }
  EXPECT_THROW(cuda::infer_mlp(make_model(Architecture::Cnn, 1), nullptr, data, 100), Error);
}

}  // namespace
}  // namespace nuq
