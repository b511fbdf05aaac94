#include "fused_mlp.cuh"

#include "cuda_check.cuh"
#include "nuq/error.h"
#include "nuq/packed.h"
#include "warp_row_dot.cuh"

namespace nuq::cuda {
namespace {

constexpr int kInputs = 784, kHidden = 512, kClasses = 10;
constexpr int kWarps = 16;
constexpr int kBatch = int(kFusedMaxBatch);

// out[i][row] = act(in[i] . W[row] + b[row]) for the block's m images (in: shared memory, 16-byte
// aligned rows of k floats). Each row is taken by a group of lanes sized to it (warp_row_dot.cuh):
// 16-byte loads of codes, float4 reads of the activations, levels through the read-only cache.
template <int kBits>
__device__ void dense(const float* in, int m, const DeviceQuantizedMatrix& w, const float* __restrict__ bias, bool relu,
                      float* out) {
  const int lane = threadIdx.x % 32;
  const std::size_t units = (packed_row_bytes(w.k, kBits) + 15) / 16;
  const int lanes = lanes_per_row(units), sub = lane % lanes;
  const int groups = kWarps * 32 / lanes, n = int(w.n);
  // Every lane runs the same number of passes (the shuffles need the whole warp); rows past n idle.
  for (int first = 0; first < n; first += groups) {
    const int row = first + int(threadIdx.x) / lanes;
    const bool active = row < n;
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
        out[i * n + row] = relu ? fmaxf(v, 0.0f) : v;
      }
    }
  }
}

template <int kBits>
__global__ void __launch_bounds__(32 * kWarps) fused_mlp_kernel(const float* __restrict__ images, std::size_t count,
                                                                 FusedMlp mlp, std::uint8_t* __restrict__ classes) {
  __shared__ alignas(16) float xs[kBatch * kInputs];  // rows of 784 and 512 floats: 16-byte aligned
  __shared__ alignas(16) float h1[kBatch * kHidden];
  __shared__ alignas(16) float h2[kBatch * kHidden];
  __shared__ float logits[kBatch * kClasses];
  const std::size_t first = std::size_t(blockIdx.x) * kBatch;
  const int m = int(min(std::size_t(kBatch), count - first));
  // Images past the end of the batch are zero, so every lane may read every row of xs.
  for (int e = threadIdx.x; e < kBatch * kInputs; e += blockDim.x)
    xs[e] = e < m * kInputs ? images[first * kInputs + std::size_t(e)] : 0.0f;
  __syncthreads();
  dense<kBits>(xs, m, mlp.layers[0], mlp.bias[0], true, h1);
  __syncthreads();
  dense<kBits>(h1, m, mlp.layers[1], mlp.bias[1], true, h2);
  __syncthreads();
  dense<kBits>(h2, m, mlp.layers[2], mlp.bias[2], false, logits);
  __syncthreads();
  if (threadIdx.x < m) {  // the first largest logit, as the CPU's std::max_element
    const float* z = logits + threadIdx.x * kClasses;
    int best = 0;
    for (int c = 1; c < kClasses; ++c)
      if (z[c] > z[best]) best = c;
    classes[first + threadIdx.x] = std::uint8_t(best);
  }
}

template <int kBits>
void launch(const float* images, std::size_t count, const FusedMlp& mlp, std::uint8_t* classes, cudaStream_t stream) {
  const std::size_t blocks = (count + kFusedMaxBatch - 1) / kFusedMaxBatch;
  NUQ_REQUIRE(blocks <= 0x7FFFFFFFu, "fused MLP: ", count, " images exceed the grid");
  fused_mlp_kernel<kBits><<<unsigned(blocks), 32 * kWarps, 0, stream>>>(images, count, mlp, classes);
  NUQ_CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_fused_mlp(const float* d_images, std::size_t count, const FusedMlp& mlp, std::uint8_t* d_classes,
                      cudaStream_t stream) {
  if (count == 0) return;
  const int bits = mlp.layers[0].bits;
  NUQ_REQUIRE(mlp.layers[0].k == kInputs && mlp.layers[0].n == kHidden && mlp.layers[1].k == kHidden &&
                  mlp.layers[1].n == kHidden && mlp.layers[2].k == kHidden && mlp.layers[2].n == kClasses,
              "fused MLP: the layers are not 784 -> 512 -> 512 -> 10");
  NUQ_REQUIRE(mlp.layers[1].bits == bits && mlp.layers[2].bits == bits, "fused MLP: the layers differ in code width");
  with_code_width(bits, "fused MLP",
                  [&](auto width) { launch<decltype(width)::value>(d_images, count, mlp, d_classes, stream); });
}

}  // namespace nuq::cuda
