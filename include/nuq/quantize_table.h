// A Codebook made ready for a backend: per group (one for a tensor, one per output channel), the
// thresholds and levels in the weights' own units and the bounds of the support region, so the
// one pass over the weights (normalise, quantize, pack, accumulate the error) is only comparisons
// and look-ups. Built on the host, consumed alike by the CPU and the CUDA backends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "nuq/codebook.h"
#include "nuq/quantize_rule.h"
#include "nuq/weight_type.h"

namespace nuq {

// The map from weights to the codebook's units, w -> (w - mean) / scale. scale == 0 marks a
// constant group: every weight is normalised to 0.
struct Affine {
  double mean = 0.0, scale = 1.0;
};

struct QuantizeTable {
  int bits = 2;                      // packed width (1, 2, 4, 8 or 16)
  std::uint32_t levels_count = 0;    // N, the codebook's levels
  std::size_t groups = 0;            // 1, or one per row
  std::vector<float> thresholds;     // [groups, N - 1]
  std::vector<float> levels;         // [groups, 2^bits]: codes the codebook does not use map to the mean
  std::vector<GroupParams> params;   // [groups]

  GroupRule rule(std::size_t group) const {
    return {thresholds.data() + group * (levels_count - 1), levels_count, params[group]};
  }
  const float* group_levels(std::size_t group) const { return levels.data() + (group << bits); }
  // The group that row r of a [rows, cols] matrix uses.
  std::size_t group_of_row(std::size_t row) const { return groups == 1 ? 0 : row; }
};

// The narrowest packed width (1, 2, 4, 8 or 16) that holds the codebook's codes.
int storage_bits(const Codebook& codebook);

// Rows and columns a parameter is quantized as: [shape[0], the rest] (weights [out, in], conv
// filters [filters, taps]) or [1, n] for vectors and scalars. `count` is the product of `shape`.
// Without rows the rest is still the columns ([0, 16] is 0 x 16), or 0 where its product would
// overflow.
std::pair<std::size_t, std::size_t> matrix_view(const std::vector<std::int64_t>& shape, std::size_t count);

// `bits` must hold the codebook's codes and be packable; `groups` has one map per group. With 16
// bits and a uniform grid the levels come from the grid's affine map (what the U16 files store),
// so that a file reproduces the in-memory quantizer bit for bit. With `where` (the tensor, for
// tables that will be stored), a level beyond float32 (weights near +-3.4e38) throws nuq::Error
// naming it: a stored table of infinities restores nothing.
QuantizeTable make_quantize_table(const Codebook& codebook, int bits, const std::vector<Affine>& groups,
                                  const std::string& where = "");

// Whether `a` and `b` quantize every weight alike: the same width, groups and bits of every
// threshold, level and parameter (so -0 and +0 differ, and a NaN matches only its own bits). The
// CUDA backends keep their last table on the device and upload another only when this is false.
bool same_bits(const QuantizeTable& a, const QuantizeTable& b);

// What one pass accumulates over the finite weights (double, so 10^9 weights keep their digits).
struct QuantizeTotals {
  double signal = 0.0;     // sum of w^2
  double noise = 0.0;      // sum of (w - w_hat)^2
  double max_error = 0.0;  // max |w - w_hat|
  std::uint64_t inside = 0;     // weights within the support region
  std::uint64_t nonfinite = 0;  // NaN and +-Inf met (saturated: see code_of)
  std::uint64_t first_nonfinite = UINT64_MAX;  // the lowest index of one, for error messages
};
QuantizeTotals combine(const QuantizeTotals& a, const QuantizeTotals& b);

// The reference pass, one weight at a time: codes of the [rows, cols] matrix `values` packed into
// `packed` (rows * packed_row_bytes(cols, bits) bytes, overwritten), and the totals. Every fast
// path (CPU SIMD, CUDA) is tested bit for bit against it.
QuantizeTotals quantize_ref(const float* values, std::size_t rows, std::size_t cols, const QuantizeTable& table,
                            std::uint8_t* packed);

// The same, fast: AVX-512 for up to 16 levels where the build has it, rows over the cores.
QuantizeTotals quantize_fast(const float* values, std::size_t rows, std::size_t cols, const QuantizeTable& table,
                             std::uint8_t* packed);
// The same pass over weights of `type` as they lie (BF16, F16 widened as they are read): the same
// codes and totals, bit for bit, as for their floats.
QuantizeTotals quantize_fast(const void* values, WeightType type, std::size_t rows, std::size_t cols,
                             const QuantizeTable& table, std::uint8_t* packed);

// Weights back from codes: out[r * cols + c] = level of code (r, c) in its row's group.
void dequantize_ref(const std::uint8_t* packed, std::size_t rows, std::size_t cols, const QuantizeTable& table,
                    float* out);

}  // namespace nuq
