#include "weight_stats.cuh"

#include <cub/block/block_reduce.cuh>
#include <cub/device/device_reduce.cuh>

#include <climits>
#include <cmath>

#include "cuda_check.cuh"
#include "nuq/error.h"

namespace nuq::cuda {
namespace {

// kBlockThreads: 256 threads, 4 weights per load, keep enough loads in flight per SM to stream
// at HBM bandwidth with 8 blocks per SM.
constexpr int kBlockThreads = 256;
constexpr int kBlocksPerSm = 8;

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

struct ThreadSums {
  double shift, sum = 0.0, sum_squares = 0.0;
  unsigned long long count = 0, nonfinite = 0, first_nonfinite = ULLONG_MAX;
  float min = INFINITY, max = -INFINITY;

  __device__ void add(float x, unsigned long long index) {
    if (!isfinite(x)) {
      ++nonfinite;
      first_nonfinite = index < first_nonfinite ? index : first_nonfinite;
      return;
    }
    const double d = double(x) - shift;
    sum += d;
    sum_squares += d * d;
    ++count;
    min = fminf(min, x);
    max = fmaxf(max, x);
  }
  __device__ StatsPartial partial() const {
    StatsPartial p = empty_partial();
    p.nonfinite = nonfinite;
    p.first_nonfinite = first_nonfinite;
    if (count == 0) return p;
    p.count = count;
    p.mean = shift + sum / double(count);
    p.m2 = fmax(0.0, sum_squares - sum * sum / double(count));
    p.min = min;
    p.max = max;
    return p;
  }
};

__global__ void __launch_bounds__(kBlockThreads) stats_partials_kernel(const float* __restrict__ values,
                                                                       std::size_t count,
                                                                       unsigned long long index_offset,
                                                                       StatsPartial* __restrict__ partials) {
  using BlockReduce = cub::BlockReduce<StatsPartial, kBlockThreads>;
  __shared__ typename BlockReduce::TempStorage storage;
  ThreadSums sums;
  // The shift: any weight of the set close to the mean keeps the sums small; the first will do.
  const float first = values[0];
  sums.shift = isfinite(first) ? double(first) : 0.0;
  const std::size_t stride = std::size_t(gridDim.x) * kBlockThreads;
  const std::size_t thread = std::size_t(blockIdx.x) * kBlockThreads + threadIdx.x;
  // Vector loads over the aligned body (cudaMalloc aligns to 256 bytes), then the tail.
  const std::size_t vectors = count / 4;
  const float4* body = reinterpret_cast<const float4*>(values);
  for (std::size_t v = thread; v < vectors; v += stride) {
    const float4 q = body[v];
    const unsigned long long i = index_offset + 4 * v;
    sums.add(q.x, i);
    sums.add(q.y, i + 1);
    sums.add(q.z, i + 2);
    sums.add(q.w, i + 3);
  }
  for (std::size_t i = 4 * vectors + thread; i < count; i += stride) sums.add(values[i], index_offset + i);
  const StatsPartial block = BlockReduce(storage).Reduce(sums.partial(), CombineStats());
  if (threadIdx.x == 0) partials[blockIdx.x] = block;
}

int blocks_for(std::size_t count, int multiprocessors) {
  const std::size_t wanted = (count / 4 + kBlockThreads - 1) / kBlockThreads;
  const std::size_t cap = std::size_t(multiprocessors) * kBlocksPerSm;
  return int(wanted < 1 ? 1 : wanted > cap ? cap : wanted);
}

std::size_t cub_bytes(int blocks) {
  std::size_t bytes = 0;
  NUQ_CUDA_CHECK(cub::DeviceReduce::Reduce(nullptr, bytes, static_cast<const StatsPartial*>(nullptr),
                                           static_cast<StatsPartial*>(nullptr), blocks, CombineStats(),
                                           empty_partial()));
  return bytes;
}

std::size_t aligned(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace

std::size_t stats_scratch_bytes(std::size_t count, int multiprocessors) {
  const int blocks = blocks_for(count, multiprocessors);
  return aligned(blocks * sizeof(StatsPartial)) + cub_bytes(blocks);
}

void launch_stats(const float* d_values, std::size_t count, unsigned long long index_offset, StatsPartial* d_result,
                  void* d_scratch, std::size_t scratch_bytes, int multiprocessors, cudaStream_t stream) {
  NUQ_ASSERT(count > 0, "launch_stats of nothing");
  const int blocks = blocks_for(count, multiprocessors);
  NUQ_ASSERT(scratch_bytes >= stats_scratch_bytes(count, multiprocessors), "stats scratch too small");
  auto* partials = static_cast<StatsPartial*>(d_scratch);
  void* temp = static_cast<char*>(d_scratch) + aligned(blocks * sizeof(StatsPartial));
  std::size_t temp_bytes = scratch_bytes - aligned(blocks * sizeof(StatsPartial));
  stats_partials_kernel<<<blocks, kBlockThreads, 0, stream>>>(d_values, count, index_offset, partials);
  NUQ_CUDA_CHECK_LAUNCH();
  NUQ_CUDA_CHECK(cub::DeviceReduce::Reduce(temp, temp_bytes, partials, d_result, blocks, CombineStats(),
                                           empty_partial(), stream));
}

}  // namespace nuq::cuda
