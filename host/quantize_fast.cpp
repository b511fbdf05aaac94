// The CPU backend's fast quantization pass: the weights are read once, and each sixteen (AVX-512)
// or thirty-two (AVX2) of them are compared with the thresholds, packed, looked up and accumulated
// in vector registers. The rule (nuq/quantize_rule.h) is the reference's: codes, the count inside
// and the largest error are bit-identical to quantize_ref's; the sums of squares agree to 4e-6
// (both sum blocks of weights in float, then the blocks in double).
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

#include "omp_threads.h"
#include "weight_loads.h"

namespace nuq {
namespace {

// A row is cut into segments of this many columns (a multiple of 16, so segments start on byte
// boundaries at every width), so that one wide row still spreads over the cores.
constexpr std::size_t kSegmentCols = 16384;

// Codes of one segment [first, last) of a row, one weight at a time (also the SIMD path's tails
// and the chunks that hold NaN or Inf).
template <typename E>
void quantize_span(const typename E::Stored* row, std::size_t row_start, std::size_t first, std::size_t last,
                   const GroupRule& rule, const float* levels, int bits, std::uint8_t* out, QuantizeTotals& t) {
  const unsigned per_byte = bits < 8 ? 8u / unsigned(bits) : 1u;
  for (std::size_t c = first; c < last; ++c) {
    const float w = E::at(row, c);
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

#if defined(NUQ_QUANTIZE_AVX512) || defined(NUQ_QUANTIZE_AVX2)
// Whether a block's float sum of squares holds every term: a sum below 2^-90 may have lost terms
// to underflow (squares under FLT_MIN, 2^-126, at most 1024 of them: under 2^-116 in all, 2^-26 of
// 2^-90), and NaN, Inf or squares past the float range leave it not finite. A block without noise
// is summed again too, as its float zero may hide the reference's tiny sum. Untrusted blocks are
// summed again in double.
inline bool trusted(float block_sum) {
  return block_sum >= 0x1p-90f && block_sum <= std::numeric_limits<float>::max();
}
#endif

#if defined(NUQ_QUANTIZE_AVX2)
// Thirty-two weights a step (four registers of eight), so that their codes pack into whole bytes
// with a few byte shuffles. The sums are kept in float over blocks of kBlockWeights and added to
// the double totals after each block: the per-weight widening to double cost more than the
// comparisons themselves, and 16 partial sums (two registers) of 64 terms each lose at most
// 63 float roundings, under 4e-6 of the total (about 1e-7 in practice).
constexpr std::size_t kSimdWidth = 32;
constexpr std::size_t kBlockWeights = 1024;

// As for AVX-512 below: at most 16 levels (two registers of levels), finite thresholds, no 16-bit codes.
bool simd_applies(const QuantizeTable& table) {
  if (table.bits > 8 || table.levels_count > 16) return false;
  return std::all_of(table.thresholds.begin(), table.thresholds.end(), [](float t) { return std::isfinite(t); });
}

// The 32 codes of c[0..3] (one per 32-bit lane, each < 2^Bits, in order) packed LSB-first into
// 4 * Bits bytes at `out`. First one byte per code: the packs interleave the two 128-bit halves of
// their operands and the permutation puts the four-code runs back in order.
template <int Bits>
inline void pack32(const __m256i c[4], std::uint8_t* out) {
  const __m256i in_order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i bytes = _mm256_permutevar8x32_epi32(
      _mm256_packus_epi16(_mm256_packs_epi32(c[0], c[1]), _mm256_packs_epi32(c[2], c[3])), in_order);
  if constexpr (Bits == 8) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), bytes);
  } else if constexpr (Bits == 1) {  // each code's bit to its byte's sign bit
    const auto mask = static_cast<std::uint32_t>(_mm256_movemask_epi8(_mm256_slli_epi16(bytes, 7)));
    std::memcpy(out, &mask, 4);
  } else if constexpr (Bits == 4) {  // b0 + 16 * b1 in each 16-bit word, then one byte each
    const __m256i nibbles = _mm256_maddubs_epi16(bytes, _mm256_set1_epi16(0x1001));
    const __m256i packed = _mm256_packus_epi16(nibbles, nibbles);  // each half: its 8 bytes twice
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08)));
  } else {
    static_assert(Bits == 2, "codes of 1, 2, 4 or 8 bits");
    const __m256i pairs = _mm256_maddubs_epi16(bytes, _mm256_set1_epi16(0x0401));    // b0 + 4 * b1
    const __m256i quads = _mm256_madd_epi16(pairs, _mm256_set1_epi32(0x00100001));  // p0 + 16 * p1
    const __m256i low_bytes = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,  //
                                               0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m256i joined = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(quads, low_bytes), in_order);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm256_castsi256_si128(joined));
  }
}

// One group's rule in registers: the code of eight weights (compare and count) and their levels.
struct SimdRule {
  __m256 thresholds[kLinearSearchLevels];
  std::uint32_t count;
  __m256 levels_low, levels_high;
  bool two_registers;

  SimdRule(const GroupRule& rule, const float* levels)
      : count(rule.levels_count - 1), two_registers(rule.levels_count > 8) {
    for (std::uint32_t i = 0; i < count; ++i) thresholds[i] = _mm256_set1_ps(rule.thresholds[i]);
    float padded[16] = {};  // codes reach levels_count - 1 <= 15 (simd_applies)
    std::copy(levels, levels + std::min<std::uint32_t>(rule.levels_count, 16), padded);
    levels_low = _mm256_loadu_ps(padded);
    levels_high = _mm256_loadu_ps(padded + 8);
  }
  // Count > 0: that many thresholds, known when compiled (the loop unrolled); 0: `count`.
  template <int Count = 0>
  __m256i code(__m256 w) const {
    __m256i code = _mm256_setzero_si256();
    const std::uint32_t n = Count > 0 ? std::uint32_t(Count) : count;
#pragma GCC unroll 16
    for (std::uint32_t i = 0; i < n; ++i)  // a true comparison is all ones: -1
      code = _mm256_sub_epi32(code, _mm256_castps_si256(_mm256_cmp_ps(w, thresholds[i], _CMP_GE_OQ)));
    return code;
  }
  __m256 level(__m256i code) const {
    const __m256 level = _mm256_permutevar8x32_ps(levels_low, code);
    if (!two_registers) return level;
    // Codes 8-15: bit 3 moved to the sign bit picks the second register.
    return _mm256_blendv_ps(level, _mm256_permutevar8x32_ps(levels_high, code),
                            _mm256_castsi256_ps(_mm256_slli_epi32(code, 28)));
  }
};

inline float sum_lanes(__m256 v) {
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, v);
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

// max |w - level| over columns [first, last) of a finite block, the difference taken in double as
// the reference takes it. The float maximum rounds the same maximum, so it only runs for a block
// whose float maximum could beat the largest error so far: a handful of blocks per call.
template <typename E>
double exact_max_error(const typename E::Stored* row, std::size_t first, std::size_t last, const SimdRule& rule) {
  const __m256d magnitude = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7FFFFFFFFFFFFFFF));
  __m256d worst = _mm256_setzero_pd();
  for (std::size_t c = first; c < last; c += 8) {
    const __m256 w = E::load8(row + c), level = rule.level(rule.code(w));
    const __m256d e0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(w)), _mm256_cvtps_pd(_mm256_castps256_ps128(level)));
    const __m256d e1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(w, 1)), _mm256_cvtps_pd(_mm256_extractf128_ps(level, 1)));
    worst = _mm256_max_pd(worst, _mm256_max_pd(_mm256_and_pd(e0, magnitude), _mm256_and_pd(e1, magnitude)));
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, worst);
  return std::max({lanes[0], lanes[1], lanes[2], lanes[3]});
}

// Columns [first, last) of a row, last - first a multiple of 32, first a multiple of 32.
// Count: the thresholds, when every code of the width is used (2^Bits - 1), or 0 for any number.
template <int Bits, typename E, int Count>
void quantize_span_simd(const typename E::Stored* row, std::size_t row_start, std::size_t first, std::size_t last,
                        const GroupRule& group, const float* levels, std::uint8_t* out, QuantizeTotals& t) {
  const SimdRule rule(group, levels);
  const __m256 lo = _mm256_set1_ps(group.params.inside_lo), hi = _mm256_set1_ps(group.params.inside_hi);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (std::size_t block = first; block < last; block += kBlockWeights) {
    const std::size_t end = std::min(last, block + kBlockWeights);
    // Two accumulators a sum (more would not stay in the 16 registers beside the rule's).
    __m256 signal[2], noise[2];
    for (int u = 0; u < 2; ++u) signal[u] = noise[u] = _mm256_setzero_ps();
    __m256 worst = _mm256_setzero_ps();
    __m256i inside = _mm256_setzero_si256();
    for (std::size_t c = block; c < end; c += kSimdWidth) {
      __m256i codes[4];
#pragma GCC unroll 4
      for (int u = 0; u < 4; ++u) {
        const __m256 w = E::load8(row + c + 8 * std::size_t(u));
        codes[u] = rule.template code<Count>(w);
        const __m256 e = _mm256_sub_ps(w, rule.level(codes[u]));
        signal[u % 2] = _mm256_fmadd_ps(w, w, signal[u % 2]);
        noise[u % 2] = _mm256_fmadd_ps(e, e, noise[u % 2]);
        worst = _mm256_max_ps(worst, _mm256_andnot_ps(sign, e));
        const __m256 in = _mm256_and_ps(_mm256_cmp_ps(w, lo, _CMP_GE_OQ), _mm256_cmp_ps(w, hi, _CMP_LE_OQ));
        inside = _mm256_sub_epi32(inside, _mm256_castps_si256(in));
      }
      pack32<Bits>(codes, out + c / 8 * Bits);
    }
    const float block_signal = sum_lanes(_mm256_add_ps(signal[0], signal[1]));
    const float block_noise = sum_lanes(_mm256_add_ps(noise[0], noise[1]));
    // A sum that may have lost terms to underflow, or is not finite (NaN or Inf among the weights,
    // or squares past the float range): the block again, one weight at a time, by the rule's
    // branches and in double.
    if (!trusted(block_signal) || !trusted(block_noise)) {
      quantize_span<E>(row, row_start, block, end, group, levels, Bits, out, t);
      continue;
    }
    t.signal += double(block_signal);
    t.noise += double(block_noise);
    alignas(32) std::int32_t counts[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(counts), inside);
    for (std::int32_t n : counts) t.inside += std::uint64_t(n);
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, worst);
    if (*std::max_element(lanes, lanes + 8) >= static_cast<float>(t.max_error))
      t.max_error = std::max(t.max_error, exact_max_error<E>(row, block, end, rule));
  }
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

// One group's rule in registers: the code of sixteen weights (compare and count), their levels and
// whether they lie inside the support region. Count > 0: that many thresholds, known when compiled
// (the loop unrolled); 0: the rule's own count.
template <int Count>
struct SimdRule {
  __m512 thresholds[kLinearSearchLevels];
  std::uint32_t count;
  __m512 levels, lo, hi;

  SimdRule(const GroupRule& rule, const float* group_levels)
      : count(Count > 0 ? std::uint32_t(Count) : rule.levels_count - 1),
        lo(_mm512_set1_ps(rule.params.inside_lo)), hi(_mm512_set1_ps(rule.params.inside_hi)) {
    for (std::uint32_t i = 0; i < count; ++i) thresholds[i] = _mm512_set1_ps(rule.thresholds[i]);
    // Codes < levels_count <= 16 (simd_applies): the lanes past them are never looked up.
    levels = _mm512_maskz_loadu_ps(__mmask16((1u << std::min<std::uint32_t>(rule.levels_count, 16)) - 1), group_levels);
  }
  __m512i code(__m512 w) const {
    __m512i code = _mm512_setzero_si512();
#pragma GCC unroll 16
    for (std::uint32_t i = 0; i < count; ++i)
      code = _mm512_mask_add_epi32(code, _mm512_cmp_ps_mask(w, thresholds[i], _CMP_GE_OQ), code, _mm512_set1_epi32(1));
    return code;
  }
  __m512 level(__m512i code) const { return _mm512_permutexvar_ps(code, levels); }
  __mmask16 inside(__m512 w) const { return _mm512_mask_cmp_ps_mask(_mm512_cmp_ps_mask(w, lo, _CMP_GE_OQ), w, hi, _CMP_LE_OQ); }
};

// Columns [first, last) of a row (a multiple of 16 apart) with every sum in double, sixteen weights
// at a time, and any sixteen that hold NaN or Inf one weight at a time by the rule's branches: the
// blocks whose float sums could not be trusted.
template <typename E, int Count>
void quantize_block_in_double(const typename E::Stored* row, std::size_t row_start, std::size_t first,
                              std::size_t last, const SimdRule<Count>& rule, const GroupRule& group,
                              const float* levels, int bits, std::uint8_t* out, QuantizeTotals& t) {
  const __m512 infinity = _mm512_set1_ps(std::numeric_limits<float>::infinity());
  __m512d signal = _mm512_setzero_pd(), noise = _mm512_setzero_pd(), max_error = _mm512_setzero_pd();
  std::uint64_t inside = 0;
  for (std::size_t c = first; c < last; c += 16) {
    const __m512 w = E::load16(row + c);
    if (_mm512_cmp_ps_mask(_mm512_abs_ps(w), infinity, _CMP_LT_OQ) != 0xFFFF) {
      quantize_span<E>(row, row_start, c, c + 16, group, levels, bits, out, t);
      continue;
    }
    const __m512i code = rule.code(w);
    pack16(code, bits, out + c / 16 * 2 * std::size_t(bits));
    const __m512 level = rule.level(code);
    const __m512d w0 = low_half(w), w1 = high_half(w);
    const __m512d e0 = _mm512_sub_pd(w0, low_half(level)), e1 = _mm512_sub_pd(w1, high_half(level));
    signal = _mm512_fmadd_pd(w0, w0, _mm512_fmadd_pd(w1, w1, signal));
    noise = _mm512_fmadd_pd(e0, e0, _mm512_fmadd_pd(e1, e1, noise));
    max_error = _mm512_max_pd(max_error, _mm512_max_pd(_mm512_abs_pd(e0), _mm512_abs_pd(e1)));
    inside += unsigned(__builtin_popcount(rule.inside(w)));
  }
  t.signal += _mm512_reduce_add_pd(signal);
  t.noise += _mm512_reduce_add_pd(noise);
  t.max_error = std::max(t.max_error, _mm512_reduce_max_pd(max_error));
  t.inside += inside;
}

// max |w - level| over columns [first, last) of a finite block, the difference taken in double as
// the reference takes it. The float maximum rounds the same maximum (rounding is monotonic), so
// this runs only for a block whose float maximum could beat the largest error so far.
template <typename E, int Count>
double exact_max_error(const typename E::Stored* row, std::size_t first, std::size_t last, const SimdRule<Count>& rule) {
  __m512d worst = _mm512_setzero_pd();
  for (std::size_t c = first; c < last; c += 16) {
    const __m512 w = E::load16(row + c), level = rule.level(rule.code(w));
    worst = _mm512_max_pd(worst, _mm512_abs_pd(_mm512_sub_pd(low_half(w), low_half(level))));
    worst = _mm512_max_pd(worst, _mm512_abs_pd(_mm512_sub_pd(high_half(w), high_half(level))));
  }
  return _mm512_reduce_max_pd(worst);
}

// Columns [first, last) of a row, last - first a multiple of 16. The sums are kept in float over
// blocks of kBlockWeights (two registers of partial sums, 32 terms a lane) and added to the double
// totals after each block, as on AVX2: widening every weight to double cost a fifth of a
// checkpoint's quantization pass, and the float partial sums lose under 4e-6 of a total (about
// 1e-7 in practice).
constexpr std::size_t kBlockWeights = 1024;
// One block's sums in float: its codes written as its weights are met, span after span (of one
// rule each), then judged and added to the totals.
template <typename E>
struct BlockSums {
  __m512 signal[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()}, noise[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  __m512 worst = _mm512_setzero_ps();
  __m512i inside = _mm512_setzero_si512();
  float signal_sum = 0.0f, noise_sum = 0.0f;

  // Columns [first, last) of `row` (a multiple of 16 apart) by `rule`, their codes packed into `out`.
  template <int Count>
  void add(const typename E::Stored* row, std::size_t first, std::size_t last, const SimdRule<Count>& rule, int bits,
           std::uint8_t* out) {
    const __m512i one = _mm512_set1_epi32(1);
    const std::size_t bytes_per_chunk = 2 * std::size_t(bits);
    std::size_t c = first;
    for (; c + 32 <= last; c += 32)  // two chains of sums (their latency, not the work, bounds one)
      for (int u = 0; u < 2; ++u) step(E::load16(row + c + 16 * std::size_t(u)), rule, bits, out + (c / 16 + std::size_t(u)) * bytes_per_chunk, u, one);
    if (c < last) step(E::load16(row + c), rule, bits, out + c / 16 * bytes_per_chunk, 0, one);
  }
  // Whether the float sums hold every term (then kept for add_to).
  bool trusted() {
    signal_sum = _mm512_reduce_add_ps(_mm512_add_ps(signal[0], signal[1]));
    noise_sum = _mm512_reduce_add_ps(_mm512_add_ps(noise[0], noise[1]));
    return nuq::trusted(signal_sum) && nuq::trusted(noise_sum);
  }
  // Adds the block's sums and count to `t`; true where its float maximum error could beat t's, so
  // that the caller finds the exact one.
  bool add_to(QuantizeTotals& t) const {
    t.signal += double(signal_sum);
    t.noise += double(noise_sum);
    t.inside += std::uint64_t(_mm512_reduce_add_epi32(inside));
    return _mm512_reduce_max_ps(worst) >= static_cast<float>(t.max_error);
  }

 private:
  template <int Count>
  void step(__m512 w, const SimdRule<Count>& rule, int bits, std::uint8_t* out, int u, __m512i one) {
    const __m512i code = rule.code(w);
    pack16(code, bits, out);
    const __m512 e = _mm512_sub_ps(w, rule.level(code));
    signal[u] = _mm512_fmadd_ps(w, w, signal[u]);
    noise[u] = _mm512_fmadd_ps(e, e, noise[u]);
    worst = _mm512_max_ps(worst, _mm512_abs_ps(e));
    inside = _mm512_mask_add_epi32(inside, rule.inside(w), inside, one);
  }
};

template <typename E, int Count>
void quantize_span_simd(const typename E::Stored* row, std::size_t row_start, std::size_t first, std::size_t last,
                        const GroupRule& group, const float* levels, int bits, std::uint8_t* out, QuantizeTotals& t) {
  const SimdRule<Count> rule(group, levels);
  for (std::size_t block = first; block < last; block += kBlockWeights) {
    const std::size_t end = std::min(last, block + kBlockWeights);
    BlockSums<E> block_sums;
    block_sums.add(row, block, end, rule, bits, out);
    if (!block_sums.trusted()) {
      quantize_block_in_double<E, Count>(row, row_start, block, end, rule, group, levels, bits, out, t);
      continue;
    }
    if (block_sums.add_to(t)) t.max_error = std::max(t.max_error, exact_max_error<E, Count>(row, block, end, rule));
  }
}

// Rows [first_row, last_row) of a table with a group per row, each `cols` weights (a multiple of
// 16, under kBlockWeights): a tensor in groups of 128 weights is quantized as rows of 128, and
// summing, reducing and checking each such row on its own cost a quarter of the pass. Here the
// float sums run over blocks of whole rows of about kBlockWeights weights, each row by its rule.
template <typename E, int Count>
void quantize_short_rows_simd(const typename E::Stored* values, std::size_t first_row, std::size_t last_row,
                              std::size_t cols, const QuantizeTable& table, std::uint8_t* packed, QuantizeTotals& t) {
  const std::size_t row_bytes = packed_row_bytes(cols, table.bits);
  const std::size_t rows_per_block = std::max<std::size_t>(1, kBlockWeights / cols);
  const auto rule_of = [&](std::size_t r) { return SimdRule<Count>(table.rule(r), table.group_levels(r)); };
  for (std::size_t block = first_row; block < last_row; block += rows_per_block) {
    const std::size_t end = std::min(last_row, block + rows_per_block);
    BlockSums<E> block_sums;
    for (std::size_t r = block; r < end; ++r)
      block_sums.add(values + r * cols, 0, cols, rule_of(r), table.bits, packed + r * row_bytes);
    if (!block_sums.trusted()) {
      for (std::size_t r = block; r < end; ++r)
        quantize_block_in_double<E, Count>(values + r * cols, r * cols, 0, cols, rule_of(r), table.rule(r),
                                           table.group_levels(r), table.bits, packed + r * row_bytes, t);
      continue;
    }
    if (block_sums.add_to(t))
      for (std::size_t r = block; r < end; ++r)
        t.max_error = std::max(t.max_error, exact_max_error<E, Count>(values + r * cols, 0, cols, rule_of(r)));
  }
}
#endif

#if defined(NUQ_QUANTIZE_AVX2)
// The width is a template parameter of the AVX2 path (its packing is written per width).
template <typename E>
void quantize_span_simd_of_width(const typename E::Stored* row, std::size_t row_start, std::size_t first,
                                 std::size_t last, const GroupRule& rule, const float* levels, int bits,
                                 std::uint8_t* out, QuantizeTotals& t) {
  // Every code of the width used (the usual case): the threshold count compiled in.
  const bool full = rule.levels_count == (1u << bits);
  switch (bits) {
    case 1:
      return full ? quantize_span_simd<1, E, 1>(row, row_start, first, last, rule, levels, out, t)
                  : quantize_span_simd<1, E, 0>(row, row_start, first, last, rule, levels, out, t);
    case 2:
      return full ? quantize_span_simd<2, E, 3>(row, row_start, first, last, rule, levels, out, t)
                  : quantize_span_simd<2, E, 0>(row, row_start, first, last, rule, levels, out, t);
    case 4:
      return full ? quantize_span_simd<4, E, 15>(row, row_start, first, last, rule, levels, out, t)
                  : quantize_span_simd<4, E, 0>(row, row_start, first, last, rule, levels, out, t);
    case 8: return quantize_span_simd<8, E, 0>(row, row_start, first, last, rule, levels, out, t);
    default: NUQ_ASSERT(false, "no packing of ", bits, "-bit codes");
  }
}
#elif defined(NUQ_QUANTIZE_AVX512)
template <typename E>
void quantize_short_rows_of_width(const typename E::Stored* values, std::size_t first_row, std::size_t last_row,
                                  std::size_t cols, const QuantizeTable& table, std::uint8_t* packed, QuantizeTotals& t) {
  switch (table.levels_count == (1u << table.bits) ? table.bits : 0) {
    case 1: return quantize_short_rows_simd<E, 1>(values, first_row, last_row, cols, table, packed, t);
    case 2: return quantize_short_rows_simd<E, 3>(values, first_row, last_row, cols, table, packed, t);
    case 4: return quantize_short_rows_simd<E, 15>(values, first_row, last_row, cols, table, packed, t);
    default: return quantize_short_rows_simd<E, 0>(values, first_row, last_row, cols, table, packed, t);
  }
}

template <typename E>
void quantize_span_simd_of_width(const typename E::Stored* row, std::size_t row_start, std::size_t first,
                                 std::size_t last, const GroupRule& rule, const float* levels, int bits,
                                 std::uint8_t* out, QuantizeTotals& t) {
  // Every code of the width used (the usual case): the threshold count compiled in.
  const bool full = rule.levels_count == (1u << bits);
  switch (full ? bits : 0) {
    case 1: return quantize_span_simd<E, 1>(row, row_start, first, last, rule, levels, bits, out, t);
    case 2: return quantize_span_simd<E, 3>(row, row_start, first, last, rule, levels, bits, out, t);
    case 4: return quantize_span_simd<E, 15>(row, row_start, first, last, rule, levels, bits, out, t);
    default: return quantize_span_simd<E, 0>(row, row_start, first, last, rule, levels, bits, out, t);
  }
}
#endif

template <typename E>
QuantizeTotals quantize_as(const typename E::Stored* values, std::size_t rows, std::size_t cols,
                           const QuantizeTable& table, std::uint8_t* packed) {
  NUQ_ASSERT(table.groups == 1 || table.groups == rows, table.groups, " groups for ", rows, " rows");
  const std::size_t row_bytes = packed_row_bytes(cols, table.bits);
  const std::size_t segments_per_row = std::max<std::size_t>(1, (cols + kSegmentCols - 1) / kSegmentCols);
  const auto items = static_cast<std::ptrdiff_t>(rows * segments_per_row);
#if defined(NUQ_QUANTIZE_AVX512) || defined(NUQ_QUANTIZE_AVX2)
  const bool simd = simd_applies(table);
#endif
  // Runs of items of about 64 Ki weights over the cores, each in order on one thread, joined in
  // order: the same totals for every thread count (omp_threads.h).
  const std::size_t item_cols = std::max<std::size_t>(1, std::min(cols, kSegmentCols));
  const std::size_t per_run = std::max<std::size_t>(1, (std::size_t{1} << 16) / item_cols);
  const std::size_t runs = (std::size_t(items) + per_run - 1) / per_run;
#if defined(NUQ_QUANTIZE_AVX512)
  // Rows of a group each (groups of 128 weights), short enough to share a block of float sums.
  const bool short_rows = simd && table.groups == rows && rows > 1 && cols > 0 && cols % 16 == 0 && cols < kBlockWeights;
#endif
  return ordered_sum<QuantizeTotals>(
      runs,
      [&](std::size_t run) {
        QuantizeTotals mine;
#if defined(NUQ_QUANTIZE_AVX512)
        if (short_rows) {  // one segment a row: items are rows
          quantize_short_rows_of_width<E>(values, run * per_run, std::min(std::size_t(items), (run + 1) * per_run), cols,
                                          table, packed, mine);
          return mine;
        }
#endif
        for (std::size_t item = run * per_run; item < std::min(std::size_t(items), (run + 1) * per_run); ++item) {
          const std::size_t r = item / segments_per_row;
          const std::size_t first = item % segments_per_row * kSegmentCols;
          const std::size_t last = std::min(cols, first + kSegmentCols);
          const std::size_t g = table.group_of_row(r);
          const GroupRule rule = table.rule(g);
          const typename E::Stored* row = values + r * cols;
          std::uint8_t* out = packed + r * row_bytes;
          std::size_t done = first;
#if defined(NUQ_QUANTIZE_AVX512) || defined(NUQ_QUANTIZE_AVX2)
          if (simd) {
            done = first + (last - first) / kSimdWidth * kSimdWidth;
            quantize_span_simd_of_width<E>(row, r * cols, first, done, rule, table.group_levels(g), table.bits, out, mine);
          }
#endif
          quantize_span<E>(row, r * cols, done, last, rule, table.group_levels(g), table.bits, out, mine);
        }
        return mine;
      },
      [](const QuantizeTotals& x, const QuantizeTotals& y) { return combine(x, y); });
}

}  // namespace

QuantizeTotals quantize_fast(const float* values, std::size_t rows, std::size_t cols, const QuantizeTable& table,
                             std::uint8_t* packed) {
  return quantize_as<loads::F32>(values, rows, cols, table, packed);
}

QuantizeTotals quantize_fast(const void* values, WeightType type, std::size_t rows, std::size_t cols,
                             const QuantizeTable& table, std::uint8_t* packed) {
  return loads::with_element(values, type, [&](auto element, const auto* stored) {
    return quantize_as<decltype(element)>(stored, rows, cols, table, packed);
  });
}

}  // namespace nuq
