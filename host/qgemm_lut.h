// Internal to host/qgemm.cpp: the CPU path for 1-, 2- and 4-bit codes by table look-up across
// rows, up to moderate batches. See qgemm_lut.cpp.
#pragma once

#include <cstddef>

#include "nuq/qgemm.h"

namespace nuq::detail {

// The largest batch taken by the look-up: up to here it beats decoding 64-row FP32 panels for
// OpenBLAS at 1, 2 and 4 bits (measured on 4096 x 4096 up to m = 256,
// bench/results/cpu-qgemm-lut-2026-11-23.md); its cost grows linearly with the batch.
constexpr std::size_t kLutMaxBatch = 256;

// y[m, rows] = x[m, cols] * W^T (no bias) when the path applies: AVX-512 (F, BW) in the build,
// 1/2/4-bit codes, m <= kLutMaxBatch, one table of levels for the matrix. Returns false,
// touching nothing, otherwise.
bool qgemm_lut(const float* x, std::size_t m, const QuantizedMatrix& w, float* y);

}  // namespace nuq::detail
