// Timings for bench/: the device-resident weight pipeline, the quantized GEMM and its cuBLAS
// peers, each with CUDA events around `runs` launches after one warm-up, over rotated buffers.
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <random>
#include <vector>

#include "cuda_check.cuh"
#include "device_buffer.cuh"
#include "nuq/cuda.h"
#include "nuq/error.h"
#include "nuq/packed.h"
#include "nuq/quantize_table.h"
#include "cublas_check.cuh"
#include "qgemm.cuh"
#include "quantize.cuh"
#include "weight_stats.cuh"

namespace nuq::cuda {
namespace {

// How many copies of an input of `bytes` make the rotation exceed twice the L2 cache.
std::size_t rotation(std::size_t bytes, int device) {
  int l2 = 0;
  NUQ_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
  return std::max<std::size_t>(1, std::min<std::size_t>(64, (2 * std::size_t(l2)) / std::max<std::size_t>(bytes, 1) + 1));
}

class EventTimer {
 public:
  EventTimer() {
    NUQ_CUDA_CHECK(cudaEventCreate(&start_));
    NUQ_CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~EventTimer() {
    NUQ_CUDA_CHECK_NOTHROW(cudaEventDestroy(start_));
    NUQ_CUDA_CHECK_NOTHROW(cudaEventDestroy(stop_));
  }
  template <typename Run>
  double mean_ms(int runs, const Run& run) {
    run(0);  // warm-up: module load, first-touch of buffers
    NUQ_CUDA_CHECK(cudaDeviceSynchronize());
    NUQ_CUDA_CHECK(cudaEventRecord(start_));
    for (int i = 0; i < runs; ++i) run(i + 1);
    NUQ_CUDA_CHECK(cudaEventRecord(stop_));
    NUQ_CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0.0f;
    NUQ_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return double(ms) / runs;
  }

 private:
  cudaEvent_t start_, stop_;
};

std::vector<float> laplacian(std::size_t count, std::uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::exponential_distribution<float> e(std::sqrt(2.0f) / 0.05f);
  std::vector<float> v(count);
  for (float& x : v) x = (rng() & 1 ? 1.0f : -1.0f) * e(rng);
  return v;
}

}  // namespace

PipelineTimes time_pipeline(std::size_t count, const Codebook& codebook, int bits, int runs, int device) {
  NUQ_REQUIRE(count > 0 && runs > 0, "time_pipeline: nothing to time");
  NUQ_CUDA_CHECK(cudaSetDevice(device));
  int sms = 0;
  NUQ_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const std::size_t copies = rotation(count * sizeof(float), device);
  // One random block uploaded, replicated on the device (uploading 4 GiB from the host would
  // dominate the benchmark's own run time).
  const std::vector<float> host = laplacian(std::min<std::size_t>(count, std::size_t{1} << 24), 1);
  std::vector<DeviceBuffer<float>> inputs;
  for (std::size_t i = 0; i < copies; ++i) {
    inputs.emplace_back(count);
    for (std::size_t at = 0; at < count; at += host.size())
      NUQ_CUDA_CHECK(cudaMemcpy(inputs.back().data() + at, host.data(), std::min(host.size(), count - at) * sizeof(float),
                                cudaMemcpyHostToDevice));
  }
  DeviceBuffer<float> copy_target(count);
  DeviceBuffer<std::uint8_t> packed(packed_row_bytes(count, bits));
  DeviceBuffer<std::uint8_t> scratch(std::max(stats_scratch_bytes(count, sms), quantize_scratch_bytes(packed.size(), sms)));
  DeviceBuffer<StatsPartial> stats(1);
  DeviceBuffer<QuantizeTotals> totals(1);
  StatsPartial* host_stats = nullptr;
  NUQ_CUDA_CHECK(cudaMallocHost(&host_stats, sizeof(StatsPartial)));
  const Piece piece{0, 1, 0, count, count};
  EventTimer timer;
  PipelineTimes times;
  try {
    times.pipeline_ms = timer.mean_ms(runs, [&](int i) {
      const float* in = inputs[std::size_t(i) % copies].data();
      launch_stats(in, count, 0, stats.data(), scratch.data(), scratch.size(), sms, nullptr);
      NUQ_CUDA_CHECK(cudaMemcpy(host_stats, stats.data(), sizeof(StatsPartial), cudaMemcpyDeviceToHost));
      const double sd = host_stats->count ? std::sqrt(host_stats->m2 / double(host_stats->count)) : 1.0;
      const QuantizeTable table = make_quantize_table(codebook, bits, {Affine{host_stats->mean, sd > 0 ? sd : 1.0}});
      // Tables of up to 8 bits are a few hundred bytes: a small upload per run, as a user pays it.
      const DeviceBuffer<float> thresholds(table.thresholds), levels(table.levels);
      const DeviceBuffer<GroupParams> params(table.params);
      const DeviceTable view{thresholds.data(), levels.data(), params.data(), table.levels_count, false, bits};
      launch_quantize(in, piece, view, packed.data(), totals.data(), scratch.data(), scratch.size(), sms, nullptr);
    });
    times.copy_ms = timer.mean_ms(runs, [&](int i) {
      NUQ_CUDA_CHECK(cudaMemcpyAsync(copy_target.data(), inputs[std::size_t(i) % copies].data(), count * sizeof(float),
                                     cudaMemcpyDeviceToDevice));
    });
  } catch (...) {
    cudaFreeHost(host_stats);
    throw;
  }
  NUQ_CUDA_CHECK(cudaFreeHost(host_stats));
  return times;
}

double time_qgemm(std::size_t m, std::size_t n, std::size_t k, int bits, int runs, int device, Precision precision) {
  NUQ_CUDA_CHECK(cudaSetDevice(device));
  const std::size_t code_bytes = n * device_row_stride(k, bits);  // rows as upload_weights lays them out
  const std::size_t copies = rotation(code_bytes, device);
  std::vector<std::uint8_t> host_codes(code_bytes);
  std::mt19937 rng(3);
  for (auto& b : host_codes) b = std::uint8_t(rng());
  std::vector<DeviceBuffer<std::uint8_t>> codes;
  for (std::size_t i = 0; i < copies; ++i) codes.emplace_back(host_codes);
  std::vector<float> host_levels(std::size_t{1} << bits);
  for (std::size_t i = 0; i < host_levels.size(); ++i) host_levels[i] = float(i) / float(host_levels.size()) - 0.5f;
  const DeviceBuffer<float> levels(host_levels);
  // Precision::Bf16 takes X in BF16, as the cuBLAS BF16 peer does: at large batches X's bytes
  // outweigh the packed weights', so both sides read the same activations.
  const std::vector<float> values = laplacian(m * k, 2);
  std::vector<__nv_bfloat16> values_bf16(precision == Precision::Bf16 ? values.size() : 0);
  for (std::size_t i = 0; i < values_bf16.size(); ++i) values_bf16[i] = __float2bfloat16(values[i]);
  const DeviceBuffer<float> x(precision == Precision::Bf16 ? std::vector<float>{} : values);
  const DeviceBuffer<__nv_bfloat16> x_bf16(values_bf16);
  DeviceBuffer<float> y(m * n);
  EventTimer timer;
  return timer.mean_ms(runs, [&](int i) {
    const DeviceQuantizedMatrix w{codes[std::size_t(i) % copies].data(), levels.data(), n, k, bits, 0,
                                  device_row_stride(k, bits)};
    if (precision == Precision::Bf16)
      launch_qgemm(x_bf16.data(), m, w, nullptr, false, y.data(), nullptr);
    else
      launch_qgemm(x.data(), m, w, nullptr, false, y.data(), nullptr, precision);
  });
}

double time_cublas(std::size_t m, std::size_t n, std::size_t k, DensePeer peer, int runs, int device) {
  NUQ_CUDA_CHECK(cudaSetDevice(device));
  cublasHandle_t handle = nullptr;
  NUQ_CUBLAS_CHECK(cublasCreate(&handle));
  const bool bf16 = peer == DensePeer::Bf16;
  const std::size_t element = bf16 ? 2 : 4;
  const std::size_t copies = rotation(n * k * element, device);
  std::vector<DeviceBuffer<std::uint8_t>> weights;
  for (std::size_t i = 0; i < copies; ++i) {
    weights.emplace_back(n * k * element);
    NUQ_CUDA_CHECK(cudaMemset(weights.back().data(), 0x3C, n * k * element));  // finite, non-zero values
  }
  DeviceBuffer<std::uint8_t> x(m * k * element);
  NUQ_CUDA_CHECK(cudaMemset(x.data(), 0x3C, x.size()));
  DeviceBuffer<float> y(m * n);
  const float one = 1.0f, zero = 0.0f;
  const cublasComputeType_t compute = peer == DensePeer::Fp32 ? CUBLAS_COMPUTE_32F
                                      : peer == DensePeer::Tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                                : CUBLAS_COMPUTE_32F;
  const cudaDataType_t type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  double ms = 0.0;
  try {
    EventTimer timer;
    // Row-major Y[m, n] = X[m, k] W[n, k]^T is column-major Y^T[n, m] = W[k, n]^T X^T[k, m].
    ms = timer.mean_ms(runs, [&](int i) {
      NUQ_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(m), int(k), &one,
                                    weights[std::size_t(i) % copies].data(), type, int(k), x.data(), type, int(k), &zero,
                                    y.data(), CUDA_R_32F, int(n), compute, CUBLAS_GEMM_DEFAULT));
    });
  } catch (...) {
    cublasDestroy(handle);
    throw;
  }
  NUQ_CUBLAS_CHECK(cublasDestroy(handle));
  return ms;
}

}  // namespace nuq::cuda
