// Large batches through cuBLAS (qgemm_dequant.cu, cuda::QgemmKernel::DequantCublas): W's codes
// decoded into BF16 a band of rows at a time, each band multiplied by cuBLAS's BF16 GEMM (FP32
// accumulation and Y), the bias and ReLU after. The arithmetic of Precision::Bf16: X and the levels
// rounded to BF16 (to nearest, ties to even), FP32 accumulation. The decoded band is scratch from
// the stream's memory pool, at most kDequantBandBytes: the FP32 or BF16 weights never exist whole.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>

#include "qgemm.cuh"

namespace nuq::cuda {

constexpr std::size_t kDequantBandBytes = std::size_t{64} << 20;
constexpr std::size_t kDequantBandAlign = 128;  // rows: whole tiles of cuBLAS's kernels

// Rows of W decoded per band: the most whole multiples of kDequantBandAlign rows within
// kDequantBandBytes of BF16, at least kDequantBandAlign, never more than n.
std::size_t dequant_band_rows(std::size_t n, std::size_t k);

// out[r][c] = BF16 of the level of code (first_row + r, c), for r < rows and c < k (rows of k
// elements, contiguous).
void launch_dequantize_bf16(const DeviceQuantizedMatrix& w, std::size_t first_row, std::size_t rows,
                            __nv_bfloat16* d_out, cudaStream_t stream);

// Y[m, n] = act(X[m, k] W^T + bias) with `handle` (its stream set to `stream` here, so a handle
// serves one stream: two threads on two streams each need their own). X in FP32 is rounded to BF16
// into pool scratch first.
void launch_qgemm_dequant_cublas(const float* d_x, std::size_t m, const DeviceQuantizedMatrix& w, const float* d_bias,
                                 bool relu, float* d_y, cublasHandle_t handle, cudaStream_t stream);
void launch_qgemm_dequant_cublas(const __nv_bfloat16* d_x, std::size_t m, const DeviceQuantizedMatrix& w,
                                 const float* d_bias, bool relu, float* d_y, cublasHandle_t handle,
                                 cudaStream_t stream);

}  // namespace nuq::cuda
