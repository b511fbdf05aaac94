// Exact Laplacian distortion of a batch of codebooks, one thread block per codebook.
// Each thread takes cells k = threadIdx.x, threadIdx.x + blockDim.x, ... and evaluates the same
// closed form the host uses (laplace_closed_form.h), in double precision; CUB's BlockReduce sums
// the granular and overload parts. The batch is flattened: codebook b owns levels
// [level_begin[b], level_begin[b+1]) and, since it has one threshold fewer, thresholds
// [level_begin[b] - b, level_begin[b+1] - b - 1).
#include <cub/block/block_reduce.cuh>

#include <cmath>
#include <cstdint>
#include <limits>

#include "cuda_check.cuh"
#include "device_buffer.cuh"
#include "device_scope.cuh"
#include "nuq/cuda.h"
#include "nuq/error.h"
#include "nuq/laplace_closed_form.h"

namespace nuq::cuda {
namespace {

// kBlockThreads: 128 threads keep several blocks resident per SM even for small codebooks, and
// one block still covers a 65536-level codebook in 512 strided steps.
template <int kBlockThreads>
__global__ void laplace_distortion_kernel(const double* __restrict__ thresholds,
                                          const double* __restrict__ levels,
                                          const std::int64_t* __restrict__ level_begin,
                                          const double* __restrict__ xmax, double lambda,
                                          double* __restrict__ granular_out,
                                          double* __restrict__ overload_out) {
  using BlockReduce = cub::BlockReduce<double, kBlockThreads>;
  __shared__ typename BlockReduce::TempStorage storage;
  const int b = blockIdx.x;
  const std::int64_t first = level_begin[b];
  const std::int64_t count = level_begin[b + 1] - first;
  const double* t = thresholds + (first - b);
  const double* y = levels + first;
  double granular = 0.0, overload = 0.0;
  for (std::int64_t k = threadIdx.x; k < count; k += kBlockThreads) {
    const double lo = k == 0 ? -HUGE_VAL : t[k - 1];
    const double hi = k + 1 == count ? HUGE_VAL : t[k];
    const closed_form::CellDistortion cell = closed_form::cell_distortion(lo, hi, y[k], xmax[b], lambda);
    granular += cell.granular;
    overload += cell.overload;
  }
  const double granular_sum = BlockReduce(storage).Sum(granular);
  __syncthreads();  // the temporary storage is reused by the second reduction
  const double overload_sum = BlockReduce(storage).Sum(overload);
  if (threadIdx.x == 0) {
    granular_out[b] = granular_sum;
    overload_out[b] = overload_sum;
  }
}

constexpr int kBlockThreads = 128;

}  // namespace

std::vector<Distortion> laplace_distortion_batch(const std::vector<Codebook>& codebooks,
                                                 double sigma, int device) {
  NUQ_REQUIRE(std::isfinite(sigma) && sigma > 0.0, "laplace_distortion_batch: sigma must be finite "
              "and positive, got ", sigma);
  if (codebooks.empty()) return {};
  const auto available = devices();
  NUQ_REQUIRE(device >= 0 && device < static_cast<int>(available.size()),
              "laplace_distortion_batch: no CUDA device ", device, " (", unavailable_reason(), ")");
  NUQ_REQUIRE(codebooks.size() <= static_cast<std::size_t>(std::numeric_limits<int>::max()),
              "laplace_distortion_batch: too many codebooks for one grid");
  const DeviceScope on_device(device);

  std::vector<double> thresholds, levels, xmax;
  std::vector<std::int64_t> level_begin{0};
  for (const Codebook& c : codebooks) {
    thresholds.insert(thresholds.end(), c.thresholds().begin(), c.thresholds().end());
    levels.insert(levels.end(), c.levels().begin(), c.levels().end());
    xmax.push_back(c.xmax());
    level_begin.push_back(static_cast<std::int64_t>(levels.size()));
  }
  const DeviceBuffer<double> d_thresholds(thresholds), d_levels(levels), d_xmax(xmax);
  const DeviceBuffer<std::int64_t> d_level_begin(level_begin);
  DeviceBuffer<double> d_granular(codebooks.size()), d_overload(codebooks.size());

  laplace_distortion_kernel<kBlockThreads><<<static_cast<int>(codebooks.size()), kBlockThreads>>>(
      d_thresholds.data(), d_levels.data(), d_level_begin.data(), d_xmax.data(),
      closed_form::laplace_rate(sigma), d_granular.data(), d_overload.data());
  NUQ_CUDA_CHECK_LAUNCH();
  NUQ_CUDA_CHECK(cudaDeviceSynchronize());

  const std::vector<double> granular = d_granular.download(), overload = d_overload.download();
  std::vector<Distortion> result(codebooks.size());
  for (std::size_t b = 0; b < codebooks.size(); ++b) result[b] = {granular[b], overload[b]};
  return result;
}

}  // namespace nuq::cuda
