// The small-batch quantized GEMM on tensor cores (qgemm_mma.cu): Y = act(X W^T + b) for batches up
// to kMmaMaxBatch from 2-, 4- or 8-bit codes in fragment order (nuq/mma_fragment.h, laid out once
// by to_fragment_order when the weights are prepared), X and the levels in BF16, FP32 accumulation
// (mma.sync m16n8k16). Chosen with cuda::QgemmKernel::Mma; the streaming kernels stay the default
// until a GPU run has measured it.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "qgemm.cuh"

namespace nuq::cuda {

constexpr std::size_t kMmaMaxBatch = 64;

// Whether the mma kernel takes codes of `bits` bits (the fragment order has 1 bit too, but no
// kernel is compiled for it: 1- and 16-bit products stay on the other kernels).
constexpr bool mma_kernel_bits(int bits) { return bits == 2 || bits == 4 || bits == 8; }

// Codes in fragment order on the device: row_blocks x k_units units of 512 bytes.
struct DeviceFragmentCodes {
  const std::uint8_t* bytes = nullptr;
  std::size_t row_blocks = 0, k_units = 0;
};

// Whether launch_qgemm_mma takes Y = X W^T for `m` rows of X on a device of `multiprocessors`:
// a batch of 1 to kMmaMaxBatch, 2-, 4- or 8-bit codes in fragment order, k > 0, and a grid that
// fits (rows of over about 10^8 codes are cut into more slices of k than gridDim.y holds: the
// default kernels take them).
bool mma_takes(std::size_t m, const DeviceQuantizedMatrix& w, const DeviceFragmentCodes& codes, int multiprocessors);

// `w` gives the shape, width and levels (its row-major codes are not read); `codes` the same codes
// in fragment order. Needs compute capability 8.0, m <= kMmaMaxBatch and mma_kernel_bits(w.bits)
// (throws naming what is missing otherwise).
void launch_qgemm_mma(const float* d_x, std::size_t m, const DeviceQuantizedMatrix& w, const DeviceFragmentCodes& codes,
                      const float* d_bias, bool relu, float* d_y, cudaStream_t stream);
void launch_qgemm_mma(const __nv_bfloat16* d_x, std::size_t m, const DeviceQuantizedMatrix& w,
                      const DeviceFragmentCodes& codes, const float* d_bias, bool relu, float* d_y,
                      cudaStream_t stream);

}  // namespace nuq::cuda
