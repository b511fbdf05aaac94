// Timings for bench/: the device-resident weight pipeline, the quantized GEMM, their peers (the
// device copy, cuBLAS), each the median of `runs` event-timed runs, each run from a cold L2.
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <random>
#include <vector>

#include "cuda_check.cuh"
#include "device_buffer.cuh"
#include "device_scope.cuh"
#include "nuq/cuda.h"
#include "nuq/error.h"
#include "nuq/packed.h"
#include "nuq/quantize_table.h"
#include "cublas_check.cuh"
#include "nuq/mma_fragment.h"
#include "qgemm.cuh"
#include "qgemm_dequant.cuh"
#include "qgemm_gemv.cuh"
#include "qgemm_mma.cuh"
#include "quantize.cuh"
#include "weight_stats.cuh"

namespace nuq::cuda {
namespace {

// Every timed run starts with a cold L2: the flush writes twice the L2's size, which evicts what
// the previous run (or the upload) left there. nuq and every peer are timed so, so that small
// packed weights are never read from the cache while their larger FP32 peers stream from memory.
class L2Flush {
 public:
  explicit L2Flush(int device) {
    int l2 = 0;
    NUQ_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
    scratch_ = DeviceBuffer<std::uint8_t>(std::max<std::size_t>(2 * std::size_t(l2), 1));
  }
  void operator()(int run) {
    NUQ_CUDA_CHECK(cudaMemsetAsync(scratch_.data(), run & 0xFF, scratch_.size()));
  }

 private:
  DeviceBuffer<std::uint8_t> scratch_{0};
};

// The median of `runs` timed runs (CUDA events around each, the L2 flushed before each and out of
// the timing), after one untimed warm-up (module load, cuBLAS heuristics, first touch).
class EventTimer {
 public:
  explicit EventTimer(int device) : flush_(device) {
    // Freed pool memory stays with the pool across the synchronised runs, as it does in a loop of
    // calls: kernels that take scratch from the stream's pool (split-K slices, DequantCublas's
    // bands) are not charged the driver's remapping on every run.
    cudaMemPool_t pool = nullptr;
    NUQ_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    std::uint64_t keep = UINT64_MAX;
    NUQ_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    NUQ_CUDA_CHECK(cudaEventCreate(&start_));
    NUQ_CUDA_CHECK(cudaEventCreate(&stop_));
  }
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;
  ~EventTimer() {
    NUQ_CUDA_CHECK_NOTHROW(cudaEventDestroy(start_));
    NUQ_CUDA_CHECK_NOTHROW(cudaEventDestroy(stop_));
  }
  template <typename Run>
  double median_ms(int runs, const Run& run) {
    run();
    std::vector<double> times;
    for (int i = 0; i < runs; ++i) {
      flush_(i);
      NUQ_CUDA_CHECK(cudaEventRecord(start_));
      run();
      NUQ_CUDA_CHECK(cudaEventRecord(stop_));
      NUQ_CUDA_CHECK(cudaEventSynchronize(stop_));
      float ms = 0.0f;
      NUQ_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
      times.push_back(ms);
    }
    std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
    return times[times.size() / 2];
  }

 private:
  L2Flush flush_;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

std::vector<float> laplacian(std::size_t count, std::uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::exponential_distribution<float> e(std::sqrt(2.0f) / 0.05f);
  std::vector<float> v(count);
  for (float& x : v) x = (rng() & 1 ? 1.0f : -1.0f) * e(rng);
  return v;
}

// Uniform in [-1, 1), from a cheap generator: the dense peers' operands (up to a billion values).
std::vector<float> uniform(std::size_t count, std::uint64_t seed) {
  std::vector<float> v(count);
  std::uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  for (float& x : v) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;  // xorshift64
    x = float(state >> 40) * 0x1p-23f - 1.0f;
  }
  return v;
}

}  // namespace

double time_copy(std::size_t bytes, int runs, int device) {
  NUQ_REQUIRE(bytes > 0 && runs > 0, "time_copy: nothing to time");
  const DeviceScope on_device(device);
  DeviceBuffer<std::uint8_t> from(bytes), to(bytes);
  NUQ_CUDA_CHECK(cudaMemset(from.data(), 0x5A, bytes));
  EventTimer timer(device);
  return timer.median_ms(runs, [&] {
    NUQ_CUDA_CHECK(cudaMemcpyAsync(to.data(), from.data(), bytes, cudaMemcpyDeviceToDevice));
  });
}

PipelineTimes time_pipeline(std::size_t count, const Codebook& codebook, int bits, int runs, int device) {
  NUQ_REQUIRE(count > 0 && runs > 0, "time_pipeline: nothing to time");
  const DeviceScope on_device(device);
  int sms = 0;
  NUQ_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  // One random block uploaded, repeated over the input on the device (uploading 4 GiB from the
  // host would dominate the benchmark's own run time).
  const std::vector<float> host = laplacian(std::min<std::size_t>(count, std::size_t{1} << 24), 1);
  DeviceBuffer<float> input(count);
  NUQ_CUDA_CHECK(cudaMemcpy(input.data(), host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice));
  for (std::size_t at = host.size(); at < count; at += host.size())
    NUQ_CUDA_CHECK(cudaMemcpy(input.data() + at, input.data(), std::min(host.size(), count - at) * sizeof(float),
                              cudaMemcpyDeviceToDevice));
  DeviceBuffer<std::uint8_t> packed(packed_row_bytes(count, bits));
  DeviceBuffer<std::uint8_t> scratch(std::max(stats_scratch_bytes(count, sms), quantize_scratch_bytes(packed.size(), sms)));
  DeviceBuffer<StatsPartial> stats(1);
  DeviceBuffer<QuantizeTotals> totals(1);
  // The table's device buffers are sized once (one group: the sizes depend on the bits alone), so
  // that no allocation sits in the timed region; each run uploads its table into them.
  const QuantizeTable shape = make_quantize_table(codebook, bits, {Affine{0.0, 1.0}});
  DeviceBuffer<float> thresholds(shape.thresholds.size()), levels(shape.levels.size());
  DeviceBuffer<GroupParams> params(shape.params.size());
  const DeviceTable view{thresholds.data(), levels.data(), params.data(), shape.levels_count, false, bits};
  StatsPartial* host_stats = nullptr;
  NUQ_CUDA_CHECK(cudaMallocHost(&host_stats, sizeof(StatsPartial)));
  const Piece piece{0, 1, 0, count, count};
  PipelineTimes times;
  try {
    EventTimer timer(device);
    // What a user of the backend pays per tensor: statistics on the device, their few bytes read
    // back, the table built on the host from them and uploaded (a few hundred bytes), the pass.
    times.pipeline_ms = timer.median_ms(runs, [&] {
      launch_stats(input.data(), count, 0, stats.data(), scratch.data(), scratch.size(), sms, nullptr);
      NUQ_CUDA_CHECK(cudaMemcpy(host_stats, stats.data(), sizeof(StatsPartial), cudaMemcpyDeviceToHost));
      const double sd = host_stats->count ? std::sqrt(host_stats->m2 / double(host_stats->count)) : 1.0;
      const QuantizeTable table = make_quantize_table(codebook, bits, {Affine{host_stats->mean, sd > 0 ? sd : 1.0}});
      NUQ_REQUIRE(table.thresholds.size() == thresholds.size() && table.levels.size() == levels.size(),
                  "time_pipeline: the table changed size");
      NUQ_CUDA_CHECK(cudaMemcpyAsync(thresholds.data(), table.thresholds.data(), table.thresholds.size() * sizeof(float),
                                     cudaMemcpyHostToDevice));
      NUQ_CUDA_CHECK(cudaMemcpyAsync(levels.data(), table.levels.data(), table.levels.size() * sizeof(float),
                                     cudaMemcpyHostToDevice));
      NUQ_CUDA_CHECK(cudaMemcpyAsync(params.data(), table.params.data(), table.params.size() * sizeof(GroupParams),
                                     cudaMemcpyHostToDevice));
      launch_quantize(input.data(), piece, view, packed.data(), totals.data(), scratch.data(), scratch.size(), sms,
                      nullptr);
    });
  } catch (...) {
    cudaFreeHost(host_stats);
    throw;
  }
  NUQ_CUDA_CHECK(cudaFreeHost(host_stats));
  times.copy_ms = time_copy(count * sizeof(float), runs, device);
  return times;
}

// Random bytes (any byte is a row of valid codes), the same every run.
static std::vector<std::uint8_t> random_bytes(std::size_t count) {
  std::vector<std::uint8_t> bytes(count);
  std::mt19937 rng(3);
  for (auto& b : bytes) b = std::uint8_t(rng());
  return bytes;
}

// 2^bits distinct levels in [-0.5, 0.5).
static std::vector<float> ramp_levels(int bits) {
  std::vector<float> levels(std::size_t{1} << bits);
  for (std::size_t i = 0; i < levels.size(); ++i) levels[i] = float(i) / float(levels.size()) - 0.5f;
  return levels;
}

static std::vector<__nv_bfloat16> to_bf16(const std::vector<float>& values) {
  std::vector<__nv_bfloat16> out(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) out[i] = __float2bfloat16(values[i]);
  return out;
}

// The mma kernel on random codes already in fragment order (any bytes are codes), X in BF16.
static double time_qgemm_mma(std::size_t m, std::size_t n, std::size_t k, int bits, int runs, int device) {
  NUQ_REQUIRE(mma_kernel_bits(bits) && m >= 1 && m <= kMmaMaxBatch && k > 0, "time_qgemm: the mma kernel takes m = 1..",
              kMmaMaxBatch, " and 2, 4 or 8 bits, not m = ", m, " at ", bits, " bits");
  const DeviceFragmentCodes shape{nullptr, mma::row_blocks(n), mma::k_units(k, bits)};
  const DeviceBuffer<std::uint8_t> codes(random_bytes(shape.row_blocks * shape.k_units * mma::kUnitBytes));
  const DeviceBuffer<float> levels(ramp_levels(bits));
  const DeviceBuffer<__nv_bfloat16> x(to_bf16(laplacian(m * k, 2)));
  DeviceBuffer<float> y(m * n);
  // Row-major codes are not read by the mma kernel; the view carries the shape and the levels.
  const DeviceQuantizedMatrix w{nullptr, levels.data(), n, k, bits, 0, device_row_stride(k, bits)};
  const DeviceFragmentCodes fragments{codes.data(), shape.row_blocks, shape.k_units};
  EventTimer timer(device);
  return timer.median_ms(runs, [&] { launch_qgemm_mma(x.data(), m, w, fragments, nullptr, false, y.data(), nullptr); });
}

double time_qgemm(std::size_t m, std::size_t n, std::size_t k, int bits, int runs, int device, Precision precision,
                  QgemmKernel kernel) {
  const DeviceScope on_device(device);
  if (kernel == QgemmKernel::Mma) return time_qgemm_mma(m, n, k, bits, runs, device);
  NUQ_REQUIRE(kernel != QgemmKernel::Gemv || gemv::takes(m, k, bits), "time_qgemm: the GEMV takes m = 1..",
              gemv::kMaxBatch, " and k of at least ", gemv::slice_columns(bits), " at ", bits, " bits, not m = ", m,
              ", k = ", k);
  const DeviceBuffer<std::uint8_t> codes(random_bytes(n * device_row_stride(k, bits)));  // rows as upload_weights lays them out
  const DeviceBuffer<float> levels(ramp_levels(bits));
  // Precision::Bf16 takes X in BF16, as the cuBLAS BF16 peer does: at large batches X's bytes
  // outweigh the packed weights', so both sides read the same activations.
  const std::vector<float> values = laplacian(m * k, 2);
  const bool bf16_x = precision == Precision::Bf16 || kernel == QgemmKernel::DequantCublas;
  const DeviceBuffer<float> x(bf16_x ? std::vector<float>{} : values);
  const DeviceBuffer<__nv_bfloat16> x_bf16(bf16_x ? to_bf16(values) : std::vector<__nv_bfloat16>{});
  DeviceBuffer<float> y(m * n);
  const DeviceQuantizedMatrix w{codes.data(), levels.data(), n, k, bits, 0, device_row_stride(k, bits)};
  cublasHandle_t handle = nullptr;  // DequantCublas's, created outside the timed runs
  if (kernel == QgemmKernel::DequantCublas) NUQ_CUBLAS_CHECK(cublas().create(&handle));
  const auto destroy = [&] {
    if (handle) cublas().destroy(handle);
  };
  try {
    EventTimer timer(device);
    const double ms = timer.median_ms(runs, [&] {
      if (kernel == QgemmKernel::DequantCublas)
        launch_qgemm_dequant_cublas(x_bf16.data(), m, w, nullptr, false, y.data(), handle, nullptr);
      else if (kernel == QgemmKernel::Gemv)
        launch_qgemm_gemv(x.data(), m, w, nullptr, false, y.data(), nullptr);
      else if (precision == Precision::Bf16)
        launch_qgemm(x_bf16.data(), m, w, nullptr, false, y.data(), nullptr);
      else
        launch_qgemm(x.data(), m, w, nullptr, false, y.data(), nullptr, precision);
    });
    destroy();
    return ms;
  } catch (...) {
    destroy();
    throw;
  }
}

double time_cublas(std::size_t m, std::size_t n, std::size_t k, DensePeer peer, int runs, int device) {
  const DeviceScope on_device(device);
  const bool bf16 = peer == DensePeer::Bf16;
  // Random weights and activations (a product of zeros or constants can run faster than real data).
  const auto upload = [&](std::size_t count, std::uint64_t seed) {
    const std::vector<float> values = uniform(count, seed);
    const std::vector<__nv_bfloat16> rounded = bf16 ? to_bf16(values) : std::vector<__nv_bfloat16>{};
    DeviceBuffer<std::uint8_t> device_copy(count * (bf16 ? sizeof(__nv_bfloat16) : sizeof(float)));
    const void* from = bf16 ? static_cast<const void*>(rounded.data()) : static_cast<const void*>(values.data());
    if (count > 0) NUQ_CUDA_CHECK(cudaMemcpy(device_copy.data(), from, device_copy.size(), cudaMemcpyHostToDevice));
    return device_copy;
  };
  const DeviceBuffer<std::uint8_t> weights = upload(n * k, 4), x = upload(m * k, 5);
  DeviceBuffer<float> y(m * n);
  const float one = 1.0f, zero = 0.0f;
  const cublasComputeType_t compute = peer == DensePeer::Tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const cudaDataType_t type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  cublasHandle_t handle = nullptr;
  NUQ_CUBLAS_CHECK(cublas().create(&handle));
  double ms = 0.0;
  try {
    EventTimer timer(device);
    // Row-major Y[m, n] = X[m, k] W[n, k]^T is column-major Y^T[n, m] = W[k, n]^T X^T[k, m].
    ms = timer.median_ms(runs, [&] {
      NUQ_CUBLAS_CHECK(cublas().gemm_ex(handle, CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(m), int(k), &one, weights.data(), type,
                                    int(k), x.data(), type, int(k), &zero, y.data(), CUDA_R_32F, int(n), compute,
                                    CUBLAS_GEMM_DEFAULT));
    });
  } catch (...) {
    cublas().destroy(handle);
    throw;
  }
  NUQ_CUBLAS_CHECK(cublas().destroy(handle));
  return ms;
}

}  // namespace nuq::cuda
