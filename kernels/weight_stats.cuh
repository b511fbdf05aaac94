// Weight statistics on the device, in one read of the weights: each thread keeps shifted sums
// (x - K, (x - K)^2 in double, K a weight of the set, so no cancellation), its count, extremes
// and the first non-finite index; CUB's BlockReduce joins the threads of a block with Chan's
// formula, and DeviceReduce joins the blocks. Launchers take device pointers and a stream.
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

}  // namespace nuq::cuda
