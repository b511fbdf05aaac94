#include "nuq/quantize_table.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "nuq/error.h"
#include "nuq/packed.h"

#if defined(__AVX512F__) && defined(__AVX512VL__)
#include <immintrin.h>
#define NUQ_TABLE_AVX512 1
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 warns about the undefined pass-through operand inside its own AVX-512 intrinsics.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#endif

namespace nuq {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// The next float up (down) from a finite float, by its bit pattern: std::nextafter's result
// without its call, which a table of one map per group of 128 weights makes per threshold.
float next_up(float f) {
  if (f == 0.0f) return std::numeric_limits<float>::denorm_min();  // +0 and -0 alike
  std::uint32_t bits;
  std::memcpy(&bits, &f, 4);
  bits += f > 0.0f ? 1 : -1;
  std::memcpy(&f, &bits, 4);
  return f;
}
float next_down(float f) { return -next_up(-f); }

// The smallest float >= x, and the largest float <= x: a float w compares with them exactly as it
// compares with the double x. (Beyond the float range the rounding gives +-Inf, which compares right.)
float float_at_or_above(double x) {
  const float f = static_cast<float>(x);
  return double(f) < x ? next_up(f) : f;
}
float float_at_or_below(double x) {
  const float f = static_cast<float>(x);
  return double(f) > x ? next_down(f) : f;
}

#if defined(NUQ_TABLE_AVX512)
// Groups g .. g + 7 of a table without a uniform grid (one map per group of 128 weights builds a
// table per 128 weights): the scalar loop's values, bit for bit, eight groups a register. The
// file is compiled without contraction (CMakeLists.txt), so the scalar mean + scale * t is a
// product and a sum, rounded twice, as here; rounding toward +inf (-inf) is float_at_or_above
// (float_at_or_below): the smallest float at or above the double, overflow to +inf included.
// False where a group is constant (scale 0), a map is not finite or a level leaves float's range:
// the scalar loop then takes those eight groups again, writing over what was written, and says
// what is wrong.
bool eight_groups(const Affine* maps, const std::vector<double>& t, const std::vector<double>& y, double xmax,
                  std::size_t per_group, std::uint32_t nan_code, float* thresholds, float* levels, GroupParams* params) {
  // Affine is {mean, scale}: the 16 doubles of eight maps, split into means and scales.
  const __m512d first = _mm512_loadu_pd(&maps[0].mean), second = _mm512_loadu_pd(&maps[4].mean);
  const __m512d mean = _mm512_permutex2var_pd(first, _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), second);
  const __m512d scale = _mm512_permutex2var_pd(first, _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15), second);
  const __m512d infinity = _mm512_set1_pd(std::numeric_limits<double>::infinity());
  const __mmask8 usable = _mm512_cmp_pd_mask(_mm512_abs_pd(mean), infinity, _CMP_LT_OQ) &
                          _mm512_cmp_pd_mask(scale, _mm512_setzero_pd(), _CMP_GT_OQ) &
                          _mm512_cmp_pd_mask(scale, infinity, _CMP_LT_OQ);
  if (usable != 0xFF) return false;
  alignas(64) float column[8];
  const std::size_t count = y.size(), between = t.size();
  __mmask8 finite = 0xFF;
  for (std::size_t k = 0; k < per_group; ++k) {
    const __m512d level = k < count ? _mm512_add_pd(mean, _mm512_mul_pd(scale, _mm512_set1_pd(y[k]))) : mean;
    const __m256 rounded = _mm512_cvtpd_ps(level);
    finite &= __mmask8(_mm256_cmp_ps_mask(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), rounded),
                                          _mm256_set1_ps(std::numeric_limits<float>::infinity()), _CMP_LT_OQ));
    _mm256_store_ps(column, rounded);
    for (std::size_t g = 0; g < 8; ++g) levels[g * per_group + k] = column[g];
  }
  if (finite != 0xFF) return false;  // written over again by the scalar loop, which then reports it
  constexpr int kUp = _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC, kDown = _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC;
  for (std::size_t k = 0; k < between; ++k) {
    const __m512d x = _mm512_add_pd(mean, _mm512_mul_pd(scale, _mm512_set1_pd(t[k])));
    _mm256_store_ps(column, _mm512_cvt_roundpd_ps(x, kUp));
    for (std::size_t g = 0; g < 8; ++g) thresholds[g * between + k] = column[g];
  }
  const __m512d reach = _mm512_mul_pd(scale, _mm512_set1_pd(xmax));
  alignas(64) float lo[8], hi[8];
  _mm256_store_ps(lo, _mm512_cvt_roundpd_ps(_mm512_sub_pd(mean, reach), kUp));
  _mm256_store_ps(hi, _mm512_cvt_roundpd_ps(_mm512_add_pd(mean, reach), kDown));
  for (std::size_t g = 0; g < 8; ++g) params[g] = GroupParams{lo[g], hi[g], nan_code, 0.0f, 0.0f};
  return true;
}
#endif

}  // namespace

int storage_bits(const Codebook& codebook) {
  for (int bits : {1, 2, 4, 8, 16})
    if (bits >= codebook.bits()) return bits;
  throw Error("quantize: a " + std::to_string(codebook.bits()) + "-bit codebook cannot be packed");
}

std::pair<std::size_t, std::size_t> matrix_view(const std::vector<std::int64_t>& shape, std::size_t count) {
  if (shape.size() <= 1) return {1, count};
  const auto rows = static_cast<std::size_t>(shape[0]);
  if (rows) return {rows, count / rows};
  std::size_t cols = 1;  // no rows: the rest's product all the same (docs/format.md), when it fits
  for (std::size_t d = 1; d < shape.size(); ++d) {
    const auto dim = static_cast<std::size_t>(shape[d]);
    if (dim && cols > SIZE_MAX / dim) return {0, 0};
    cols *= dim;
  }
  return {0, cols};
}

QuantizeTable make_quantize_table(const Codebook& codebook, int bits, const std::vector<Affine>& groups,
                                  const std::string& where) {
  NUQ_REQUIRE(is_packable_bits(bits) && bits >= codebook.bits(), "quantize: a ", codebook.bits(),
              "-bit codebook cannot be stored in ", bits, "-bit codes");
  NUQ_REQUIRE(!groups.empty(), "quantize: no normalisation groups");
  QuantizeTable table;
  table.bits = bits;
  table.levels_count = static_cast<std::uint32_t>(codebook.size());
  table.groups = groups.size();
  const std::size_t per_group = std::size_t{1} << bits;
  const auto& t = codebook.thresholds();
  const auto& y = codebook.levels();
  const std::optional<UniformGrid>& grid = codebook.uniform_grid();
  const bool grid_levels = bits == 16 && grid.has_value();
  // Sized once and written in place: with groups of 128 weights the table is built per share, a
  // map per 128 weights, so what is the same for every group is taken out of the loop.
  const std::size_t thresholds_per_group = t.size();
  table.thresholds.resize(groups.size() * thresholds_per_group);
  table.levels.resize(groups.size() * per_group);
  table.params.resize(groups.size());
  const std::uint32_t nan_code = codebook.index_of(0.0);
  const double xmax = codebook.xmax();
  const auto one_group = [&](std::size_t g) {
    const Affine& a = groups[g];
    NUQ_REQUIRE(std::isfinite(a.mean) && std::isfinite(a.scale) && a.scale >= 0.0, "quantize: normalisation (mean ",
                a.mean, ", scale ", a.scale, ") is not finite and non-negative");
    const bool constant = a.scale == 0.0;  // every weight normalises to 0
    float* thresholds = table.thresholds.data() + g * thresholds_per_group;
    for (std::size_t k = 0; k < thresholds_per_group; ++k)
      thresholds[k] = constant ? (t[k] > 0.0 ? kInf : -kInf) : float_at_or_above(a.mean + a.scale * t[k]);
    float* levels = table.levels.data() + g * per_group;
    for (std::size_t k = 0; k < per_group; ++k) {
      double level = a.mean;
      if (grid_levels) level = (a.mean + a.scale * grid->first_level) + (a.scale * grid->step) * double(k);
      else if (k < y.size()) level = a.mean + a.scale * y[k];
      levels[k] = static_cast<float>(level);
      NUQ_REQUIRE(where.empty() || std::isfinite(levels[k]), where, ": level ", k, " of the codebook is ", level,
                  " in the weights' units (mean ", a.mean, ", scale ", a.scale,
                  "), beyond float32; weights this large cannot be quantized with this design");
    }
    GroupParams& p = table.params[g];
    const double reach = a.scale * xmax;
    p.inside_lo = constant ? -kInf : float_at_or_above(a.mean - reach);
    p.inside_hi = constant ? kInf : float_at_or_below(a.mean + reach);
    p.nan_code = nan_code;
    if (grid && !constant && t.size() >= 1) {
      // Cell k starts at threshold k-1 = t0 + (k-1) * step: k = floor((w - (t0 - step)) / step).
      p.grid_origin = static_cast<float>(a.mean + a.scale * (t.front() - grid->step));
      p.grid_inv_step = static_cast<float>(1.0 / (a.scale * grid->step));
      if (!std::isfinite(p.grid_inv_step)) p.grid_inv_step = 0.0f;  // a search is always correct
    }
  };
  std::size_t g = 0;
#if defined(NUQ_TABLE_AVX512)
  if (!grid)
    for (; g + 8 <= groups.size(); g += 8)
      if (!eight_groups(&groups[g], t, y, xmax, per_group, nan_code, table.thresholds.data() + g * thresholds_per_group,
                        table.levels.data() + g * per_group, table.params.data() + g))
        for (std::size_t i = g; i < g + 8; ++i) one_group(i);
#endif
  for (; g < groups.size(); ++g) one_group(g);
  return table;
}

namespace {
template <typename T>
bool same_bytes(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}
}  // namespace

bool same_bits(const QuantizeTable& a, const QuantizeTable& b) {
  if (a.bits != b.bits || a.levels_count != b.levels_count || a.groups != b.groups || a.params.size() != b.params.size())
    return false;
  for (std::size_t g = 0; g < a.params.size(); ++g) {  // field by field: padding is not compared
    const GroupParams &x = a.params[g], &y = b.params[g];
    const float xs[] = {x.inside_lo, x.inside_hi, x.grid_origin, x.grid_inv_step};
    const float ys[] = {y.inside_lo, y.inside_hi, y.grid_origin, y.grid_inv_step};
    if (x.nan_code != y.nan_code || std::memcmp(xs, ys, sizeof xs) != 0) return false;
  }
  return same_bytes(a.thresholds, b.thresholds) && same_bytes(a.levels, b.levels);
}

QuantizeTotals combine(const QuantizeTotals& a, const QuantizeTotals& b) {
  QuantizeTotals s;
  s.signal = a.signal + b.signal;
  s.noise = a.noise + b.noise;
  s.max_error = std::max(a.max_error, b.max_error);
  s.inside = a.inside + b.inside;
  s.nonfinite = a.nonfinite + b.nonfinite;
  s.first_nonfinite = std::min(a.first_nonfinite, b.first_nonfinite);
  return s;
}

QuantizeTotals quantize_ref(const float* values, std::size_t rows, std::size_t cols, const QuantizeTable& table,
                            std::uint8_t* packed) {
  NUQ_ASSERT(table.groups == 1 || table.groups == rows, table.groups, " groups for ", rows, " rows");
  QuantizeTotals totals;
  const std::size_t row_bytes = packed_row_bytes(cols, table.bits);
  const unsigned per_byte = table.bits < 8 ? 8u / unsigned(table.bits) : 1u;
  for (std::size_t r = 0; r < rows; ++r) {
    const std::size_t g = table.group_of_row(r);
    const GroupRule rule = table.rule(g);
    const float* levels = table.group_levels(g);
    std::uint8_t* out = packed + r * row_bytes;
    std::fill(out, out + row_bytes, std::uint8_t{0});
    for (std::size_t c = 0; c < cols; ++c) {
      const std::size_t index = r * cols + c;
      const float w = values[index];
      const std::uint32_t code = code_of(w, rule);
      if (table.bits == 16) {
        out[2 * c] = static_cast<std::uint8_t>(code);
        out[2 * c + 1] = static_cast<std::uint8_t>(code >> 8);
      } else {
        out[c / per_byte] |= static_cast<std::uint8_t>(code << ((c % per_byte) * unsigned(table.bits)));
      }
      if (!std::isfinite(w)) {
        ++totals.nonfinite;
        totals.first_nonfinite = std::min<std::uint64_t>(totals.first_nonfinite, index);
        continue;
      }
      const double error = double(w) - double(levels[code]);
      totals.signal += double(w) * double(w);
      totals.noise += error * error;
      totals.max_error = std::max(totals.max_error, std::abs(error));
      totals.inside += (w >= rule.params.inside_lo && w <= rule.params.inside_hi) ? 1u : 0u;
    }
  }
  return totals;
}

void dequantize_ref(const std::uint8_t* packed, std::size_t rows, std::size_t cols, const QuantizeTable& table,
                    float* out) {
  const std::size_t row_bytes = packed_row_bytes(cols, table.bits);
  const unsigned mask = table.bits == 16 ? 0xFFFFu : (1u << table.bits) - 1u;
  for (std::size_t r = 0; r < rows; ++r) {
    const float* levels = table.group_levels(table.group_of_row(r));
    const std::uint8_t* row = packed + r * row_bytes;
    for (std::size_t c = 0; c < cols; ++c) {
      std::uint32_t code;
      if (table.bits == 16) {
        code = row[2 * c] | (std::uint32_t{row[2 * c + 1]} << 8);
      } else {
        const std::size_t bit = c * std::size_t(table.bits);
        code = (row[bit / 8] >> (bit % 8)) & mask;
      }
      out[r * cols + c] = levels[code];
    }
  }
}

}  // namespace nuq
