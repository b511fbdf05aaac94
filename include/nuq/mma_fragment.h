// The register layouts of the tensor cores' mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"), and the layout of
// packed codes that feeds its B operand straight from one 16-byte load per lane. One definition
// for the host (tests, the prepack, the host model of the warp) and the kernel
// (kernels/qgemm_mma.cu), so that the GPU runs exactly the maps the CPU tests proved.
//
// The product: D[16 x 8] = A[16 x 16] * B[16 x 8] + C, with A = a tile of X (rows: batch, columns: k)
// and B = W^T (rows: k, columns: outputs n), so B's column n is row n of W: `.col` B is W's rows as
// stored. Each of the 32 lanes holds 8 elements of A (4 registers of two BF16), 4 of B (2 registers)
// and 4 of C/D (4 FP32 registers); `half` 0 is the low 16 bits of a register.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "nuq/host_device.h"

namespace nuq::mma {

constexpr int kLanes = 32;
constexpr int kTileM = 16, kTileN = 8, kTileK = 16;
constexpr int kARegs = 4, kBRegs = 2, kCRegs = 4;

struct Coord {  // an element of a tile: (row, column)
  int row, col;
};
struct Slot {  // where a lane holds it: lane, register, half of the register (0: low 16 bits)
  int lane, reg, half;
};

// The ISA's groupID and threadID_in_group.
NUQ_HOST_DEVICE constexpr int group_of(int lane) { return lane >> 2; }
NUQ_HOST_DEVICE constexpr int thread_in_group(int lane) { return lane & 3; }

// A, 16 x 16 row-major: element a_i (i = 2 * reg + half) of a lane sits in row groupID (+ 8 for
// registers 1 and 3) and column 2 * threadID_in_group + half (+ 8 for registers 2 and 3).
NUQ_HOST_DEVICE constexpr Coord a_coord(int lane, int reg, int half) {
  return {group_of(lane) + 8 * (reg & 1), 2 * thread_in_group(lane) + half + 8 * (reg >> 1)};
}
NUQ_HOST_DEVICE constexpr Slot a_slot(int row, int col) {
  return {4 * (row & 7) + ((col & 7) >> 1), (row >> 3) + 2 * (col >> 3), col & 1};
}

// B, 16 x 8 column-major (row = k, column = n): element b_i (i = 2 * reg + half) sits in row
// 2 * threadID_in_group + half (+ 8 for register 1) and column groupID. A lane's four B elements
// all lie in one column: one row of W, hence one table of levels per lane.
NUQ_HOST_DEVICE constexpr Coord b_coord(int lane, int reg, int half) {
  return {2 * thread_in_group(lane) + half + 8 * reg, group_of(lane)};
}
NUQ_HOST_DEVICE constexpr Slot b_slot(int row, int col) { return {4 * col + ((row & 7) >> 1), row >> 3, row & 1}; }

// C and D, 16 x 8 FP32: c_i sits in row groupID (+ 8 for registers 2 and 3) and column
// 2 * threadID_in_group + (i & 1). One value per register, so `half` is always 0.
NUQ_HOST_DEVICE constexpr Coord c_coord(int lane, int reg) {
  return {group_of(lane) + 8 * (reg >> 1), 2 * thread_in_group(lane) + (reg & 1)};
}
NUQ_HOST_DEVICE constexpr Slot c_slot(int row, int col) { return {4 * (row & 7) + (col >> 1), 2 * (row >> 3) + (col & 1), 0}; }

// --- The fragment-order layout of packed codes ------------------------------------------------
// W[n, k] of b-bit codes (b in 1, 2, 4, 8) is cut into units of 8 rows x unit_cols(b) columns: 4096
// bits, 16 bytes for each lane, so that one 16-byte load gives a lane its B registers for
// unit_steps(b) consecutive k-steps of 16 (16 at 2 bits, 8 at 4, 4 at 8). Within a lane's 16 bytes
// (read as four little-endian 32-bit words, bit p * b onwards holds code p), code
// p = (step * 2 + reg) * 2 + half is the B element (reg, half) of k-step `step`: the two codes of a
// register are adjacent (a pair code of 2b bits, half 0 in the low bits), and the steps follow in
// order. Units are stored row block by row block, k-units in order within a block: a warp that
// walks one block's k reads 512 contiguous bytes a unit. Rows and columns past the matrix are code 0.
constexpr int kUnitRows = kTileN;  // a unit's rows of W: the 8 columns of B
constexpr int kLaneBytes = 16;
constexpr int kUnitBytes = kLanes * kLaneBytes;  // 512

NUQ_HOST_DEVICE constexpr bool is_fragment_bits(int bits) { return bits == 1 || bits == 2 || bits == 4 || bits == 8; }
NUQ_HOST_DEVICE constexpr int unit_cols(int bits) { return kUnitBytes * 8 / kUnitRows / bits; }  // 256 at 2 bits
NUQ_HOST_DEVICE constexpr int unit_steps(int bits) { return unit_cols(bits) / kTileK; }
NUQ_HOST_DEVICE constexpr int codes_per_lane(int bits) { return kLaneBytes * 8 / bits; }

// The code of (row, col) within a unit: which lane, and its index p in that lane's 16 bytes.
struct UnitPlace {
  int lane, position;
};
// (The same at every width; only the unit's number of columns, unit_cols(bits), differs.)
NUQ_HOST_DEVICE constexpr UnitPlace unit_place(int row, int col) {
  const int step = col / kTileK;
  const Slot s = b_slot(col % kTileK, row);
  return {s.lane, (step * kBRegs + s.reg) * 2 + s.half};
}
// The inverse: the (row, col) within a unit of code `position` of lane `lane`.
NUQ_HOST_DEVICE constexpr Coord unit_coord(int lane, int position) {
  const int half = position & 1, reg = (position >> 1) % kBRegs, step = (position >> 1) / kBRegs;
  const Coord b = b_coord(lane, reg, half);
  return {b.col, step * kTileK + b.row};
}

// Row blocks and k-units of a [rows, cols] matrix, and the byte where unit (block, unit) starts.
NUQ_HOST_DEVICE constexpr std::size_t row_blocks(std::size_t rows) { return (rows + kUnitRows - 1) / kUnitRows; }
NUQ_HOST_DEVICE constexpr std::size_t k_units(std::size_t cols, int bits) {
  return (cols + std::size_t(unit_cols(bits)) - 1) / std::size_t(unit_cols(bits));
}
NUQ_HOST_DEVICE constexpr std::size_t unit_offset(std::size_t block, std::size_t unit, std::size_t units_per_block) {
  return (block * units_per_block + unit) * std::size_t(kUnitBytes);
}

// The pair code of B register `reg` of k-step `step` in a lane's four words: its two codes, 2b bits
// (bits divides 32, so a pair never straddles two words).
template <int kBits>
NUQ_HOST_DEVICE constexpr std::uint32_t pair_code(const std::uint32_t (&words)[4], int step, int reg) {
  static_assert(is_fragment_bits(kBits), "fragment-order codes are 1, 2, 4 or 8 bits");
  const int bit = (step * kBRegs + reg) * 2 * kBits;
  return (words[bit >> 5] >> (bit & 31)) & ((1u << (2 * kBits)) - 1u);
}

// --- Decoding codes into BF16 B registers -------------------------------------------------------
// BF16 is the high half of an FP32's bits; rounding to nearest, ties to even, as
// __float2bfloat16_rn does. A NaN becomes the canonical BF16 NaN 0x7FFF, as there: the rounding add
// would carry its payload into the exponent and make it an infinity or a zero (activations can be
// NaN even though levels cannot: upload_weights keeps those finite, and a level beyond BF16's
// largest, 3.39e38, rounds to an infinity here as it does in __float2bfloat16_rn).
NUQ_HOST_DEVICE inline std::uint16_t bf16_round(float value) {
  std::uint32_t bits;
#if defined(__CUDA_ARCH__)
  bits = __float_as_uint(value);
#else
  std::memcpy(&bits, &value, sizeof bits);
#endif
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFFu;
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return std::uint16_t(bits >> 16);
}
NUQ_HOST_DEVICE inline float bf16_value(std::uint16_t half) {
  const std::uint32_t bits = std::uint32_t(half) << 16;
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
#endif
}

// A register's two codes decode through a pair table (one BF16x2 per pair code) when it is tiny:
// 16 words at 2 bits, one look-up per register. Wider codes look each level up on its own (16
// BF16 at 4 bits, 256 at 8), two look-ups per register: a pair table would be 1 KiB or 256 KiB.
constexpr int kPairTableMaxEntries = 16;
NUQ_HOST_DEVICE constexpr bool uses_pair_table(int bits) { return (1 << (2 * bits)) <= kPairTableMaxEntries; }
// Entries of the decode table of one row: BF16x2 words with a pair table, BF16 levels otherwise.
NUQ_HOST_DEVICE constexpr int decode_table_entries(int bits) { return uses_pair_table(bits) ? 1 << (2 * bits) : 1 << bits; }

// Entry `index` of a row's decode table from its levels already rounded to BF16.
NUQ_HOST_DEVICE constexpr std::uint32_t decode_table_entry(const std::uint16_t* levels_bf16, int index, int bits) {
  const std::uint32_t mask = (1u << bits) - 1u;
  return uses_pair_table(bits) ? std::uint32_t(levels_bf16[std::uint32_t(index) & mask]) |
                                     (std::uint32_t(levels_bf16[std::uint32_t(index) >> bits]) << 16)
                               : levels_bf16[index];
}

// A B register (BF16x2, half 0 low) from its pair code; `entry(i)` reads entry i of the lane's
// row's decode table, wherever the caller keeps it (registers, shared memory, a host array).
template <int kBits, typename Entry>
NUQ_HOST_DEVICE inline std::uint32_t decode_register(std::uint32_t pair, Entry entry) {
  if constexpr (uses_pair_table(kBits)) {
    return std::uint32_t(entry(int(pair)));
  } else {
    constexpr std::uint32_t kMask = (1u << kBits) - 1u;
    return (std::uint32_t(entry(int(pair & kMask))) & 0xFFFFu) | (std::uint32_t(entry(int(pair >> kBits))) << 16);
  }
}

}  // namespace nuq::mma
