// Quantized matrix products on the CPU, straight from packed codes: Y = X * W^T + bias with
// W[n, k] = levels[code(n, k)]. No full FP32 copy of W ever exists: 1/2/4-bit codes with one
// codebook take a table look-up across rows up to moderate batches (host/qgemm_lut.cpp); other
// batches up to 16 decode sixteen codes at a time in registers and meet X there; larger ones expand
// a panel of rows at a time (sixteen codes at a time with AVX-512, else through a byte table) for
// OpenBLAS.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "nuq/packed.h"

namespace nuq {

struct QuantizedMatrix {
  PackedCodes codes;  // [rows = outputs, cols = inputs]
  // The value of each code in the weights' own units: 2^bits levels for the whole matrix, or a
  // table of 2^bits per row ([rows, 2^bits], per-channel normalisation).
  std::vector<float> levels;

  bool per_row() const { return codes.rows > 1 && levels.size() == (codes.rows << codes.bits); }
  const float* row_levels(std::size_t row) const { return levels.data() + (per_row() ? row << codes.bits : 0); }
};

// A table of levels on a uniform grid: level(code) = origin_level + scale * (code - origin_code)
// (one FP32 FMA) to within 2^-21 of each level's magnitude (or of the step, for levels nearer zero
// than a step). The uniform quantizers' 8- and 16-bit tables are; their products compute each
// level instead of gathering it from the table. The origin is the level nearest zero: counted from
// code 0, every level would carry the rounding of the grid's end (2^-24 of x_max), which a weight
// far smaller than x_max (a unit-variance 16-bit design met by weights of sigma 0.02, unnormalised)
// takes as a relative error of thousands of units in its last place, and a product sums it.
struct LevelGrid {
  float origin_level = 0.0f, scale = 0.0f;
  std::int32_t origin_code = 0;
  float level(std::uint32_t code) const {
    return std::fma(scale, float(std::int32_t(code) - origin_code), origin_level);
  }
};
std::optional<LevelGrid> level_grid(const float* levels, std::size_t count);

// Throws nuq::Error unless the width is packable, the bytes fit the shape and there is one level
// per code (for the matrix or for every row), so that no code can index past its table.
void check_quantized_matrix(const QuantizedMatrix& w, const std::string& what);

// y[m, rows] = x[m, cols] * W^T (+ bias[rows] when bias is not null).
void qgemm(const float* x, std::size_t m, const QuantizedMatrix& w, const float* bias, float* y);

// Whether the CPU's product of `w` with m rows of X reads what Backend::prepare works out on the
// CPU, in a build for a CPU with AVX-512: the table look-up's layout, for 1-4-bit codes with one
// table, up to 256 rows of X at 1-2 bits and 3 at 4; or the rows' level grids, for 8- and 16-bit
// codes with a table per row (a uniform design per channel), up to 16 rows of X (16-bit: any).
// Otherwise preparing saves that product nothing.
bool cpu_layout_used(const QuantizedMatrix& w, std::size_t m);

// y[i, r] += bias[r] over a [m, n] product; nothing when bias is null (every backend's epilogue
// on the host).
void add_bias(const float* bias, std::size_t m, std::size_t n, float* y);

// The reference: dequantize the whole matrix, then one sgemm.
std::vector<float> dequantize(const QuantizedMatrix& w);
// Rows [first, first + count) of it into `out` (count * cols floats).
void dequantize_rows(const QuantizedMatrix& w, std::size_t first, std::size_t count, float* out);
void qgemm_ref(const float* x, std::size_t m, const QuantizedMatrix& w, const float* bias, float* y);

}  // namespace nuq
