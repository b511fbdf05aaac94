#include "qgemm.cuh"

#include <algorithm>
#include <cstdint>

#include "cuda_check.cuh"
#include "nuq/error.h"
#include "nuq/packed.h"

namespace nuq::cuda {
namespace {

// Levels of up to 8-bit codes live in shared memory (at most 1 KiB); 16-bit tables (256 KiB) are
// read through L1/L2.
constexpr int kSharedLevels = 256;

// The small-batch path splits a row's k across blocks (split-K) when the rows alone give fewer
// blocks than there are multiprocessors, into at most kMaxSplits parts of at least kMinUnitsPerSplit
// 16-byte units (one per lane of a warp).
constexpr unsigned kMaxSplits = 16, kMinUnitsPerSplit = 32;

// Small batch: kWarps warps per block, one output row per warp; blockIdx.y picks a slice of the row
// (split-K). Each lane loads 16 bytes of codes at a time (a warp: 512 contiguous bytes a step),
// decodes them through its row's table in shared memory (up to 16 levels each sit in their own
// bank, so any pattern of codes is free of bank conflicts at 1, 2 and 4 bits) and meets the
// matching columns of every row of X, four at a time (float4 loads when X's rows are 16-byte
// aligned). A shuffle reduction ends each dot product. With one slice, bias and ReLU are applied
// here; with several, each writes its partial sums to partial[slice][i][row] and finish_split_k
// adds them in order (deterministic: the same result every run).
// kBatch: the batch size rounded up to a compile-time bound so the accumulators stay in registers.
template <int kBits, int kBatch, int kWarps>
__global__ void __launch_bounds__(32 * kWarps) qgemm_small_kernel(const float* __restrict__ x, int m,
                                                                  DeviceQuantizedMatrix w,
                                                                  const float* __restrict__ bias, bool relu,
                                                                  bool x_vectors, float* __restrict__ y,
                                                                  float* __restrict__ partial) {
  __shared__ float shared_levels[kWarps][kSharedLevels];
  constexpr bool in_shared = kBits <= 8;
  constexpr int kCodesPerWord = 32 / kBits, kCodesPerUnit = 128 / kBits;
  constexpr std::uint32_t kMask = (1u << kBits) - 1u;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const std::size_t row = std::size_t(blockIdx.x) * kWarps + warp;
  if (row >= w.n) return;  // whole warps leave: no block-wide barrier follows
  const float* row_levels = w.row_levels(row);
  float* levels = shared_levels[warp];
  if (in_shared)
    for (int i = lane; i < (1 << (kBits <= 8 ? kBits : 8)); i += 32) levels[i] = row_levels[i];
  __syncwarp();
  auto level = [&](std::uint32_t code) { return in_shared ? levels[code] : __ldg(row_levels + code); };

  const std::size_t units = (packed_row_bytes(w.k, kBits) + 15) / 16;
  const std::size_t per_split = (units + gridDim.y - 1) / gridDim.y;
  const std::size_t first = std::size_t(blockIdx.y) * per_split, last = min(units, first + per_split);
  const uint4* codes = reinterpret_cast<const uint4*>(w.row_codes(row));
  float acc[kBatch];
#pragma unroll
  for (int i = 0; i < kBatch; ++i) acc[i] = 0.0f;
  for (std::size_t u = first + lane; u < last; u += 32) {
    const uint4 v = __ldg(codes + u);
    // Word q of the unit, without an array (a runtime index would put it in local memory).
    auto word = [&](int q) { return q == 0 ? v.x : q == 1 ? v.y : q == 2 ? v.z : v.w; };
    const std::size_t c0 = u * kCodesPerUnit;
    if (x_vectors && c0 + kCodesPerUnit <= w.k) {  // a whole unit inside the row: no column checks
#pragma unroll
      for (int t = 0; t < kCodesPerUnit; t += 4) {
        float l[4];
#pragma unroll
        for (int q = 0; q < 4; ++q)
          l[q] = level((word((t + q) / kCodesPerWord) >> (((t + q) % kCodesPerWord) * kBits)) & kMask);
#pragma unroll
        for (int i = 0; i < kBatch; ++i)
          if (i < m) {
            const float4 xv = __ldg(reinterpret_cast<const float4*>(x + std::size_t(i) * w.k + c0 + t));
            acc[i] = fmaf(l[0], xv.x, fmaf(l[1], xv.y, fmaf(l[2], xv.z, fmaf(l[3], xv.w, acc[i]))));
          }
      }
    } else {
#pragma unroll 4
      for (int t = 0; t < kCodesPerUnit; ++t) {
        const std::size_t c = c0 + std::size_t(t);
        if (c >= w.k) break;
        const float l = level((word(t / kCodesPerWord) >> ((t % kCodesPerWord) * kBits)) & kMask);
#pragma unroll
        for (int i = 0; i < kBatch; ++i)
          if (i < m) acc[i] = fmaf(l, __ldg(x + std::size_t(i) * w.k + c), acc[i]);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kBatch; ++i) {
    float sum = acc[i];
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xFFFFFFFFu, sum, offset);
    if (lane == 0 && i < m) {
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
      ws[kk][r] = (gw < w.n && gk < w.k) ? w.row_levels(gw)[code_at<kBits>(w.row_codes(gw), gk)] : 0.0f;
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
// rows alone do not and the rows are long enough to cut.
unsigned split_k_slices(std::size_t blocks, std::size_t units) {
  int device = 0, multiprocessors = 0;
  NUQ_CUDA_CHECK(cudaGetDevice(&device));
  NUQ_CUDA_CHECK(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device));
  if (blocks >= std::size_t(multiprocessors)) return 1;
  const std::size_t wanted = (2 * std::size_t(multiprocessors) + blocks - 1) / blocks;
  return unsigned(std::max<std::size_t>(1, std::min({wanted, units / kMinUnitsPerSplit, std::size_t(kMaxSplits)})));
}

template <int kBits, int kBatch>
void launch_small(const float* x, std::size_t m, const DeviceQuantizedMatrix& w, const float* bias, bool relu,
                  float* y, cudaStream_t stream) {
  constexpr int kWarps = 8;
  const std::size_t blocks = (w.n + kWarps - 1) / kWarps;
  NUQ_REQUIRE(blocks <= 0x7FFFFFFFu, "qgemm: ", w.n, " rows exceed the grid");
  const std::size_t units = (packed_row_bytes(w.k, kBits) + 15) / 16;
  const unsigned splits = split_k_slices(blocks, units);
  // float4 loads of X need its rows on 16-byte boundaries.
  const bool x_vectors = w.k % 4 == 0 && reinterpret_cast<std::uintptr_t>(x) % 16 == 0;
  const dim3 grid(unsigned(blocks), splits);
  if (splits == 1) {
    qgemm_small_kernel<kBits, kBatch, kWarps>
        <<<grid, 32 * kWarps, 0, stream>>>(x, int(m), w, bias, relu, x_vectors, y, nullptr);
    NUQ_CUDA_CHECK_LAUNCH();
    return;
  }
  const std::size_t count = m * w.n;
  float* partial = nullptr;  // from the stream's memory pool: no device-wide synchronisation
  NUQ_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&partial), splits * count * sizeof(float), stream));
  qgemm_small_kernel<kBits, kBatch, kWarps>
      <<<grid, 32 * kWarps, 0, stream>>>(x, int(m), w, bias, relu, x_vectors, y, partial);
  const cudaError_t launched = cudaGetLastError();
  if (launched == cudaSuccess)
    finish_split_k<<<unsigned((count + 255) / 256), 256, 0, stream>>>(partial, splits, count, w.n, bias, relu, y);
  const cudaError_t finished = cudaGetLastError();
  NUQ_CUDA_CHECK(cudaFreeAsync(partial, stream));
  NUQ_CUDA_CHECK(launched);
  NUQ_CUDA_CHECK(finished);
}

template <int kBits>
void launch_for_width(const float* x, std::size_t m, const DeviceQuantizedMatrix& w, const float* bias, bool relu,
                      float* y, cudaStream_t stream) {
  NUQ_REQUIRE(w.row_stride % kRowAlign == 0 && w.row_stride >= packed_row_bytes(w.k, kBits) &&
                  reinterpret_cast<std::uintptr_t>(w.codes) % kRowAlign == 0,
              "qgemm: device rows of codes must be ", kRowAlign, "-byte aligned (upload_weights lays them out)");
  if (m <= kSmallBatch) {
    if (m <= 4)
      launch_small<kBits, 4>(x, m, w, bias, relu, y, stream);
    else
      launch_small<kBits, int(kSmallBatch)>(x, m, w, bias, relu, y, stream);
    return;
  }
  const std::size_t tiles_m = (m + kTile - 1) / kTile;
  NUQ_REQUIRE(tiles_m <= 65535, "qgemm: a batch of ", m, " rows exceeds the grid (", 65535 * kTile, " rows)");
  const dim3 grid(unsigned((w.n + kTile - 1) / kTile), unsigned(tiles_m));
  qgemm_tiled_kernel<kBits><<<grid, 256, 0, stream>>>(x, m, w, bias, relu, y);
  NUQ_CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_qgemm(const float* d_x, std::size_t m, const DeviceQuantizedMatrix& w, const float* d_bias, bool relu,
                  float* d_y, cudaStream_t stream, Precision precision) {
  if (m == 0 || w.n == 0) return;
  if (precision == Precision::Bf16 && m > kSmallBatch) return launch_qgemm_tensor(d_x, m, w, d_bias, relu, d_y, stream);
  with_code_width(w.bits, "qgemm", [&](auto bits) {
    launch_for_width<decltype(bits)::value>(d_x, m, w, d_bias, relu, d_y, stream);
  });
}

}  // namespace nuq::cuda
