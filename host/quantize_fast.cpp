// The CPU backend's fast quantization pass: the weights are read once, and each sixteen (AVX-512)
// or eight (AVX2) of them are compared with the thresholds, packed, looked up and accumulated in
// vector registers. The rule (nuq/quantize_rule.h) and the totals are the reference's: codes are
// bit-identical to quantize_ref's, sums agree to rounding.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__)
#define NUQ_QUANTIZE_AVX512 1
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 warns about the undefined pass-through operand inside its own AVX-512 intrinsics.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#elif defined(__AVX2__) && defined(__FMA__)
#define NUQ_QUANTIZE_AVX2 1
#include <immintrin.h>
#endif

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "nuq/error.h"
#include "nuq/packed.h"
#include "nuq/quantize_table.h"

namespace nuq {
namespace {

// A row is cut into segments of this many columns (a multiple of 16, so segments start on byte
// boundaries at every width), so that one wide row still spreads over the cores.
constexpr std::size_t kSegmentCols = 16384;

// Codes of one segment [first, last) of a row, one weight at a time (also the SIMD path's tails
// and the chunks that hold NaN or Inf).
void quantize_span(const float* row, std::size_t row_start, std::size_t first, std::size_t last,
                   const GroupRule& rule, const float* levels, int bits, std::uint8_t* out, QuantizeTotals& t) {
  const unsigned per_byte = bits < 8 ? 8u / unsigned(bits) : 1u;
  for (std::size_t c = first; c < last; ++c) {
    const float w = row[c];
    const std::uint32_t code = code_of(w, rule);
    if (bits == 16) {
      out[2 * c] = static_cast<std::uint8_t>(code);
      out[2 * c + 1] = static_cast<std::uint8_t>(code >> 8);
    } else {
      std::uint8_t& byte = out[c / per_byte];
      if (c % per_byte == 0) byte = 0;
      byte |= static_cast<std::uint8_t>(code << ((c % per_byte) * unsigned(bits)));
    }
    if (!std::isfinite(w)) {
      ++t.nonfinite;
      t.first_nonfinite = std::min<std::uint64_t>(t.first_nonfinite, row_start + c);
      continue;
    }
    const double error = double(w) - double(levels[code]);
    t.signal += double(w) * double(w);
    t.noise += error * error;
    t.max_error = std::max(t.max_error, std::abs(error));
    t.inside += (w >= rule.params.inside_lo && w <= rule.params.inside_hi) ? 1u : 0u;
  }
}

#if defined(NUQ_QUANTIZE_AVX2)
constexpr std::size_t kSimdWidth = 8;

// As for AVX-512 below: at most 16 levels (two registers of levels), finite thresholds, no 16-bit codes.
bool simd_applies(const QuantizeTable& table) {
  if (table.bits > 8 || table.levels_count > 16) return false;
  return std::all_of(table.thresholds.begin(), table.thresholds.end(), [](float t) { return std::isfinite(t); });
}

// Eight codes (each < 2^bits) packed LSB-first into `bits` bytes at `out`: each code shifted to
// its place in a 32-bit word, then the lanes OR-ed together (their bits are disjoint). Eight 8-bit
// codes fill two words, one from each 128-bit half.
inline void pack8(__m256i codes, const __m256i& places, int bits, std::uint8_t* out) {
  const __m256i placed = _mm256_sllv_epi32(codes, places);
  __m128i lo = _mm256_castsi256_si128(placed), hi = _mm256_extracti128_si256(placed, 1);
  lo = _mm_or_si128(lo, _mm_shuffle_epi32(lo, 0x4E));
  lo = _mm_or_si128(lo, _mm_shuffle_epi32(lo, 0xB1));
  hi = _mm_or_si128(hi, _mm_shuffle_epi32(hi, 0x4E));
  hi = _mm_or_si128(hi, _mm_shuffle_epi32(hi, 0xB1));
  if (bits == 8) {
    const std::uint32_t words[2] = {std::uint32_t(_mm_cvtsi128_si32(lo)), std::uint32_t(_mm_cvtsi128_si32(hi))};
    std::memcpy(out, words, 8);
    return;
  }
  const std::uint32_t word = std::uint32_t(_mm_cvtsi128_si32(_mm_or_si128(lo, hi)));
  std::memcpy(out, &word, std::size_t(bits));  // 8 codes of `bits` bits: `bits` bytes (little-endian)
}

inline __m256d low_half(__m256 v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
inline __m256d high_half(__m256 v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }
inline __m256d abs_pd(__m256d v) { return _mm256_andnot_pd(_mm256_set1_pd(-0.0), v); }

// Columns [first, last) of a row, last - first a multiple of 8.
void quantize_span_simd(const float* row, std::size_t row_start, std::size_t first, std::size_t last,
                        const GroupRule& rule, const float* levels, int bits, std::uint8_t* out, QuantizeTotals& t) {
  __m256 thresholds[kLinearSearchLevels];
  const std::uint32_t count = rule.levels_count - 1;
  for (std::uint32_t i = 0; i < count; ++i) thresholds[i] = _mm256_set1_ps(rule.thresholds[i]);
  float padded[16] = {};
  std::copy(levels, levels + (std::size_t{1} << bits), padded);
  const __m256 levels_low = _mm256_loadu_ps(padded), levels_high = _mm256_loadu_ps(padded + 8);
  const bool two_registers = rule.levels_count > 8;
  const __m256 lo = _mm256_set1_ps(rule.params.inside_lo), hi = _mm256_set1_ps(rule.params.inside_hi);
  const __m256 infinity = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  const __m256 sign = _mm256_set1_ps(-0.0f);
  alignas(32) std::int32_t place[8];
  for (int i = 0; i < 8; ++i) place[i] = (i * bits) % 32;
  const __m256i places = _mm256_load_si256(reinterpret_cast<const __m256i*>(place));
  // Two accumulators per sum hide the latency of the double additions.
  __m256d signal[2] = {_mm256_setzero_pd(), _mm256_setzero_pd()}, noise[2] = {signal[0], signal[1]};
  __m256d max_error = _mm256_setzero_pd();
  std::uint64_t inside = 0;
  for (std::size_t c = first; c < last; c += kSimdWidth) {
    const __m256 w = _mm256_loadu_ps(row + c);
    std::uint8_t* dest = out + c / kSimdWidth * std::size_t(bits);
    if (_mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, w), infinity, _CMP_LT_OQ)) != 0xFF) {
      quantize_span(row, row_start, c, c + kSimdWidth, rule, levels, bits, out, t);  // NaN or Inf: the rule's branches
      continue;
    }
    __m256i code = _mm256_setzero_si256();
    for (std::uint32_t i = 0; i < count; ++i)  // a true comparison is all ones: -1
      code = _mm256_sub_epi32(code, _mm256_castps_si256(_mm256_cmp_ps(w, thresholds[i], _CMP_GE_OQ)));
    pack8(code, places, bits, dest);
    __m256 level = _mm256_permutevar8x32_ps(levels_low, code);
    if (two_registers)  // codes 8-15: bit 3 moved to the sign bit picks the second register
      level = _mm256_blendv_ps(level, _mm256_permutevar8x32_ps(levels_high, code),
                               _mm256_castsi256_ps(_mm256_slli_epi32(code, 28)));
    const __m256d w0 = low_half(w), w1 = high_half(w);
    const __m256d e0 = _mm256_sub_pd(w0, low_half(level)), e1 = _mm256_sub_pd(w1, high_half(level));
    signal[0] = _mm256_fmadd_pd(w0, w0, signal[0]);
    signal[1] = _mm256_fmadd_pd(w1, w1, signal[1]);
    noise[0] = _mm256_fmadd_pd(e0, e0, noise[0]);
    noise[1] = _mm256_fmadd_pd(e1, e1, noise[1]);
    max_error = _mm256_max_pd(max_error, _mm256_max_pd(abs_pd(e0), abs_pd(e1)));
    const __m256 in = _mm256_and_ps(_mm256_cmp_ps(w, lo, _CMP_GE_OQ), _mm256_cmp_ps(w, hi, _CMP_LE_OQ));
    inside += unsigned(__builtin_popcount(unsigned(_mm256_movemask_ps(in))));
  }
  alignas(32) double lanes[3][4];
  _mm256_store_pd(lanes[0], _mm256_add_pd(signal[0], signal[1]));
  _mm256_store_pd(lanes[1], _mm256_add_pd(noise[0], noise[1]));
  _mm256_store_pd(lanes[2], max_error);
  t.signal += (lanes[0][0] + lanes[0][1]) + (lanes[0][2] + lanes[0][3]);
  t.noise += (lanes[1][0] + lanes[1][1]) + (lanes[1][2] + lanes[1][3]);
  t.max_error = std::max({t.max_error, lanes[2][0], lanes[2][1], lanes[2][2], lanes[2][3]});
  t.inside += inside;
}
#endif

#if defined(NUQ_QUANTIZE_AVX512)
constexpr std::size_t kSimdWidth = 16;

// Whether sixteen-at-a-time compare-and-count applies: at most 16 levels (one register of levels,
// at most 15 thresholds), finite thresholds (a constant group's are infinite), no 16-bit codes.
bool simd_applies(const QuantizeTable& table) {
  if (table.bits > 8 || table.levels_count > 16) return false;
  return std::all_of(table.thresholds.begin(), table.thresholds.end(), [](float t) { return std::isfinite(t); });
}

// Sixteen codes (each < 2^bits) packed LSB-first into 16 * bits / 8 bytes at `out`.
inline void pack16(__m512i codes, int bits, std::uint8_t* out) {
  if (bits == 1) {
    const std::uint16_t mask = _mm512_test_epi32_mask(codes, codes);
    std::memcpy(out, &mask, 2);
    return;
  }
  __m128i bytes = _mm512_cvtepi32_epi8(codes);  // one code per byte
  if (bits == 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), bytes);
    return;
  }
  if (bits == 2) {  // pairs of 2-bit codes into nibbles: b0 + 4 * b1
    bytes = _mm_maddubs_epi16(bytes, _mm_set1_epi16(0x0401));
    bytes = _mm_packus_epi16(bytes, bytes);
  }
  // Pairs of nibbles into bytes: n0 + 16 * n1.
  bytes = _mm_packus_epi16(_mm_maddubs_epi16(bytes, _mm_set1_epi16(0x1001)), _mm_setzero_si128());
  if (bits == 4) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out), bytes);
  } else {
    const std::uint32_t word = static_cast<std::uint32_t>(_mm_cvtsi128_si32(bytes));
    std::memcpy(out, &word, 4);
  }
}

inline __m512d low_half(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
inline __m512d high_half(__m512 v) {
  return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

// Columns [first, last) of a row, last - first a multiple of 16.
void quantize_span_simd(const float* row, std::size_t row_start, std::size_t first, std::size_t last,
                        const GroupRule& rule, const float* levels, int bits, std::uint8_t* out, QuantizeTotals& t) {
  __m512 thresholds[kLinearSearchLevels];
  const std::uint32_t count = rule.levels_count - 1;
  for (std::uint32_t i = 0; i < count; ++i) thresholds[i] = _mm512_set1_ps(rule.thresholds[i]);
  float padded[16] = {};
  std::copy(levels, levels + (std::size_t{1} << bits), padded);
  const __m512 level_register = _mm512_loadu_ps(padded);
  const __m512 lo = _mm512_set1_ps(rule.params.inside_lo), hi = _mm512_set1_ps(rule.params.inside_hi);
  const __m512 infinity = _mm512_set1_ps(std::numeric_limits<float>::infinity());
  const __m512i one = _mm512_set1_epi32(1);
  __m512d signal = _mm512_setzero_pd(), noise = _mm512_setzero_pd(), max_error = _mm512_setzero_pd();
  std::uint64_t inside = 0;
  const std::size_t bytes_per_chunk = 2 * std::size_t(bits);
  for (std::size_t c = first; c < last; c += 16) {
    const __m512 w = _mm512_loadu_ps(row + c);
    std::uint8_t* dest = out + c / 16 * bytes_per_chunk;
    if (_mm512_cmp_ps_mask(_mm512_abs_ps(w), infinity, _CMP_LT_OQ) != 0xFFFF) {
      quantize_span(row, row_start, c, c + 16, rule, levels, bits, out, t);  // NaN or Inf inside: the rule's branches
      continue;
    }
    __m512i code = _mm512_setzero_si512();
    for (std::uint32_t i = 0; i < count; ++i)
      code = _mm512_mask_add_epi32(code, _mm512_cmp_ps_mask(w, thresholds[i], _CMP_GE_OQ), code, one);
    pack16(code, bits, dest);
    const __m512 level = _mm512_permutexvar_ps(code, level_register);
    const __m512d w0 = low_half(w), w1 = high_half(w);
    const __m512d e0 = _mm512_sub_pd(w0, low_half(level)), e1 = _mm512_sub_pd(w1, high_half(level));
    signal = _mm512_fmadd_pd(w0, w0, _mm512_fmadd_pd(w1, w1, signal));
    noise = _mm512_fmadd_pd(e0, e0, _mm512_fmadd_pd(e1, e1, noise));
    max_error = _mm512_max_pd(max_error, _mm512_max_pd(_mm512_abs_pd(e0), _mm512_abs_pd(e1)));
    inside += unsigned(__builtin_popcount(_mm512_mask_cmp_ps_mask(_mm512_cmp_ps_mask(w, lo, _CMP_GE_OQ), w, hi, _CMP_LE_OQ)));
  }
  t.signal += _mm512_reduce_add_pd(signal);
  t.noise += _mm512_reduce_add_pd(noise);
  t.max_error = std::max(t.max_error, _mm512_reduce_max_pd(max_error));
  t.inside += inside;
}
#endif

}  // namespace

QuantizeTotals quantize_fast(const float* values, std::size_t rows, std::size_t cols, const QuantizeTable& table,
                             std::uint8_t* packed) {
  NUQ_ASSERT(table.groups == 1 || table.groups == rows, table.groups, " groups for ", rows, " rows");
  const std::size_t row_bytes = packed_row_bytes(cols, table.bits);
  const std::size_t segments_per_row = std::max<std::size_t>(1, (cols + kSegmentCols - 1) / kSegmentCols);
  const auto items = static_cast<std::ptrdiff_t>(rows * segments_per_row);
#if defined(NUQ_QUANTIZE_AVX512) || defined(NUQ_QUANTIZE_AVX2)
  const bool simd = simd_applies(table);
#endif
  // One part per thread, joined in thread order (a static schedule gives each thread the same
  // items every run), so the sums are the same from run to run.
#if defined(_OPENMP)
  std::vector<QuantizeTotals> parts(static_cast<std::size_t>(omp_get_max_threads()));
#else
  std::vector<QuantizeTotals> parts(1);
#endif
#pragma omp parallel
  {
    QuantizeTotals mine;
#pragma omp for schedule(static) nowait
    for (std::ptrdiff_t item = 0; item < items; ++item) {
      const std::size_t r = std::size_t(item) / segments_per_row;
      const std::size_t first = std::size_t(item) % segments_per_row * kSegmentCols;
      const std::size_t last = std::min(cols, first + kSegmentCols);
      const std::size_t g = table.group_of_row(r);
      const GroupRule rule = table.rule(g);
      const float* row = values + r * cols;
      std::uint8_t* out = packed + r * row_bytes;
      std::size_t done = first;
#if defined(NUQ_QUANTIZE_AVX512) || defined(NUQ_QUANTIZE_AVX2)
      if (simd) {
        done = first + (last - first) / kSimdWidth * kSimdWidth;
        quantize_span_simd(row, r * cols, first, done, rule, table.group_levels(g), table.bits, out, mine);
      }
#endif
      quantize_span(row, r * cols, done, last, rule, table.group_levels(g), table.bits, out, mine);
    }
#if defined(_OPENMP)
    parts[std::size_t(omp_get_thread_num())] = mine;
#else
    parts[0] = mine;
#endif
  }
  QuantizeTotals totals;
  for (const QuantizeTotals& part : parts) totals = combine(totals, part);
  return totals;
}

}  // namespace nuq
