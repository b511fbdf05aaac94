#include "fused_mlp.cuh"

#include <cooperative_groups.h>

#include <map>
#include <mutex>

#include "cuda_check.cuh"
#include "nuq/error.h"
#include "nuq/packed.h"
#include "warp_row_dot.cuh"

namespace nuq::cuda {
namespace {

constexpr int kInputs = 784, kHidden = 512, kClasses = 10;
constexpr int kWarps = 16;
constexpr int kBatch = int(kFusedMaxBatch);

// store(i, row, act(in[i] . W[row] + b[row])) for rows [begin, end) and the block's m images (in:
// shared memory, 16-byte aligned rows of k floats). Each row is taken by a group of lanes sized to
// it (warp_row_dot.cuh): 16-byte loads of codes, float4 reads of the activations, levels through
// the read-only cache.
template <int kBits, typename Store>
__device__ void dense(const float* in, int m, const DeviceQuantizedMatrix& w, const float* __restrict__ bias, bool relu,
                      int begin, int end, Store store) {
  const int lane = threadIdx.x % 32;
  const std::size_t units = (packed_row_bytes(w.k, kBits) + 15) / 16;
  const int lanes = lanes_per_row(units), sub = lane % lanes;
  const int groups = kWarps * 32 / lanes;
  // Every lane runs the same number of passes (the shuffles need the whole warp); rows past end idle.
  for (int first = begin; first < end; first += groups) {
    const int row = first + int(threadIdx.x) / lanes;
    const bool active = row < end;
    const float* levels = w.row_levels(active ? std::size_t(row) : 0);
    float acc[kBatch] = {};
    row_partial<kBits, kBatch, false>(reinterpret_cast<const uint4*>(w.row_codes(active ? std::size_t(row) : 0)), 0,
                                      active ? units : 0, sub, lanes, in, w.k, m, w.k % 4 == 0,
                                      [&](std::uint32_t code) { return w.level(levels, code); }, acc);
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
      const float sum = group_sum(acc[i], lanes);
      if (active && sub == 0 && i < m) {
        const float v = sum + bias[row];
        store(i, row, relu ? fmaxf(v, 0.0f) : v);
      }
    }
  }
}

// Copies the batch's m images into xs, zero past them, so every lane may read every row of xs.
__device__ void stage_images(const float* __restrict__ images, std::size_t first, int m, float* xs) {
  for (int e = threadIdx.x; e < kBatch * kInputs; e += blockDim.x)
    xs[e] = e < m * kInputs ? images[first * kInputs + std::size_t(e)] : 0.0f;
}

// classes[first + i] = the first largest logit of image i, as the CPU's std::max_element picks it.
__device__ void write_classes(const float* logits, int m, std::size_t first, std::uint8_t* __restrict__ classes) {
  if (threadIdx.x < m) {
    const float* z = logits + threadIdx.x * kClasses;
    int best = 0;
    for (int c = 1; c < kClasses; ++c)
      if (z[c] > z[best]) best = c;
    classes[first + threadIdx.x] = std::uint8_t(best);
  }
}

// Row-major rows of n outputs in one block's shared memory.
struct StoreLocal {
  float* out;
  int n;
  __device__ void operator()(int i, int row, float v) const { out[i * n + row] = v; }
};

template <int kBits>
__global__ void __launch_bounds__(32 * kWarps) fused_mlp_kernel(const float* __restrict__ images, std::size_t count,
                                                                 FusedMlp mlp, std::uint8_t* __restrict__ classes) {
  __shared__ alignas(16) float xs[kBatch * kInputs];  // rows of 784 and 512 floats: 16-byte aligned
  __shared__ alignas(16) float h1[kBatch * kHidden];
  __shared__ alignas(16) float h2[kBatch * kHidden];
  __shared__ float logits[kBatch * kClasses];
  const std::size_t first = std::size_t(blockIdx.x) * kBatch;
  const int m = int(min(std::size_t(kBatch), count - first));
  stage_images(images, first, m, xs);
  __syncthreads();
  dense<kBits>(xs, m, mlp.layers[0], mlp.bias[0], true, 0, kHidden, StoreLocal{h1, kHidden});
  __syncthreads();
  dense<kBits>(h1, m, mlp.layers[1], mlp.bias[1], true, 0, kHidden, StoreLocal{h2, kHidden});
  __syncthreads();
  dense<kBits>(h2, m, mlp.layers[2], mlp.bias[2], false, 0, kClasses, StoreLocal{logits, kClasses});
  __syncthreads();
  write_classes(logits, m, first, classes);
}

// A cluster of kFusedClusterBlocks blocks per batch: block r of the cluster computes rows
// [n r / C, n (r + 1) / C) of each layer and stores each output into that layer's buffer in every
// block of the cluster (the logits into block 0's only), so that after one cluster barrier every
// block holds the whole next input. Each buffer is written in one layer and read in the next, so
// one barrier a layer orders both; the first barrier makes sure every block of the cluster runs
// before any stores into it, the last that block 0 has every logit and that no block leaves while
// stores into it are in flight.
template <int kBits>
__global__ void __launch_bounds__(32 * kWarps) fused_mlp_cluster_kernel(const float* __restrict__ images,
                                                                         std::size_t count, FusedMlp mlp,
                                                                         std::uint8_t* __restrict__ classes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  __shared__ alignas(16) float xs[kBatch * kInputs];
  __shared__ alignas(16) float h1[kBatch * kHidden];
  __shared__ alignas(16) float h2[kBatch * kHidden];
  __shared__ float logits[kBatch * kClasses];
  namespace cg = cooperative_groups;
  const cg::cluster_group cluster = cg::this_cluster();
  const int rank = int(cluster.block_rank());
  const std::size_t first = std::size_t(blockIdx.x / kFusedClusterBlocks) * kBatch;
  const int m = int(min(std::size_t(kBatch), count - first));
  const auto rows = [&](int n) { return n * rank / kFusedClusterBlocks; };
  const auto next_rows = [&](int n) { return n * (rank + 1) / kFusedClusterBlocks; };
  const auto store_everywhere = [&](float* local, int n) {
    return [=](int i, int row, float v) {
      // The element's address mapped, not the buffer's: eight mapped bases kept live through the
      // dot products would spill registers.
      for (int r = 0; r < kFusedClusterBlocks; ++r) *cluster.map_shared_rank(&local[i * n + row], r) = v;
    };
  };
  stage_images(images, first, m, xs);
  cluster.sync();
  dense<kBits>(xs, m, mlp.layers[0], mlp.bias[0], true, rows(kHidden), next_rows(kHidden), store_everywhere(h1, kHidden));
  cluster.sync();
  dense<kBits>(h1, m, mlp.layers[1], mlp.bias[1], true, rows(kHidden), next_rows(kHidden), store_everywhere(h2, kHidden));
  cluster.sync();
  float* block0_logits = cluster.map_shared_rank(logits, 0);
  dense<kBits>(h2, m, mlp.layers[2], mlp.bias[2], false, rows(kClasses), next_rows(kClasses),
               [=](int i, int row, float v) { block0_logits[i * kClasses + row] = v; });
  cluster.sync();
  if (rank == 0) write_classes(logits, m, first, classes);
#else
  __trap();  // the host launches clusters on compute capability 9.0 or newer only
#endif
}

// Whether the current device launches the cluster kernel: it launches clusters (compute capability
// 9.0) and the kernel was built for it (a build for 8.0 alone would run the trap stub from PTX).
// Asked once per device and width: the one-image path is measured in microseconds.
template <int kBits>
bool launches_clusters() {
  static std::mutex mutex;
  static std::map<int, bool> launches_on;
  int device = 0;
  NUQ_CUDA_CHECK(cudaGetDevice(&device));
  const std::lock_guard<std::mutex> lock(mutex);
  if (const auto found = launches_on.find(device); found != launches_on.end()) return found->second;
  int supported = 0;
  NUQ_CUDA_CHECK(cudaDeviceGetAttribute(&supported, cudaDevAttrClusterLaunch, device));
  cudaFuncAttributes attributes{};
  NUQ_CUDA_CHECK(cudaFuncGetAttributes(&attributes, fused_mlp_cluster_kernel<kBits>));
  return launches_on[device] = supported != 0 && attributes.ptxVersion >= 90;  // the code built from 9.0 PTX
}

template <int kBits>
void launch(const float* images, std::size_t count, const FusedMlp& mlp, std::uint8_t* classes, cudaStream_t stream,
            MlpLayout layout) {
  const std::size_t blocks = (count + kFusedMaxBatch - 1) / kFusedMaxBatch;
  if (layout == MlpLayout::ClusterPerBatch && launches_clusters<kBits>()) {
    NUQ_REQUIRE(blocks <= 0x7FFFFFFFu / kFusedClusterBlocks, "fused MLP: ", count, " images exceed the grid");
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(unsigned(blocks * kFusedClusterBlocks));
    config.blockDim = dim3(32 * kWarps);
    config.stream = stream;
    cudaLaunchAttribute cluster{};
    cluster.id = cudaLaunchAttributeClusterDimension;
    cluster.val.clusterDim.x = kFusedClusterBlocks;
    cluster.val.clusterDim.y = cluster.val.clusterDim.z = 1;
    config.attrs = &cluster;
    config.numAttrs = 1;
    NUQ_CUDA_CHECK(cudaLaunchKernelEx(&config, fused_mlp_cluster_kernel<kBits>, images, count, mlp, classes));
    return;
  }
  NUQ_REQUIRE(blocks <= 0x7FFFFFFFu, "fused MLP: ", count, " images exceed the grid");
  fused_mlp_kernel<kBits><<<unsigned(blocks), 32 * kWarps, 0, stream>>>(images, count, mlp, classes);
  NUQ_CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_fused_mlp(const float* d_images, std::size_t count, const FusedMlp& mlp, std::uint8_t* d_classes,
                      cudaStream_t stream, MlpLayout layout) {
  if (count == 0) return;
  const int bits = mlp.layers[0].bits;
  NUQ_REQUIRE(mlp.layers[0].k == kInputs && mlp.layers[0].n == kHidden && mlp.layers[1].k == kHidden &&
                  mlp.layers[1].n == kHidden && mlp.layers[2].k == kHidden && mlp.layers[2].n == kClasses,
              "fused MLP: the layers are not 784 -> 512 -> 512 -> 10");
  NUQ_REQUIRE(mlp.layers[1].bits == bits && mlp.layers[2].bits == bits, "fused MLP: the layers differ in code width");
  NUQ_REQUIRE(mlp.bias[0] && mlp.bias[1] && mlp.bias[2], "fused MLP: every layer needs its bias (the kernel reads it)");
  with_code_width(bits, "fused MLP",
                  [&](auto width) { launch<decltype(width)::value>(d_images, count, mlp, d_classes, stream, layout); });
}

}  // namespace nuq::cuda
