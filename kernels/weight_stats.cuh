// Weight statistics on the device, in one read of the weights: one wave of blocks, each thread
// taking items of 16 weights in 16-byte loads (pipeline_thread.h: FP32 deviations within an
// item, double sums about the thread's own shift across items), extremes and the first non-finite
// index; a BlockReduce joins a block's threads with Chan's formula and one block joins the blocks
// in a fixed order (one_wave.cuh). Rows of a matrix each get their own statistics from a warp
// (launch_row_stats). Launchers take device pointers and a stream.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace nuq::cuda {

struct StatsPartial {
  unsigned long long count;            // finite weights
  unsigned long long nonfinite;
  unsigned long long first_nonfinite;  // ULLONG_MAX when none
  double mean, m2;
  float min, max;
};

// Scratch (device) that launch_stats needs for `count` weights.
std::size_t stats_scratch_bytes(std::size_t count, int multiprocessors);

// Statistics of d_values[0, count) into *d_result (device memory); `index_offset` is added to
// the indices it reports, so chunks of one tensor report indices of the whole tensor.
void launch_stats(const float* d_values, std::size_t count, unsigned long long index_offset, StatsPartial* d_result,
                  void* d_scratch, std::size_t scratch_bytes, int multiprocessors, cudaStream_t stream);

// The statistics of each of `rows` rows of `cols` weights at d_values into d_out[0, rows) (device
// memory), one warp per row (per-channel maps, groups of a row: many short rows in one launch
// rather than a launch per row); indices reported are within each row.
void launch_row_stats(const float* d_values, std::size_t rows, std::size_t cols, StatsPartial* d_out,
                      int multiprocessors, cudaStream_t stream);

}  // namespace nuq::cuda
