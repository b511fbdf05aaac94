// How the small-batch tensor-core qgemm (qgemm_mma.cu) sizes a block's shared memory and splits k,
// as plain host functions, so that tests/test_mma_plan.cpp checks every width and batch tile on
// the CPU: that a slice always holds a unit, that a block asks for no more shared memory than
// its launch allows (48 KiB without opting in, the budget with it), and that the split leaves no
// unit out.
//
// A block stages its slice of X (16 * m_tiles rows of BF16, each row padded by kPadX) beside each
// warp's ring of code units and decode table.
#pragma once

#include <algorithm>
#include <cstddef>

#include "nuq/host_device.h"
#include "nuq/mma_fragment.h"

namespace nuq::mma_plan {

constexpr int kWarps = 4;   // per block
constexpr int kStages = 4;  // units in flight per lane: three loads ahead of the one in use
static_assert(kStages >= 3, "the issue asks for at least three stages");
constexpr int kPadX = 8;  // BF16 elements after each row of X's slice: rows 4 banks apart
constexpr std::size_t kRingBytes = std::size_t(kWarps) * kStages * mma::kUnitBytes;
// Shared memory per block: the 48 KiB a launch gets without opting in (four blocks a
// multiprocessor), unless that holds fewer than kMinUnits units of X's slice. At 2 bits a unit is
// 256 columns, so 32 and 64 rows of BF16 X take 16 and 32 KiB a unit; a single unit a slice would
// cut k into as many slices as units, each with its own partial sums.
constexpr std::size_t kDefaultSharedBytes = 48 * 1024;
constexpr std::size_t kMinUnits = 2;

// Bytes of one warp's decode table: lane-private BF16x2 words with a pair table, otherwise a BF16
// level table for each of the 8 rows (words, rounded up).
NUQ_HOST_DEVICE constexpr std::size_t table_bytes(int bits) {
  return mma::uses_pair_table(bits) ? std::size_t(mma::decode_table_entries(bits)) * mma::kLanes * 4
                                    : (std::size_t(mma::kUnitRows) * mma::decode_table_entries(bits) * 2 + 15) / 16 * 16;
}
// Bytes of X's slice of `units` units for `rows` rows.
constexpr std::size_t x_slice_bytes(int bits, std::size_t rows, std::size_t units) {
  return rows * (units * std::size_t(mma::unit_cols(bits)) + kPadX) * 2;
}
// The dynamic shared memory of a block with `units` units of X a slice.
constexpr std::size_t shared_bytes(int bits, std::size_t rows, std::size_t units) {
  return kRingBytes + kWarps * table_bytes(bits) + x_slice_bytes(bits, rows, units);
}
// The most a block of `rows` rows of X may take (see kDefaultSharedBytes).
constexpr std::size_t shared_budget(int bits, std::size_t rows) {
  return std::max(kDefaultSharedBytes, shared_bytes(bits, rows, kMinUnits));
}
// H100/H200 give a block up to 227 KiB, an A100 163 KiB: every budget stays below 96 KiB, two
// blocks a multiprocessor.
static_assert(shared_budget(2, 64) <= 96 * 1024 && shared_budget(4, 64) <= 96 * 1024 &&
                  shared_budget(8, 64) <= 96 * 1024,
              "the mma kernel's shared memory must leave room for two blocks a multiprocessor");

// Units of k a slice: as many as X's slice fits in the budget, then fewer while the blocks leave
// multiprocessors without two blocks each (split-K), never below one unit. k_units >= 1.
inline std::size_t units_per_slice(int bits, std::size_t rows, std::size_t k_units, std::size_t ctas_n,
                                   int multiprocessors) {
  std::size_t most = kMinUnits;
  while (shared_bytes(bits, rows, most + 1) <= shared_budget(bits, rows)) ++most;
  most = std::min(most, k_units);
  const std::size_t wanted_slices = (2 * std::size_t(multiprocessors) + ctas_n - 1) / ctas_n;
  const std::size_t slices = std::min(k_units, std::max((k_units + most - 1) / most, wanted_slices));
  return (k_units + slices - 1) / slices;
}

}  // namespace nuq::mma_plan
