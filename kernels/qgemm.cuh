// Quantized GEMM on the device, straight from packed codes: Y[m, n] = act(X[m, k] * W^T + b) with
// W[n, k] = levels[code(n, k)] (one table, or one per row). Two paths:
//  - small batches (m <= kSmallBatch): a group of lanes per output row (a whole warp for long
//    rows) streams the row's packed bytes once with 16-byte loads and meets every row of X with
//    them (the weights are read once, at memory speed), split across blocks along k when the
//    rows alone leave multiprocessors idle;
//  - larger batches: 64 x 64 output tiles, the weight tile decoded into shared memory once per
//    k-step and reused by all 64 rows of X (FP32 FMA on CUDA cores), or with Precision::Bf16
//    128 x 128 tiles decoded into BF16 for the tensor cores (qgemm_tensor.cu).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "cuda_check.cuh"
#include "device_rows.h"
#include "nuq/cuda.h"
#include "nuq/error.h"
#include "nuq/packed.h"

namespace nuq::cuda {

constexpr std::size_t kSmallBatch = 16;

struct DeviceQuantizedMatrix {
  const std::uint8_t* codes;  // [n, row_stride]: each row packed as nuq/packed.h lays it out
  const float* levels;        // 2^bits, or [n, 2^bits] when levels_stride is 2^bits
  std::size_t n, k;
  int bits;
  std::size_t levels_stride;  // 0: one table for the matrix; 2^bits: a table per row
  std::size_t row_stride;     // bytes from one row's codes to the next: device_row_stride(k, bits)
  // 8- and 16-bit codes whose one table is a uniform grid (the uniform quantizers): a level is
  // computed as LevelGrid::level computes it, not looked up in the table (level_grid).
  bool on_grid = false;
  float grid_origin_level = 0.0f, grid_scale = 0.0f;
  int grid_origin_code = 0;

  __device__ const float* row_levels(std::size_t row) const { return levels + row * levels_stride; }
  // The level of `code` in a row whose table is `table`, read through the read-only cache.
  __device__ float level(const float* table, std::uint32_t code) const {
    return on_grid ? fmaf(grid_scale, float(int(code) - grid_origin_code), grid_origin_level) : __ldg(table + code);
  }
  __device__ const std::uint8_t* row_codes(std::size_t row) const { return codes + row * row_stride; }
};

// Throws unless `w`'s rows are laid out as device_row_stride says (the kernels' vector loads and
// whole k-steps rely on it).
inline void require_device_rows(const DeviceQuantizedMatrix& w) {
  NUQ_REQUIRE(w.row_stride % kRowAlign == 0 && w.row_stride >= device_row_stride(w.k, w.bits) &&
                  reinterpret_cast<std::uintptr_t>(w.codes) % kRowAlign == 0,
              "qgemm: device rows of codes must start every ", device_row_stride(w.k, w.bits),
              " bytes on 16-byte boundaries (upload_weights lays them out), not every ", w.row_stride);
}

// The code in column c of a packed row (the layout of nuq/packed.h).
template <int kBits>
__device__ __forceinline__ std::uint32_t code_at(const std::uint8_t* row, std::size_t c) {
  static_assert(kBits == 1 || kBits == 2 || kBits == 4 || kBits == 8 || kBits == 16, "packable widths");
  if constexpr (kBits == 16) {
    return row[2 * c] | (std::uint32_t(row[2 * c + 1]) << 8);
  } else if constexpr (kBits == 8) {
    return row[c];
  } else {  // several codes per byte (a discarded branch for 16 bits, where 8 / kBits is 0)
    constexpr unsigned per_byte = 8 / kBits;
    return (row[c / per_byte] >> ((c % per_byte) * kBits)) & ((1u << kBits) - 1u);
  }
}

// Calls f(std::integral_constant<int, B>{}) for the packable width `bits`: the one place where a
// runtime code width becomes a kernel's compile-time one. Other widths throw naming `what`.
template <typename F>
void with_code_width(int bits, const char* what, F&& f) {
  switch (bits) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 8: return f(std::integral_constant<int, 8>{});
    case 16: return f(std::integral_constant<int, 16>{});
  }
  throw Error(std::string(what) + ": " + std::to_string(bits) + "-bit codes are not supported");
}

// y[i][r] = act(y[i][r] + bias[r]) over Y[m, n], after a product that wrote Y without them (cuBLAS);
// nothing to do without a bias or ReLU.
void launch_bias_relu(float* d_y, std::size_t m, std::size_t n, const float* d_bias, bool relu, cudaStream_t stream);

// Split-K: a kernel that cuts k into `splits` slices writes slice s's sums to partial[s][i][row]
// (splits * m * n floats); enqueue_finish_split_k adds them in slice order, then the bias and ReLU
// (the same result on every run), and returns the launch's status.
cudaError_t enqueue_finish_split_k(const float* partial, unsigned splits, std::size_t m, std::size_t n,
                                   const float* bias, bool relu, float* y, cudaStream_t stream);

// Runs launch(partial): with nullptr for one slice (the kernel applies bias and ReLU itself),
// otherwise with the slices' floats from the stream's memory pool (no device-wide
// synchronisation), then the ordered sum, and frees them whether or not the launches failed.
template <typename Launch>
void run_split_k(unsigned splits, std::size_t m, std::size_t n, const float* bias, bool relu, float* y,
                 cudaStream_t stream, Launch&& launch) {
  if (splits == 1) {
    launch(static_cast<float*>(nullptr));
    NUQ_CUDA_CHECK_LAUNCH();
    return;
  }
  float* partial = nullptr;
  NUQ_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&partial), std::size_t(splits) * m * n * sizeof(float), stream));
  launch(partial);
  const cudaError_t launched = cudaGetLastError();
  const cudaError_t finished =
      launched == cudaSuccess ? enqueue_finish_split_k(partial, splits, m, n, bias, relu, y, stream) : cudaSuccess;
  NUQ_CUDA_CHECK(cudaFreeAsync(partial, stream));
  NUQ_CUDA_CHECK(launched);
  NUQ_CUDA_CHECK(finished);
}

// Precision::Fp32: the FP32 paths above, the CPU's results to rounding. Precision::Bf16: batches
// above kSmallBatch on tensor cores (qgemm_tensor.cu), X and the levels rounded to BF16, FP32
// accumulation; small batches stay on the FP32 streaming path, which is memory-bound anyway.
void launch_qgemm(const float* d_x, std::size_t m, const DeviceQuantizedMatrix& w, const float* d_bias, bool relu,
                  float* d_y, cudaStream_t stream, Precision precision = Precision::Fp32);
// BF16 activations (half the bytes of X): batches up to kSmallBatch on the streaming path, each
// element widened to FP32 exactly; larger ones on the tensor cores (levels in BF16). Y in FP32.
void launch_qgemm(const __nv_bfloat16* d_x, std::size_t m, const DeviceQuantizedMatrix& w, const float* d_bias,
                  bool relu, float* d_y, cudaStream_t stream);
void launch_qgemm_tensor(const float* d_x, std::size_t m, const DeviceQuantizedMatrix& w, const float* d_bias,
                         bool relu, float* d_y, cudaStream_t stream);
void launch_qgemm_tensor(const __nv_bfloat16* d_x, std::size_t m, const DeviceQuantizedMatrix& w,
                         const float* d_bias, bool relu, float* d_y, cudaStream_t stream);

}  // namespace nuq::cuda
