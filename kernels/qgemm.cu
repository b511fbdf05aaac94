#include "qgemm.cuh"
#include "warp_row_dot.cuh"

#include <algorithm>
#include <cstdint>

#include "cuda_check.cuh"
#include "nuq/error.h"
#include "nuq/packed.h"

namespace nuq::cuda {
namespace {

// The small-batch path splits a row's k across blocks (split-K) when the rows alone give fewer
// blocks than there are multiprocessors, into at most kMaxSplits slices of at least 32 16-byte units
// (one per lane of a warp).
constexpr unsigned kMaxSplits = 16;

// Small batch: kWarps warps per block, each row taken by a group of `lanes` lanes (32 for long rows,
// fewer for short ones: 32 / lanes rows per warp); blockIdx.y picks a slice of the rows (split-K).
// The group streams its slice with 16-byte loads (warp_row_dot.cuh), decoding 1-, 2- and 4-bit
// codes through the row's table in shared memory (each of up to 16 levels sits in its own bank, so
// any pattern of codes is free of bank conflicts) and wider ones through the read-only cache. A
// shuffle reduction ends each dot product. With one slice, bias and ReLU are applied here; with
// several, each writes its partial sums to partial[slice][i][row] and finish_split_k adds them in
// order (deterministic: the same result every run).
// kBatch: the batch size rounded up to a compile-time bound so the accumulators stay in registers.
template <typename TX, int kBits, int kBatch, int kWarps>
__global__ void __launch_bounds__(32 * kWarps) qgemm_small_kernel(const TX* __restrict__ x, int m,
                                                                  DeviceQuantizedMatrix w,
                                                                  const float* __restrict__ bias, bool relu,
                                                                  bool x_vectors, int lanes, float* __restrict__ y,
                                                                  float* __restrict__ partial) {
  constexpr bool in_shared = kBits <= 4;
  constexpr int kTable = in_shared ? 1 << kBits : 1;
  __shared__ float shared_levels[kWarps * 32 / kMinLanesPerRow][kTable];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, sub = lane % lanes;
  const std::size_t group = std::size_t(threadIdx.x) / std::size_t(lanes);  // of the block
  const std::size_t row = std::size_t(blockIdx.x) * (kWarps * 32 / lanes) + group;
  // Whole warps past the last row leave; in a warp with rows left every lane stays for the shuffles.
  if (std::size_t(blockIdx.x) * (kWarps * 32 / lanes) + std::size_t(warp) * (32 / lanes) >= w.n) return;
  const bool active = row < w.n;
  const float* row_levels = active ? w.row_levels(row) : w.levels;
  float* levels = shared_levels[group];
  if (in_shared)
    for (int i = sub; i < kTable; i += lanes) levels[i] = row_levels[i];
  __syncwarp();
  auto level = [&](std::uint32_t code) { return in_shared ? levels[code] : w.level(row_levels, code); };

  const std::size_t units = (packed_row_bytes(w.k, kBits) + 15) / 16;
  const std::size_t per_split = (units + gridDim.y - 1) / gridDim.y;
  const std::size_t first = std::size_t(blockIdx.y) * per_split;
  const std::size_t last = active ? min(units, first + per_split) : first;  // inactive: no work
  float acc[kBatch];
#pragma unroll
  for (int i = 0; i < kBatch; ++i) acc[i] = 0.0f;
  row_partial<kBits, kBatch, true>(reinterpret_cast<const uint4*>(w.row_codes(active ? row : 0)), first, last, sub,
                                   lanes, x, w.k, m, x_vectors, level, acc);
#pragma unroll
  for (int i = 0; i < kBatch; ++i) {
    const float sum = group_sum(acc[i], lanes);
    if (active && sub == 0 && i < m) {
      if (partial) {
        partial[(std::size_t(blockIdx.y) * std::size_t(m) + std::size_t(i)) * w.n + row] = sum;
      } else {
        const float out = sum + (bias ? bias[row] : 0.0f);
        y[std::size_t(i) * w.n + row] = relu ? fmaxf(out, 0.0f) : out;
      }
    }
  }
}

// y[i][r] = act(sum over slices s, in order, of partial[s][i][r] + bias[r]).
__global__ void finish_split_k(const float* __restrict__ partial, unsigned splits, std::size_t count, std::size_t n,
                               const float* __restrict__ bias, bool relu, float* __restrict__ y) {
  const std::size_t e = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= count) return;
  float sum = 0.0f;
  for (unsigned s = 0; s < splits; ++s) sum += partial[std::size_t(s) * count + e];
  const float out = sum + (bias ? bias[e % n] : 0.0f);
  y[e] = relu ? fmaxf(out, 0.0f) : out;
}

// Large batch: a 64 x 64 tile of Y per block of 256 threads, each thread a 4 x 4 sub-tile; k in
// steps of 16: the X tile is copied and the W tile decoded into shared memory, then 16 rank-1
// updates. Shared tiles are stored k-major with one float of padding against bank conflicts.
constexpr int kTile = 64, kStep = 16;

template <int kBits>
__global__ void __launch_bounds__(256) qgemm_tiled_kernel(const float* __restrict__ x, std::size_t m,
                                                          DeviceQuantizedMatrix w, const float* __restrict__ bias,
                                                          bool relu, float* __restrict__ y) {
  __shared__ float xs[kStep][kTile + 1];
  __shared__ float ws[kStep][kTile + 1];
  const std::size_t row0 = std::size_t(blockIdx.y) * kTile;  // rows of X / Y
  const std::size_t col0 = std::size_t(blockIdx.x) * kTile;  // rows of W / columns of Y
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float acc[4][4] = {};
  for (std::size_t k0 = 0; k0 < w.k; k0 += kStep) {
    for (int e = threadIdx.x; e < kTile * kStep; e += 256) {
      const int r = e / kStep, kk = e % kStep;
      const std::size_t gk = k0 + kk;
      const std::size_t gx = row0 + r, gw = col0 + r;
      xs[kk][r] = (gx < m && gk < w.k) ? x[gx * w.k + gk] : 0.0f;
      ws[kk][r] = (gw < w.n && gk < w.k) ? w.level(w.row_levels(gw), code_at<kBits>(w.row_codes(gw), gk)) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kStep; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = xs[kk][ty * 4 + i], b[i] = ws[kk][tx * 4 + i];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const std::size_t r = row0 + ty * 4 + i, c = col0 + tx * 4 + j;
      if (r < m && c < w.n) {
        const float out = acc[i][j] + (bias ? bias[c] : 0.0f);
        y[r * w.n + c] = relu ? fmaxf(out, 0.0f) : out;
      }
    }
}

// Slices of k for the small-batch path: enough blocks to give every multiprocessor two, when the
// rows alone do not and the rows are long enough to cut (32 units, a warp's step, per slice).
unsigned split_k_slices(std::size_t blocks, std::size_t units) {
  int device = 0, multiprocessors = 0;
  NUQ_CUDA_CHECK(cudaGetDevice(&device));
  NUQ_CUDA_CHECK(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device));
  if (blocks >= std::size_t(multiprocessors)) return 1;
  const std::size_t wanted = (2 * std::size_t(multiprocessors) + blocks - 1) / blocks;
  return unsigned(std::max<std::size_t>(1, std::min({wanted, units / 32, std::size_t(kMaxSplits)})));
}

template <typename TX, int kBits, int kBatch>
void launch_small(const TX* x, std::size_t m, const DeviceQuantizedMatrix& w, const float* bias, bool relu,
                  float* y, cudaStream_t stream) {
  constexpr int kWarps = 8;
  const std::size_t units = (packed_row_bytes(w.k, kBits) + 15) / 16;
  const int lanes = lanes_per_row(units);
  const std::size_t rows_per_block = kWarps * 32 / std::size_t(lanes);
  const std::size_t blocks = (w.n + rows_per_block - 1) / rows_per_block;
  NUQ_REQUIRE(blocks <= 0x7FFFFFFFu, "qgemm: ", w.n, " rows exceed the grid");
  const unsigned splits = lanes == 32 ? split_k_slices(blocks, units) : 1;
  // Loads of four elements of X need its rows on boundaries of four elements.
  const bool x_vectors = w.k % 4 == 0 && reinterpret_cast<std::uintptr_t>(x) % (4 * sizeof(TX)) == 0;
  const dim3 grid(unsigned(blocks), splits);
  run_split_k(splits, m, w.n, bias, relu, y, stream, [&](float* partial) {
    qgemm_small_kernel<TX, kBits, kBatch, kWarps>
        <<<grid, 32 * kWarps, 0, stream>>>(x, int(m), w, bias, relu, x_vectors, lanes, y, partial);
  });
}

template <typename TX, int kBits>
void launch_small_batch(const TX* x, std::size_t m, const DeviceQuantizedMatrix& w, const float* bias, bool relu,
                        float* y, cudaStream_t stream) {
  if (m <= 4)
    launch_small<TX, kBits, 4>(x, m, w, bias, relu, y, stream);
  else
    launch_small<TX, kBits, int(kSmallBatch)>(x, m, w, bias, relu, y, stream);
}

template <int kBits>
void launch_for_width(const float* x, std::size_t m, const DeviceQuantizedMatrix& w, const float* bias, bool relu,
                      float* y, cudaStream_t stream) {
  if (m <= kSmallBatch) return launch_small_batch<float, kBits>(x, m, w, bias, relu, y, stream);
  const std::size_t tiles_m = (m + kTile - 1) / kTile;
  NUQ_REQUIRE(tiles_m <= 65535, "qgemm: a batch of ", m, " rows exceeds the grid (", 65535 * kTile, " rows)");
  const dim3 grid(unsigned((w.n + kTile - 1) / kTile), unsigned(tiles_m));
  qgemm_tiled_kernel<kBits><<<grid, 256, 0, stream>>>(x, m, w, bias, relu, y);
  NUQ_CUDA_CHECK_LAUNCH();
}

__global__ void bias_relu_kernel(float* __restrict__ y, std::size_t count, std::size_t n, const float* __restrict__ bias,
                                 bool relu) {
  const std::size_t e = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= count) return;
  const float v = y[e] + (bias ? bias[e % n] : 0.0f);
  y[e] = relu ? fmaxf(v, 0.0f) : v;
}

}  // namespace

void launch_bias_relu(float* d_y, std::size_t m, std::size_t n, const float* d_bias, bool relu, cudaStream_t stream) {
  const std::size_t count = m * n;
  if (count == 0 || (!d_bias && !relu)) return;
  bias_relu_kernel<<<unsigned((count + 255) / 256), 256, 0, stream>>>(d_y, count, n, d_bias, relu);
  NUQ_CUDA_CHECK_LAUNCH();
}

cudaError_t enqueue_finish_split_k(const float* partial, unsigned splits, std::size_t m, std::size_t n,
                                   const float* bias, bool relu, float* y, cudaStream_t stream) {
  const std::size_t count = m * n;
  finish_split_k<<<unsigned((count + 255) / 256), 256, 0, stream>>>(partial, splits, count, n, bias, relu, y);
  return cudaGetLastError();
}

void launch_qgemm(const float* d_x, std::size_t m, const DeviceQuantizedMatrix& w, const float* d_bias, bool relu,
                  float* d_y, cudaStream_t stream, Precision precision) {
  if (m == 0 || w.n == 0) return;
  if (precision == Precision::Bf16 && m > kSmallBatch) return launch_qgemm_tensor(d_x, m, w, d_bias, relu, d_y, stream);
  require_device_rows(w);  // (the tensor-core entry checks for itself)
  with_code_width(w.bits, "qgemm", [&](auto bits) {
    launch_for_width<decltype(bits)::value>(d_x, m, w, d_bias, relu, d_y, stream);
  });
}

void launch_qgemm(const __nv_bfloat16* d_x, std::size_t m, const DeviceQuantizedMatrix& w, const float* d_bias,
                  bool relu, float* d_y, cudaStream_t stream) {
  if (m == 0 || w.n == 0) return;
  if (m > kSmallBatch) return launch_qgemm_tensor(d_x, m, w, d_bias, relu, d_y, stream);
  require_device_rows(w);
  with_code_width(w.bits, "qgemm", [&](auto bits) {
    launch_small_batch<__nv_bfloat16, decltype(bits)::value>(d_x, m, w, d_bias, relu, d_y, stream);
  });
}

}  // namespace nuq::cuda
