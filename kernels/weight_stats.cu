#include "weight_stats.cuh"

#include <climits>
#include <cmath>

#include "cuda_check.cuh"
#include "nuq/error.h"
#include <cub/warp/warp_reduce.cuh>

#include "one_wave.cuh"
#include "pipeline_thread.h"

namespace nuq::cuda {
namespace {

__host__ __device__ StatsPartial empty_partial() {
  return StatsPartial{0ull, 0ull, ULLONG_MAX, 0.0, 0.0, INFINITY, -INFINITY};
}

// Chan's combination of two parts (either may be empty).
struct CombineStats {
  __host__ __device__ StatsPartial operator()(const StatsPartial& a, const StatsPartial& b) const {
    StatsPartial s = a.count == 0 ? b : a;
    if (a.count != 0 && b.count != 0) {
      s.count = a.count + b.count;
      const double delta = b.mean - a.mean;
      s.mean = a.mean + delta * double(b.count) / double(s.count);
      s.m2 = a.m2 + b.m2 + delta * delta * double(a.count) * double(b.count) / double(s.count);
      s.min = fminf(a.min, b.min);
      s.max = fmaxf(a.max, b.max);
    }
    s.nonfinite = a.nonfinite + b.nonfinite;
    s.first_nonfinite = a.first_nonfinite < b.first_nonfinite ? a.first_nonfinite : b.first_nonfinite;
    return s;
  }
};

__device__ StatsPartial partial_of(const pipeline::StatsThread& t) {
  StatsPartial p = empty_partial();
  p.nonfinite = t.nonfinite;
  p.first_nonfinite = t.first_nonfinite;
  if (t.count == 0) return p;
  p.count = t.count;
  p.mean = t.mean();
  p.m2 = t.m2();
  p.min = t.min;
  p.max = t.max;
  return p;
}

// One wave of blocks; each thread its items (pipeline::stats_thread), the block's threads joined
// by Chan's formula into one partial per block.
__global__ void __launch_bounds__(kPipelineThreads) stats_kernel(const float* __restrict__ values, std::size_t count,
                                                                 unsigned long long index_offset,
                                                                 StatsPartial* __restrict__ partials) {
  using BlockReduce = cub::BlockReduce<StatsPartial, kPipelineThreads>;
  __shared__ typename BlockReduce::TempStorage storage;
  pipeline::StatsThread mine;
  pipeline::stats_thread(values, count, index_offset, std::size_t(blockIdx.x) * kPipelineThreads + threadIdx.x,
                         std::size_t(gridDim.x) * kPipelineThreads, mine);
  const StatsPartial block = BlockReduce(storage).Reduce(partial_of(mine), CombineStats());
  if (threadIdx.x == 0) partials[blockIdx.x] = block;
}

constexpr int kRowStatsThreads = 256;  // eight warps a block, a row per warp at a time

// A warp per row, the rows in a grid-stride loop: the warp's lanes take the row's items as a
// block's threads take a tensor's (pipeline::stats_thread, any alignment), then join by Chan's
// formula in a fixed order of shuffles.
__global__ void __launch_bounds__(kRowStatsThreads) row_stats_kernel(const float* __restrict__ values, std::size_t rows,
                                                                     std::size_t cols, StatsPartial* __restrict__ out) {
  using WarpReduce = cub::WarpReduce<StatsPartial>;
  constexpr int kWarps = kRowStatsThreads / 32;
  __shared__ typename WarpReduce::TempStorage storage[kWarps];
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (std::size_t r = std::size_t(blockIdx.x) * kWarps + warp; r < rows; r += std::size_t(gridDim.x) * kWarps) {
    pipeline::StatsThread mine;
    pipeline::stats_thread(values + r * cols, cols, 0ull, lane, 32, mine);
    const StatsPartial row = WarpReduce(storage[warp]).Reduce(partial_of(mine), CombineStats());
    if (lane == 0) out[r] = row;
    __syncwarp();  // the warp's storage is used again for its next row
  }
}

}  // namespace

void launch_row_stats(const float* d_values, std::size_t rows, std::size_t cols, StatsPartial* d_out,
                      int multiprocessors, cudaStream_t stream) {
  NUQ_ASSERT(rows > 0 && cols > 0, "launch_row_stats of nothing");
  constexpr std::size_t kWarps = kRowStatsThreads / 32;
  const std::size_t wanted = (rows + kWarps - 1) / kWarps, most = std::size_t(multiprocessors) * 8;
  const int blocks = int(wanted < most ? wanted : most);
  row_stats_kernel<<<blocks, kRowStatsThreads, 0, stream>>>(d_values, rows, cols, d_out);
  NUQ_CUDA_CHECK_LAUNCH();
}

std::size_t stats_scratch_bytes(std::size_t, int multiprocessors) {
  return partials_bytes(sizeof(StatsPartial), multiprocessors);
}

void launch_stats(const float* d_values, std::size_t count, unsigned long long index_offset, StatsPartial* d_result,
                  void* d_scratch, std::size_t scratch_bytes, int multiprocessors, cudaStream_t stream) {
  NUQ_ASSERT(count > 0, "launch_stats of nothing");
  NUQ_ASSERT(scratch_bytes >= stats_scratch_bytes(count, multiprocessors), "stats scratch too small");
  const int blocks = one_wave_blocks<stats_kernel>(count / 16, multiprocessors);
  auto* partials = static_cast<StatsPartial*>(d_scratch);
  stats_kernel<<<blocks, kPipelineThreads, 0, stream>>>(d_values, count, index_offset, partials);
  NUQ_CUDA_CHECK_LAUNCH();
  launch_join<StatsPartial, CombineStats>(partials, blocks, empty_partial(), d_result, stream);
}

}  // namespace nuq::cuda
