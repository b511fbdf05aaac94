// The fused quantization pass on the device, one kernel per stored width (1, 2, 4, 8, 16 bits; a
// template parameter, chosen once per launch). Pieces whose rows' codes are contiguous take the
// flat word layout: one wave of blocks, each thread taking items of 16 (32 at one bit) weights in
// float4 loads, coding them by the shared rule (nuq/quantize_rule.h), storing whole words of
// codes, and summing signal, noise, the support-region count in FP32 per item and double across
// items, the worst error exactly; other pieces take one output byte per thread (the unit layout).
// Both are kernels/pipeline_thread.h's thread loops, which the host tests run thread by thread.
// Blocks' totals are joined in a fixed order, so a result repeats bit for bit. The dequantization
// kernel maps codes back to levels.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "nuq/quantize_rule.h"
#include "nuq/quantize_table.h"

namespace nuq::cuda {

// A QuantizeTable in device memory.
struct DeviceTable {
  const float* thresholds;    // [groups, levels_count - 1]
  const float* levels;        // [groups, 2^bits]
  const GroupParams* params;  // [groups]
  std::uint32_t levels_count;
  bool per_row;               // groups == rows of the whole matrix (else one group)
  int bits;
};

// A piece of a [total_rows, total_cols] matrix: rows [first_row, first_row + rows) and columns
// [first_col, first_col + cols), stored densely (row stride `cols`); first_col is a multiple of 16
// so that the piece's packed rows start on byte boundaries.
struct Piece {
  std::size_t first_row = 0, rows = 0, first_col = 0, cols = 0, total_cols = 0;
};

// Device scratch launch_quantize needs (one partial per block of one wave); `units` is unused and
// kept so that callers size it as before.
std::size_t quantize_scratch_bytes(std::size_t units, int multiprocessors);

// Codes of the piece into d_packed (rows * packed_row_bytes(cols, bits)) and its totals into
// *d_totals (device memory).
void launch_quantize(const float* d_values, const Piece& piece, const DeviceTable& table, std::uint8_t* d_packed,
                     QuantizeTotals* d_totals, void* d_scratch, std::size_t scratch_bytes, int multiprocessors,
                     cudaStream_t stream);

// Levels of the piece's codes into d_values.
void launch_dequantize(const std::uint8_t* d_packed, const Piece& piece, const DeviceTable& table, float* d_values,
                       int multiprocessors, cudaStream_t stream);

// Work units (threads' shares) of a piece: output bytes below 8 bits, codes at 8 and 16.
std::size_t quantize_units(const Piece& piece, int bits);

}  // namespace nuq::cuda
