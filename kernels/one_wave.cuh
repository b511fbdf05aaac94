// Launch shapes of the weight pipeline: one wave of blocks (as many as are resident at once, from
// the occupancy API, times the SMs), each thread looping over its share, so no block waits for a
// second wave and every block's partial result is written once; and the fixed-order join of those
// partials, so a result is the same from run to run.
#pragma once

#include <cub/block/block_reduce.cuh>
#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cstddef>

#include "cuda_check.cuh"
#include "nuq/error.h"

namespace nuq::cuda {

// Every pipeline kernel runs 256 threads a block; no SM holds more than 2048 threads, so at most
// 8 blocks per SM are resident and the partials buffer is sized for that.
constexpr int kPipelineThreads = 256;
constexpr int kMaxBlocksPerSm = 2048 / kPipelineThreads;

// Blocks of `Kernel` resident per SM on the current device, asked once per kernel and device (the
// occupancy query costs microseconds, which a timed pass of a few hundred should not pay).
template <auto Kernel>
int resident_blocks_per_sm() {
  constexpr int kDevices = 64;
  static std::array<std::atomic<int>, kDevices> cache{};
  int device = 0;
  NUQ_CUDA_CHECK(cudaGetDevice(&device));
  NUQ_ASSERT(device >= 0 && device < kDevices, "device index ", device);
  int blocks = cache[std::size_t(device)].load(std::memory_order_relaxed);
  if (blocks == 0) {
    NUQ_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, Kernel, kPipelineThreads, 0));
    NUQ_ASSERT(blocks >= 1, "a pipeline kernel that cannot be resident");
    blocks = blocks < kMaxBlocksPerSm ? blocks : kMaxBlocksPerSm;
    cache[std::size_t(device)].store(blocks, std::memory_order_relaxed);
  }
  return blocks;
}

// One wave of `Kernel` for `threads_wanted` threads of work (at least one block, never more than
// one wave).
template <auto Kernel>
int one_wave_blocks(std::size_t threads_wanted, int multiprocessors) {
  const std::size_t wave = std::size_t(resident_blocks_per_sm<Kernel>()) * std::size_t(multiprocessors);
  const std::size_t wanted = (threads_wanted + kPipelineThreads - 1) / kPipelineThreads;
  return int(wanted < 1 ? 1 : wanted > wave ? wave : wanted);
}

inline std::size_t partials_bytes(std::size_t bytes_per_block, int multiprocessors) {
  return (std::size_t(multiprocessors) * kMaxBlocksPerSm * bytes_per_block + 255) / 256 * 256;
}

// The blocks' partials joined by one block in a fixed order: thread i folds partials i, i + 256,
// ... in turn, then a BlockReduce (a fixed tree) joins the threads. The same partials give the
// same bits every run, which atomics or a reduction shaped by the scheduler would not promise.
template <typename T, typename Combine>
__global__ void __launch_bounds__(kPipelineThreads) join_partials_kernel(const T* __restrict__ partials, int count,
                                                                        T empty, T* __restrict__ result) {
  using BlockReduce = cub::BlockReduce<T, kPipelineThreads>;
  __shared__ typename BlockReduce::TempStorage storage;
  T mine = empty;
  for (int i = int(threadIdx.x); i < count; i += kPipelineThreads) mine = Combine()(mine, partials[i]);
  const T all = BlockReduce(storage).Reduce(mine, Combine());
  if (threadIdx.x == 0) *result = all;
}

template <typename T, typename Combine>
void launch_join(const T* d_partials, int count, const T& empty, T* d_result, cudaStream_t stream) {
  join_partials_kernel<T, Combine><<<1, kPipelineThreads, 0, stream>>>(d_partials, count, empty, d_result);
  NUQ_CUDA_CHECK_LAUNCH();
}

}  // namespace nuq::cuda
