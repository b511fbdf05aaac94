// Internal to host/qgemm.cpp: the small-batch CPU path for 1-, 2- and 4-bit codes by table
// look-up across rows. See qgemm_lut.cpp.
#pragma once

#include <cstddef>

#include "nuq/qgemm.h"

namespace nuq::detail {

constexpr std::size_t kLutMaxBatch = 4;

// y[m, rows] = x[m, cols] * W^T (no bias) when the path applies: AVX-512 (F, BW) in the build, m <= 4,
// 1/2/4-bit codes, one table of levels for the matrix. Returns false, touching nothing, otherwise.
bool qgemm_lut(const float* x, std::size_t m, const QuantizedMatrix& w, float* y);

}  // namespace nuq::detail
