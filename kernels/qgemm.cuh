// Quantized GEMM on the device, straight from packed codes: Y[m, n] = act(X[m, k] * W^T + b) with
// W[n, k] = levels[code(n, k)] (one table, or one per row). Two paths:
//  - small batches (m <= kSmallBatch): one warp per output row streams the row's packed bytes
//    once and meets every row of X with them (the weights are read once, at memory speed);
//  - larger batches: 64 x 64 output tiles, the weight tile decoded into shared memory once per
//    k-step and reused by all 64 rows of X (FP32 FMA on CUDA cores).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace nuq::cuda {

constexpr std::size_t kSmallBatch = 16;

struct DeviceQuantizedMatrix {
  const std::uint8_t* codes;  // [n, packed_row_bytes(k, bits)]
  const float* levels;        // 2^bits, or [n, 2^bits] when levels_stride is 2^bits
  std::size_t n, k;
  int bits;
  std::size_t levels_stride;  // 0: one table for the matrix; 2^bits: a table per row

  __device__ const float* row_levels(std::size_t row) const { return levels + row * levels_stride; }
};

void launch_qgemm(const float* d_x, std::size_t m, const DeviceQuantizedMatrix& w, const float* d_bias, bool relu,
                  float* d_y, cudaStream_t stream);

}  // namespace nuq::cuda
