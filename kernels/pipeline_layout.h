// Where each weight of the device's weight pipeline goes: the index and packing maps of the CUDA
// statistics and quantization kernels as plain functions (NUQ_HOST_DEVICE), so that the host
// tests run them exhaustively against the packed layout the CPU writes (nuq/packed.h) before any
// kernel does.
//
// Two layouts cover every piece:
//  - the flat word layout: when every row's codes fill whole bytes (cols * bits % 8 == 0) or there
//    is one row, the packed rows of a piece are one contiguous bit stream and weight i's code sits
//    at bit i * bits of it. A thread then takes an *item*: kVectors aligned 16-byte loads of
//    consecutive weights whose codes make whole 32-bit words, found from the item's index by
//    shifts alone; the weights after the last whole item (the tail) are packed byte by byte.
//  - the unit layout, for everything else (rows padded to a byte, per-row codebooks whose rows do
//    not hold whole items, unaligned pointers): one output byte (or one 8/16-bit code) per unit,
//    the unit's row found with a multiply by a precomputed reciprocal (FastDivisor), not a
//    division.
#pragma once

#include <cstddef>
#include <cstdint>

#include "nuq/host_device.h"

namespace nuq::pipeline {

// Widths the packed layout stores (nuq/packed.h): 3 bits are stored in 4, 5-7 in 8, 9-15 in 16.
constexpr bool is_stored_width(int bits) { return bits == 1 || bits == 2 || bits == 4 || bits == 8 || bits == 16; }

// One thread's item in the flat word layout at stored width B: four (eight at one bit) float4
// loads in flight, 16 (32) weights, whose codes fill kWords whole 32-bit words.
template <int B>
struct Item {
  static_assert(is_stored_width(B), "a stored width");
  static constexpr int kVectors = B == 1 ? 8 : 4;
  static constexpr int kWeights = 4 * kVectors;
  static constexpr int kLog2Weights = B == 1 ? 5 : 4;
  static constexpr int kBytes = kWeights * B / 8;  // 4, 4, 8, 16, 32
  static constexpr int kLog2Bytes = B == 1 ? 2 : B == 2 ? 2 : B == 4 ? 3 : B == 8 ? 4 : 5;
  static constexpr int kWords = kBytes / 4;
  static_assert(kWeights == 1 << kLog2Weights && kBytes == 1 << kLog2Bytes, "shifts, not divisions");
};

// The first weight and the first code byte of item `item` (relative to the piece).
template <int B>
NUQ_HOST_DEVICE inline std::size_t item_first_weight(std::size_t item) {
  return item << Item<B>::kLog2Weights;
}
template <int B>
NUQ_HOST_DEVICE inline std::size_t item_first_byte(std::size_t item) {
  return item << Item<B>::kLog2Bytes;
}

// Weight i of an item goes to word i * B / 32 at bit (i * B) % 32 (LSB first; the words are
// stored little-endian, so byte k of the item holds weights k * 8 / B .. as nuq/packed.h says).
// The kernels place each code as they find it (unrolled, so i is a constant and the words stay in
// registers); pack_item is the same map over a whole item.
template <int B>
NUQ_HOST_DEVICE inline void place_code(std::uint32_t (&words)[Item<B>::kWords], int i, std::uint32_t code) {
  words[(i * B) >> 5] |= code << ((i * B) & 31);
}
template <int B>
NUQ_HOST_DEVICE inline void pack_item(const std::uint32_t (&codes)[Item<B>::kWeights],
                                      std::uint32_t (&words)[Item<B>::kWords]) {
  for (int w = 0; w < Item<B>::kWords; ++w) words[w] = 0;
  for (int i = 0; i < Item<B>::kWeights; ++i) place_code<B>(words, i, codes[i]);
}

// A code of the tail (weights past the last whole item, packed one at a time): its first byte
// and its bit within that byte. At 16 bits the code also fills the next byte.
NUQ_HOST_DEVICE inline std::size_t code_byte(std::size_t weight, int bits) { return (weight * unsigned(bits)) >> 3; }
NUQ_HOST_DEVICE inline unsigned code_bit(std::size_t weight, int bits) { return unsigned(weight * unsigned(bits)) & 7u; }

// Writes code `code` of weight `weight` into a stream whose bytes before it are already written
// (or zero) and whose own byte may hold garbage: the first code of a byte clears it.
NUQ_HOST_DEVICE inline void put_code(std::uint8_t* stream, std::size_t weight, int bits, std::uint32_t code) {
  std::uint8_t* byte = stream + code_byte(weight, bits);
  if (bits == 16) {
    byte[0] = std::uint8_t(code);
    byte[1] = std::uint8_t(code >> 8);
    return;
  }
  const unsigned bit = code_bit(weight, bits);
  if (bit == 0) *byte = 0;
  *byte = std::uint8_t(*byte | (code << bit));
}

// How a piece of `rows` x `cols` weights at stored width `bits` is walked.
struct FlatPlan {
  bool flat = false;         // the flat word layout applies
  std::size_t items = 0;     // whole items
  std::size_t tail = 0;      // weights after them (< the item's weights)
};

// Whether the flat layout applies: rows' codes contiguous, items within one row when the codebook
// is per row, and 16-byte aligned weights and codes (device allocations are 256-byte aligned).
NUQ_HOST_DEVICE inline bool flat_layout_applies(std::size_t rows, std::size_t cols, int bits, bool per_row,
                                                std::uintptr_t values_address, std::uintptr_t codes_address) {
  const std::size_t item_weights = bits == 1 ? 32 : 16;
  const bool contiguous = rows <= 1 || (cols * unsigned(bits)) % 8 == 0;
  const bool rows_hold_items = !per_row || rows <= 1 || cols % item_weights == 0;
  return contiguous && rows_hold_items && values_address % 16 == 0 && codes_address % 16 == 0;
}

template <int B>
NUQ_HOST_DEVICE inline FlatPlan flat_plan(std::size_t count) {
  FlatPlan plan;
  plan.flat = true;
  plan.items = count >> Item<B>::kLog2Weights;
  plan.tail = count - (plan.items << Item<B>::kLog2Weights);
  return plan;
}

// n / d for 32-bit n < 2^31 by one wide multiply and a shift (Granlund-Montgomery, as CUTLASS's
// FastDivmod): with s = ceil(log2 d) and m = ceil(2^(31+s) / d) < 2^32, floor(n * m / 2^(31+s))
// is floor(n / d) because n * (m - 2^(31+s)/d) / 2^(31+s) < 2^31 / 2^(31+s) <= 1/d.
struct FastDivisor {
  std::uint32_t divisor = 1, multiplier = 0x80000000u;
  unsigned shift = 31;  // 31 + s

  FastDivisor() = default;
  NUQ_HOST_DEVICE explicit FastDivisor(std::uint32_t d) : divisor(d) {
    unsigned s = 0;
    while ((std::uint64_t{1} << s) < d) ++s;
    shift = 31 + s;
    multiplier = std::uint32_t(((std::uint64_t{1} << shift) + d - 1) / d);
  }
  NUQ_HOST_DEVICE std::uint32_t quotient(std::uint32_t n) const {
    return std::uint32_t((std::uint64_t(n) * multiplier) >> shift);
  }
};

// The largest unit index FastDivisor takes.
constexpr std::uint64_t kMaxUnits = std::uint64_t{1} << 31;

// The unit layout: unit u of a piece of `cols` columns at stored width `bits` is column span
// [first_col, first_col + weights) of `row`, and its code bytes start at `first_byte`.
struct Unit {
  std::uint32_t row = 0;
  std::uint32_t first_col = 0, weights = 0;
  std::size_t first_byte = 0;
};

struct UnitPlan {
  std::uint32_t cols = 0;
  std::uint32_t per_unit = 1;       // weights per unit: 8 / bits below 8 bits, else 1
  std::uint32_t unit_bytes = 1;     // 2 at 16 bits
  std::size_t row_bytes = 0;        // packed_row_bytes(cols, bits)
  FastDivisor units_per_row;
  std::uint64_t units = 0;
};

NUQ_HOST_DEVICE inline UnitPlan unit_plan(std::size_t rows, std::size_t cols, int bits) {
  UnitPlan p;
  p.cols = std::uint32_t(cols);
  p.per_unit = bits < 8 ? 8u / unsigned(bits) : 1u;
  p.unit_bytes = bits == 16 ? 2u : 1u;
  p.row_bytes = (cols * unsigned(bits) + 7) / 8;
  const std::uint32_t per_row = std::uint32_t(bits == 16 ? cols : p.row_bytes);
  p.units_per_row = FastDivisor(per_row > 0 ? per_row : 1);
  p.units = std::uint64_t(rows) * per_row;
  return p;
}

NUQ_HOST_DEVICE inline Unit unit_at(const UnitPlan& p, std::uint32_t u) {
  Unit unit;
  unit.row = p.units_per_row.quotient(u);
  const std::uint32_t j = u - unit.row * p.units_per_row.divisor;
  unit.first_col = j * p.per_unit;
  const std::uint32_t end = unit.first_col + p.per_unit;
  unit.weights = (end < p.cols ? end : p.cols) - unit.first_col;
  unit.first_byte = std::size_t(unit.row) * p.row_bytes + std::size_t(j) * p.unit_bytes;
  return unit;
}

}  // namespace nuq::pipeline
