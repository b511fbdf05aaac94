// The CUDA-core GEMV for batches of 1 to 4 rows (qgemm_gemv.cu; its maps in gemv_layout.h): codes
// read as they are packed, with coalesced 16-byte loads marked evict-first, X staged once per block
// in shared memory where every read is free of bank conflicts, each read of X met with four rows of
// W, FP32 arithmetic (the CPU's results to rounding). Chosen with cuda::QgemmKernel::Gemv; the
// streaming kernel stays the default until a GPU run has measured both.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "gemv_layout.h"
#include "qgemm.cuh"

namespace nuq::cuda {

// Whether the GEMV takes Y = X W^T for `m` rows of X (gemv::takes: 1 to 4 rows, rows of W of at
// least one warp step of codes and at most kMaxSlices slices).
inline bool gemv_takes(std::size_t m, const DeviceQuantizedMatrix& w) { return gemv::takes(m, w.k, w.bits); }

// Y[m, n] = act(X[m, k] W^T + bias). Throws unless gemv_takes(m, w) and w's rows are laid out as
// device_row_stride says.
void launch_qgemm_gemv(const float* d_x, std::size_t m, const DeviceQuantizedMatrix& w, const float* d_bias, bool relu,
                       float* d_y, cudaStream_t stream);

}  // namespace nuq::cuda
