// One thread's share of the device weight pipeline, as plain functions compiled for the device
// (the kernels of weight_stats.cu and quantize.cu call them) and for the host (tests run the same
// loops thread by thread and compare with the CPU's reference). No CUDA header is included: under
// __CUDA_ARCH__ the loads become 16-byte vector loads through the read-only path and the stores
// whole 32/64/128-bit words; on the host they are plain copies.
//
// Arithmetic: each item's sums are FP32 over its 16 (32) weights, then added to the thread's
// double sums, so no thread carries a long FP32 sum. An item whose FP32 sums are not finite (a NaN
// or Inf weight, or one large enough to overflow a square) or too small for FP32's normal range (a
// tensor of tiny sigma) is redone weight by weight in double, exactly as the CPU reference does, so
// non-finite weights are counted and coded, and tiny ones summed, as on the CPU.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "nuq/quantize_rule.h"
#include "nuq/quantize_table.h"
#include "pipeline_layout.h"

// Loops over an item's weights are unrolled on the device, so its weights, sums and words stay in
// registers (constant indices); the rare paths are kept rolled and read the item again from memory.
#if defined(__CUDACC__)
#define NUQ_UNROLL _Pragma("unroll")
#define NUQ_ROLLED _Pragma("unroll 1")
#else
#define NUQ_UNROLL
#define NUQ_ROLLED
#endif

namespace nuq::pipeline {

NUQ_HOST_DEVICE inline bool finite(float x) { return x - x == 0.0f; }
NUQ_HOST_DEVICE inline bool finite(double x) { return x - x == 0.0; }

// An item's FP32 sum of squares below this came (at least in part) from squares under FP32's
// normal range (2^-126), whose digits are lost: such an item is summed again in double. A sum of
// 16 or 32 squares at or above it is off by at most 32 * 2^-150 from the subnormal ones, 2^-45 of it.
constexpr float kTinySum = 0x1p-100f;

// kVectors aligned float4 loads, all issued before any is used.
template <int Vectors>
NUQ_HOST_DEVICE inline void load_vectors(const float* p, float (&w)[4 * Vectors]) {
#if defined(__CUDA_ARCH__)
  const float4* v = reinterpret_cast<const float4*>(p);
  float4 q[Vectors];
#pragma unroll
  for (int k = 0; k < Vectors; ++k) q[k] = __ldg(v + k);
#pragma unroll
  for (int k = 0; k < Vectors; ++k) {
    w[4 * k] = q[k].x;
    w[4 * k + 1] = q[k].y;
    w[4 * k + 2] = q[k].z;
    w[4 * k + 3] = q[k].w;
  }
#else
  std::memcpy(w, p, sizeof(w));
#endif
}

// An item's code words to `p` (aligned to the item's size): one 32-, 64- or 128-bit store, or two.
template <int B>
NUQ_HOST_DEVICE inline void store_words(std::uint8_t* p, const std::uint32_t (&words)[Item<B>::kWords]) {
#if defined(__CUDA_ARCH__)
  if constexpr (Item<B>::kWords == 1) {
    *reinterpret_cast<std::uint32_t*>(p) = words[0];
  } else if constexpr (Item<B>::kWords == 2) {
    *reinterpret_cast<uint2*>(p) = make_uint2(words[0], words[1]);
  } else {
#pragma unroll
    for (int k = 0; k < Item<B>::kWords / 4; ++k)
      reinterpret_cast<uint4*>(p)[k] = make_uint4(words[4 * k], words[4 * k + 1], words[4 * k + 2], words[4 * k + 3]);
  }
#else
  std::memcpy(p, words, sizeof(words));
#endif
}

// ---- statistics ---------------------------------------------------------------------------------

// A thread's statistics: sums of x - K and (x - K)^2 in double about its own K (its first item's
// mean, within a few standard deviations of the data's), the count, the extremes, the non-finite.
struct StatsThread {
  double shift = 0.0, s1 = 0.0, s2 = 0.0;
  bool has_shift = false;
  unsigned long long count = 0, nonfinite = 0, first_nonfinite = ~0ull;
  float min = INFINITY, max = -INFINITY;

  // The thread's mean and sum of squared deviations (count > 0).
  NUQ_HOST_DEVICE double mean() const { return shift + s1 / double(count); }
  NUQ_HOST_DEVICE double m2() const { return fmax(0.0, s2 - s1 * s1 / double(count)); }

  // One weight in double, as the CPU's reference does (non-finite items and the tail).
  NUQ_HOST_DEVICE void add_exact(float x, unsigned long long index) {
    if (!finite(x)) {
      ++nonfinite;
      first_nonfinite = index < first_nonfinite ? index : first_nonfinite;
      return;
    }
    if (!has_shift) shift = x, has_shift = true;
    const double d = double(x) - shift;
    s1 += d;
    s2 += d * d;
    ++count;
    min = fminf(min, x);
    max = fmaxf(max, x);
  }

  // Sixteen weights: their FP32 mean m, then c = sum(x - m) and q = sum((x - m)^2) in FP32 (four
  // lanes of four, joined pairwise), so the FP32 sums are of deviations, not of raw values; then
  // sum(x - K) = c + 16 (m - K) and sum((x - K)^2) = q + 2 (m - K) c + 16 (m - K)^2 in double.
  // `from` is where x was loaded from: the rare path reads it again.
  NUQ_HOST_DEVICE void add_item(const float* from, const float (&x)[16], unsigned long long first_index) {
    float sum[4], lo[4], hi[4];
    NUQ_UNROLL
    for (int l = 0; l < 4; ++l) sum[l] = x[l], lo[l] = x[l], hi[l] = x[l];
    NUQ_UNROLL
    for (int v = 1; v < 4; ++v)
      NUQ_UNROLL
      for (int l = 0; l < 4; ++l) {
        sum[l] += x[4 * v + l];
        lo[l] = fminf(lo[l], x[4 * v + l]);
        hi[l] = fmaxf(hi[l], x[4 * v + l]);
      }
    const float m = ((sum[0] + sum[1]) + (sum[2] + sum[3])) * 0.0625f;
    float c[4] = {0.0f, 0.0f, 0.0f, 0.0f}, q[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    NUQ_UNROLL
    for (int v = 0; v < 4; ++v)
      NUQ_UNROLL
      for (int l = 0; l < 4; ++l) {
        const float d = x[4 * v + l] - m;
        c[l] += d;
        q[l] = fmaf(d, d, q[l]);
      }
    const float cs = (c[0] + c[1]) + (c[2] + c[3]);
    const float qs = (q[0] + q[1]) + (q[2] + q[3]);
    const float item_min = fminf(fminf(lo[0], lo[1]), fminf(lo[2], lo[3]));
    const float item_max = fmaxf(fmaxf(hi[0], hi[1]), fmaxf(hi[2], hi[3]));
    // Redone in double, the reference's way: a NaN or Inf among them, a square beyond FP32, or
    // deviations so small (below ~1e-15, a tensor of tiny sigma) that their squares fall out of
    // FP32's normal range and lose their digits (an item of equal weights has none to lose).
    if (!finite(qs) || (qs < kTinySum && item_min < item_max)) {
      NUQ_ROLLED
      for (int i = 0; i < 16; ++i) add_exact(from[i], first_index + unsigned(i));
      return;
    }
    if (!has_shift) shift = m, has_shift = true;
    const double dm = double(m) - shift;
    s1 += double(cs) + 16.0 * dm;
    s2 += double(qs) + dm * (2.0 * double(cs) + 16.0 * dm);
    count += 16;
    min = fminf(min, item_min);
    max = fmaxf(max, item_max);
  }
};

// The statistics of weights [0, count) at `values` (any alignment) taken by thread `thread` of
// `threads`: items of 16 aligned weights in a grid-stride loop; thread 0 also takes the weights
// before the first 16-byte boundary and the tail.
NUQ_HOST_DEVICE inline void stats_thread(const float* values, std::size_t count, unsigned long long index_offset,
                                         std::size_t thread, std::size_t threads, StatsThread& t) {
  const std::size_t misalignment = (reinterpret_cast<std::uintptr_t>(values) / sizeof(float)) % 4;
  const std::size_t head = misalignment == 0 ? 0 : (4 - misalignment < count ? 4 - misalignment : count);
  const std::size_t items = (count - head) >> 4;
  const float* body = values + head;
  for (std::size_t item = thread; item < items; item += threads) {
    float x[16];
    const float* from = body + (item << 4);
    load_vectors<4>(from, x);
    t.add_item(from, x, index_offset + head + (item << 4));
  }
  if (thread == 0) {
    for (std::size_t i = 0; i < head; ++i) t.add_exact(values[i], index_offset + i);
    for (std::size_t i = head + (items << 4); i < count; ++i) t.add_exact(values[i], index_offset + i);
  }
}

// ---- the fused quantize-pack-error pass ---------------------------------------------------------

// A table in host or device memory, as the kernels see it (thresholds and levels may have been
// staged into shared memory).
struct TableSource {
  const float* thresholds;    // [groups, levels_count - 1]
  const float* levels;        // [groups, 2^bits]
  const GroupParams* params;  // [groups]
  std::uint32_t levels_count;
  bool per_row;

  NUQ_HOST_DEVICE GroupRule rule(std::size_t group) const {
    return {thresholds + group * (levels_count - 1), levels_count, params[group]};
  }
  NUQ_HOST_DEVICE const float* group_levels(std::size_t group, int bits) const { return levels + (group << bits); }
};

// A thread's error totals: FP32 per item, double across items. The largest error is exact: the
// FP32 |w - level| only filters (rounding is monotonic, so an item holding the exact maximum has
// an FP32 maximum >= every earlier one), and the items that pass are redone in double.
struct ErrorThread {
  double signal = 0.0, noise = 0.0, max_error = 0.0;
  float max_rounded = 0.0f;
  // 32 bits: a thread of one wave (>= 256 threads) never takes 2^32 weights of a device's memory,
  // and a 64-bit count would cost two adds per weight (launch_quantize checks the bound).
  unsigned inside = 0;
  unsigned long long nonfinite = 0, first_nonfinite = ~0ull;

  // One weight, exactly as quantize_ref accumulates it.
  NUQ_HOST_DEVICE void add_exact(float w, float level, const GroupParams& p, unsigned long long index) {
    if (!finite(w)) {
      ++nonfinite;
      first_nonfinite = index < first_nonfinite ? index : first_nonfinite;
      return;
    }
    const double e = double(w) - double(level);
    signal += double(w) * double(w);
    noise += e * e;
    max_error = fmax(max_error, fabs(e));
    inside += (w >= p.inside_lo && w <= p.inside_hi) ? 1u : 0u;
  }

  NUQ_HOST_DEVICE QuantizeTotals totals() const {
    QuantizeTotals t;
    t.signal = signal;
    t.noise = noise;
    t.max_error = max_error;
    t.inside = inside;
    t.nonfinite = nonfinite;
    t.first_nonfinite = first_nonfinite;
    return t;
  }
};

// What an item needs of its group's rule. Up to 4 bits the thresholds sit in registers, padded
// with +Inf to 2^B - 1 (so they stay sorted), and a finite weight's code is the count of
// thresholds <= it (what code_of computes for it, by search or grid), found by a bisection of B
// compares; up to 2 bits the levels sit in registers too, chosen by the same compares.
template <int B>
struct ItemRule {
  static constexpr bool kRegisters = B <= 4;
  static constexpr int kThresholds = kRegisters ? (1 << B) - 1 : 1;
  static constexpr int kLevels = B <= 2 ? 1 << B : 1;
  GroupRule rule;
  const float* levels;
  float t[kThresholds];
  float level[kLevels];

  NUQ_HOST_DEVICE ItemRule(const GroupRule& r, const float* group_levels) : rule(r), levels(group_levels) {
    if constexpr (kRegisters) {
      NUQ_UNROLL
      for (int i = 0; i < kThresholds; ++i) t[i] = std::uint32_t(i) + 1 < r.levels_count ? r.thresholds[i] : INFINITY;
    }
    if constexpr (B <= 2) {
      NUQ_UNROLL
      for (int k = 0; k < kLevels; ++k) level[k] = group_levels[k];
    }
  }

  // The code of a finite weight and its level (any weight above 4 bits).
  NUQ_HOST_DEVICE std::uint32_t code(float w, float& w_level) const {
    if constexpr (B == 1) {
      const bool above = w >= t[0];
      w_level = above ? level[1] : level[0];
      return above ? 1u : 0u;
    } else if constexpr (B == 2) {
      // Bisection in two compares: the thresholds are sorted, so w >= t[1] implies w >= t[0], and
      // the count of thresholds <= w is 2 * (w >= t[1]) + (w >= (t[2] or t[0])).
      const bool upper = w >= t[1];
      const bool odd = w >= (upper ? t[2] : t[0]);
      w_level = upper ? (odd ? level[3] : level[2]) : (odd ? level[1] : level[0]);
      return (upper ? 2u : 0u) | (odd ? 1u : 0u);
    } else if constexpr (B == 4) {
      // The same bisection in four compares, each threshold chosen by selects from the bits found
      // so far (registers cannot be indexed): step j compares t[prefix + 2^(3-j) - 1].
      const bool a = w >= t[7];
      const bool b = w >= (a ? t[11] : t[3]);
      const bool c = w >= (a ? (b ? t[13] : t[9]) : (b ? t[5] : t[1]));
      const bool d = w >= (a ? (b ? (c ? t[14] : t[12]) : (c ? t[10] : t[8]))
                             : (b ? (c ? t[6] : t[4]) : (c ? t[2] : t[0])));
      const std::uint32_t k = (a ? 8u : 0u) | (b ? 4u : 0u) | (c ? 2u : 0u) | (d ? 1u : 0u);
      w_level = levels[k];
      return k;
    } else {
      const std::uint32_t k = code_of(w, rule);
      w_level = levels[k];
      return k;
    }
  }
};

// One item, loaded from `from` into w: codes packed into words as they are found and stored at
// `out`, the error sums of its weights (FP32 over the item, in four lanes joined pairwise) folded
// into the thread's. When its FP32 sums are not finite the item is redone from memory by the
// reference's rule, in double, its codes written byte by byte.
template <int B>
NUQ_HOST_DEVICE inline void quantize_item(const float* from, const float (&w)[Item<B>::kWeights],
                                          const ItemRule<B>& r, unsigned long long first_index, std::uint8_t* out,
                                          ErrorThread& t) {
  constexpr int kWeights = Item<B>::kWeights;
  std::uint32_t words[Item<B>::kWords];
  NUQ_UNROLL
  for (int k = 0; k < Item<B>::kWords; ++k) words[k] = 0;
  float signal[4] = {0.0f, 0.0f, 0.0f, 0.0f}, noise[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  float largest = 0.0f, magnitude = 0.0f;
  std::uint32_t inside = 0;
  const float lo = r.rule.params.inside_lo, hi = r.rule.params.inside_hi;
  NUQ_UNROLL
  for (int i = 0; i < kWeights; ++i) {
    float level;
    const std::uint32_t code = r.code(w[i], level);
    place_code<B>(words, i, code);
    const float e = w[i] - level;
    signal[i & 3] = fmaf(w[i], w[i], signal[i & 3]);
    noise[i & 3] = fmaf(e, e, noise[i & 3]);
    largest = fmaxf(largest, fabsf(e));
    magnitude = fmaxf(magnitude, fabsf(w[i]));
    inside += (w[i] >= lo && w[i] <= hi) ? 1u : 0u;
  }
  const float signal_sum = (signal[0] + signal[1]) + (signal[2] + signal[3]);
  const float noise_sum = (noise[0] + noise[1]) + (noise[2] + noise[3]);
  // Redone in double as the reference does: a non-finite sum, or one that squares too small for
  // FP32's normal range left without its digits (weights or errors below ~1e-15; all-zero weights
  // and errors are exact and stay on the fast path).
  const bool tiny = (magnitude > 0.0f && signal_sum < kTinySum) || (largest > 0.0f && noise_sum < kTinySum);
  if (!finite(signal_sum) || !finite(noise_sum) || tiny) {
    NUQ_ROLLED
    for (int i = 0; i < kWeights; ++i) {
      const std::uint32_t code = code_of(from[i], r.rule);
      put_code(out, std::size_t(i), B, code);
      t.add_exact(from[i], r.levels[code], r.rule.params, first_index + unsigned(i));
    }
    return;
  }
  store_words<B>(out, words);
  t.signal += double(signal_sum);
  t.noise += double(noise_sum);
  t.inside += inside;
  if (largest >= t.max_rounded) {  // rare after the first items: the exact maximum, in double
    t.max_rounded = largest;
    NUQ_ROLLED
    for (int i = 0; i < kWeights; ++i) {
      float level;
      r.code(from[i], level);
      t.max_error = fmax(t.max_error, fabs(double(from[i]) - double(level)));
    }
  }
}

// Where a piece sits in its matrix (for the indices of non-finite weights and per-row groups).
struct PieceShape {
  std::size_t rows = 0, cols = 0, first_row = 0;
  unsigned long long first_index = 0;  // index in the whole matrix of the piece's weight 0
  std::size_t total_cols = 0, first_col = 0;
};

// Whether a piece takes the flat word layout. Besides flat_layout_applies, the piece must be whole
// rows of its matrix (or one row) so that first_index + i is weight i's index in the matrix.
NUQ_HOST_DEVICE inline bool use_flat_layout(const PieceShape& piece, int bits, bool per_row, const void* values,
                                            const void* codes) {
  const bool whole_rows = piece.rows <= 1 || piece.cols == piece.total_cols;
  return whole_rows && flat_layout_applies(piece.rows, piece.cols, bits, per_row,
                                           reinterpret_cast<std::uintptr_t>(values),
                                           reinterpret_cast<std::uintptr_t>(codes));
}

// The flat word layout (pipeline_layout.h): thread `thread` of `threads` takes items thread,
// thread + threads, ...; thread 0 also packs the tail one weight at a time. With a per-row table
// an item's row is its index over the items per row (FastDivisor; items lie within one row).
template <int B, bool PerRow>
NUQ_HOST_DEVICE inline void quantize_flat_thread(const float* values, const PieceShape& piece,
                                                 const TableSource& table, std::uint8_t* packed,
                                                 std::size_t thread, std::size_t threads, ErrorThread& t) {
  const std::size_t count = piece.rows * piece.cols;
  const FlatPlan plan = flat_plan<B>(count);
  const FastDivisor items_per_row(std::uint32_t(piece.cols >> Item<B>::kLog2Weights) > 0
                                      ? std::uint32_t(piece.cols >> Item<B>::kLog2Weights)
                                      : 1u);
  const std::size_t group0 = PerRow ? piece.first_row : 0;
  const ItemRule<B> shared_rule(table.rule(group0), table.group_levels(group0, B));
  for (std::size_t item = thread; item < plan.items; item += threads) {
    float w[Item<B>::kWeights];
    const float* from = values + item_first_weight<B>(item);
    load_vectors<Item<B>::kVectors>(from, w);
    std::uint8_t* out = packed + item_first_byte<B>(item);
    const unsigned long long first_index = piece.first_index + item_first_weight<B>(item);
    if constexpr (PerRow) {
      const std::size_t group = piece.first_row + items_per_row.quotient(std::uint32_t(item));
      quantize_item<B>(from, w, ItemRule<B>(table.rule(group), table.group_levels(group, B)), first_index, out, t);
    } else {
      quantize_item<B>(from, w, shared_rule, first_index, out, t);
    }
  }
  if (thread == 0 && plan.tail > 0) {  // only one row can have a tail here: the last
    const std::size_t group = PerRow ? piece.first_row + piece.rows - 1 : 0;
    const GroupRule rule = table.rule(group);
    const float* levels = table.group_levels(group, B);
    for (std::size_t i = item_first_weight<B>(plan.items); i < count; ++i) {
      const std::uint32_t code = code_of(values[i], rule);
      put_code(packed, i, B, code);
      t.add_exact(values[i], levels[code], rule.params, piece.first_index + i);
    }
  }
}

// The unit layout: one output byte (one code at 8 and 16 bits) per unit, any shape and alignment.
template <int B>
NUQ_HOST_DEVICE inline void quantize_units_thread(const float* values, const PieceShape& piece,
                                                  const TableSource& table, std::uint8_t* packed,
                                                  std::size_t thread, std::size_t threads, ErrorThread& t) {
  const UnitPlan plan = unit_plan(piece.rows, piece.cols, B);
  for (std::size_t u = thread; u < plan.units; u += threads) {
    const Unit unit = unit_at(plan, std::uint32_t(u));
    const std::size_t row = piece.first_row + unit.row;
    const std::size_t group = table.per_row ? row : 0;
    const GroupRule rule = table.rule(group);
    const float* levels = table.group_levels(group, B);
    const float* from = values + std::size_t(unit.row) * piece.cols + unit.first_col;
    const unsigned long long index = row * piece.total_cols + piece.first_col + unit.first_col;
    std::uint32_t word = 0;
    for (std::uint32_t c = 0; c < unit.weights; ++c) {
      const std::uint32_t code = code_of(from[c], rule);
      word |= code << (c * unsigned(B));
      t.add_exact(from[c], levels[code], rule.params, index + c);
    }
    packed[unit.first_byte] = std::uint8_t(word);
    if (B == 16) packed[unit.first_byte + 1] = std::uint8_t(word >> 8);
  }
}

}  // namespace nuq::pipeline
