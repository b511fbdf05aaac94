// The maps of the CUDA-core GEMV (qgemm_gemv.cu, batches of 1 to 4 rows) as plain functions
// (NUQ_HOST_DEVICE), so that tests/test_gemv_layout.cpp checks them exhaustively and runs the
// whole kernel's arithmetic on the host before any GPU does.
//
// The kernel reads codes in the row-major packed layout of nuq/packed.h (no repacking): lane l of
// a warp loads 16-byte unit u = 32 s + l of a row in warp step s, so a warp reads 512 contiguous
// bytes of each row it takes. A step covers slice_columns(bits) columns of k, and one block takes
// one such slice of k (blockIdx.y): X's rows are staged for the slice in shared memory as FP32
// quads (four consecutive columns, one 16-byte load), and every warp of the block meets them with
// kRowsPerWarp rows at once, so one read of X serves four rows of W.
//
// A lane's unit meets unit_quads(bits) consecutive quads of X, and lanes' quads lie unit_quads
// apart: stored as they come, the 8 lanes of a 16-byte shared-memory access phase would read the
// same 4 banks (an 8-way conflict at 1 and 2 bits). Each quad is therefore stored at quad_slot,
// its index with the low 3 bits XORed by bits that differ between neighbouring lanes: the 8 lanes
// of every phase, at every step t, read 8 different bank quads, and the staging threads, writing
// consecutive quads, stay within an aligned group of 8 (conflict-free too).
#pragma once

#include <cstddef>
#include <cstdint>

#include "nuq/host_device.h"

namespace nuq::gemv {

constexpr int kLanes = 32;
constexpr int kUnitBytes = 16;     // one lane's load of codes
constexpr int kMaxBatch = 4;       // rows of X the GEMV takes
constexpr int kWarps = 8;          // per block
constexpr int kRowsPerWarp = 4;    // rows of W a warp takes at once
constexpr int kRowsPerPass = kWarps * kRowsPerWarp;

// Codes in a unit and the quads of X they meet; columns and quads of one slice of k.
NUQ_HOST_DEVICE constexpr int unit_codes(int bits) { return 8 * kUnitBytes / bits; }
NUQ_HOST_DEVICE constexpr int unit_quads(int bits) { return unit_codes(bits) / 4; }
NUQ_HOST_DEVICE constexpr int slice_columns(int bits) { return kLanes * unit_codes(bits); }
NUQ_HOST_DEVICE constexpr int slice_quads(int bits) { return slice_columns(bits) / 4; }

// log2 of unit_quads (32 / bits quads: 32, 16, 8, 4, 2 at 1, 2, 4, 8, 16 bits).
NUQ_HOST_DEVICE constexpr int log2_unit_quads(int bits) {
  return bits == 1 ? 5 : bits == 2 ? 4 : bits == 4 ? 3 : bits == 8 ? 2 : 1;
}

// Where quad `quad` of a slice row (lane quad / unit_quads's quad quad % unit_quads) is stored. The
// XOR takes the lane's bits when a unit spans a bank row of 8 quads or more, otherwise the bits
// just above the bank row, which then differ between lanes of a phase.
NUQ_HOST_DEVICE constexpr int quad_slot(int quad, int bits) {
  const int shift = log2_unit_quads(bits) > 3 ? log2_unit_quads(bits) : 3;
  return quad ^ ((quad >> shift) & 7);
}

// Slices of k (blocks along blockIdx.y) for rows of k columns.
NUQ_HOST_DEVICE constexpr std::size_t slices(std::size_t k, int bits) {
  return (k + std::size_t(slice_columns(bits)) - 1) / std::size_t(slice_columns(bits));
}

// The code of column j (0 <= j < unit_codes) of a unit held as four little-endian 32-bit words
// (nuq/packed.h: LSB first within each byte, bytes in order).
NUQ_HOST_DEVICE inline std::uint32_t unit_code(std::uint32_t w0, std::uint32_t w1, std::uint32_t w2, std::uint32_t w3,
                                               int j, int bits) {
  const int per_word = 32 / bits, q = j / per_word;
  const std::uint32_t word = q == 0 ? w0 : q == 1 ? w1 : q == 2 ? w2 : w3;
  return (word >> ((j % per_word) * bits)) & ((bits == 32 ? 0u : 1u << bits) - 1u);
}

// The most slices of k a launch has: gridDim.y's limit.
constexpr std::size_t kMaxSlices = 65535;

// Whether the rows are worth the GEMV: every lane of a warp has a unit of each row in the first
// step (shorter rows leave lanes idle; the streaming kernel's groups of fewer lanes take them),
// and their slices fit the grid (rows of over 16.7 million 16-bit codes go to the default kernel).
NUQ_HOST_DEVICE constexpr bool takes(std::size_t m, std::size_t k, int bits) {
  return m >= 1 && m <= std::size_t(kMaxBatch) && (bits == 1 || bits == 2 || bits == 4 || bits == 8 || bits == 16) &&
         k >= std::size_t(slice_columns(bits)) && slices(k, bits) <= kMaxSlices;
}

// The batch bound a launch compiles for: 1, 2 or 4 accumulators per row.
NUQ_HOST_DEVICE constexpr int batch_bound(std::size_t m) { return m <= 1 ? 1 : m <= 2 ? 2 : 4; }

// Passes of kRowsPerPass rows each block takes: enough blocks for `resident_blocks` (a wave of
// the device) when the rows allow it, otherwise as few rows per block as possible, so that the
// X slice a block stages is read for as many rows as the wave leaves it.
NUQ_HOST_DEVICE constexpr std::size_t passes_per_block(std::size_t n, std::size_t k, int bits,
                                                       std::size_t resident_blocks) {
  const std::size_t row_passes = (n + kRowsPerPass - 1) / kRowsPerPass;
  std::size_t passes = 16;
  while (passes > 1 && ((row_passes + passes - 1) / passes) * slices(k, bits) < resident_blocks) passes /= 2;
  return passes;
}

}  // namespace nuq::gemv
