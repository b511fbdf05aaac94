#include "qgemm.cuh"

#include "cuda_check.cuh"
#include "nuq/error.h"
#include "nuq/packed.h"

namespace nuq::cuda {
namespace {

// Levels of up to 8-bit codes live in shared memory (at most 1 KiB); 16-bit tables (256 KiB) are
// read through L1/L2.
constexpr int kSharedLevels = 256;

// Small batch: kWarps warps per block, one output row per warp. Lanes take whole bytes of the row
// in turn (32 consecutive bytes per warp step: coalesced), decode their codes and multiply them
// with the matching columns of every row of X; a shuffle reduction ends each dot product.
// kBatch: the batch size rounded up to a compile-time bound so the accumulators stay in registers.
template <int kBits, int kBatch, int kWarps>
__global__ void __launch_bounds__(32 * kWarps) qgemm_small_kernel(const float* __restrict__ x, int m,
                                                                  DeviceQuantizedMatrix w,
                                                                  const float* __restrict__ bias, bool relu,
                                                                  float* __restrict__ y) {
  // Each warp keeps its row's table (the matrix's, or the row's own) in its slice of shared memory.
  __shared__ float shared_levels[kWarps][kSharedLevels];
  constexpr bool in_shared = kBits <= 8;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const std::size_t row = std::size_t(blockIdx.x) * kWarps + warp;
  if (row >= w.n) return;  // whole warps leave: no block-wide barrier follows
  const float* row_levels = w.row_levels(row);
  if (in_shared)
    for (int i = lane; i < (1 << (kBits <= 8 ? kBits : 8)); i += 32) shared_levels[warp][i] = row_levels[i];
  __syncwarp();
  const std::size_t row_bytes = packed_row_bytes(w.k, kBits);
  const std::uint8_t* codes = w.codes + row * row_bytes;
  constexpr unsigned per_byte = kBits < 8 ? 8 / kBits : 1;
  constexpr unsigned bytes_per_step = kBits == 16 ? 2 : 1;
  float acc[kBatch];
#pragma unroll
  for (int i = 0; i < kBatch; ++i) acc[i] = 0.0f;
  const std::size_t units = kBits == 16 ? w.k : row_bytes / bytes_per_step;
  for (std::size_t u = lane; u < units; u += 32) {
#pragma unroll
    for (unsigned j = 0; j < per_byte; ++j) {
      const std::size_t c = u * per_byte + j;
      if (c >= w.k) break;
      const std::uint32_t code = code_at<kBits>(codes, c);
      const float level = in_shared ? shared_levels[warp][code] : row_levels[code];
#pragma unroll
      for (int i = 0; i < kBatch; ++i)
        if (i < m) acc[i] = fmaf(level, x[std::size_t(i) * w.k + c], acc[i]);
    }
  }
#pragma unroll
  for (int i = 0; i < kBatch; ++i) {
    float sum = acc[i];
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xFFFFFFFFu, sum, offset);
    if (lane == 0 && i < m) {
      float out = sum + (bias ? bias[row] : 0.0f);
      y[std::size_t(i) * w.n + row] = relu ? fmaxf(out, 0.0f) : out;
    }
  }
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
  const std::size_t row_bytes = packed_row_bytes(w.k, kBits);
  float acc[4][4] = {};
  for (std::size_t k0 = 0; k0 < w.k; k0 += kStep) {
    for (int e = threadIdx.x; e < kTile * kStep; e += 256) {
      const int r = e / kStep, kk = e % kStep;
      const std::size_t gk = k0 + kk;
      const std::size_t gx = row0 + r, gw = col0 + r;
      xs[kk][r] = (gx < m && gk < w.k) ? x[gx * w.k + gk] : 0.0f;
      ws[kk][r] = (gw < w.n && gk < w.k) ? w.row_levels(gw)[code_at<kBits>(w.codes + gw * row_bytes, gk)] : 0.0f;
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

template <int kBits>
void launch_for_width(const float* x, std::size_t m, const DeviceQuantizedMatrix& w, const float* bias, bool relu,
                      float* y, cudaStream_t stream) {
  if (m <= kSmallBatch) {
    constexpr int kWarps = 8;
    const dim3 grid(unsigned((w.n + kWarps - 1) / kWarps));
    if (m <= 4)
      qgemm_small_kernel<kBits, 4, kWarps><<<grid, 32 * kWarps, 0, stream>>>(x, int(m), w, bias, relu, y);
    else
      qgemm_small_kernel<kBits, int(kSmallBatch), kWarps><<<grid, 32 * kWarps, 0, stream>>>(x, int(m), w, bias, relu, y);
  } else {
    const std::size_t tiles_m = (m + kTile - 1) / kTile;
    NUQ_REQUIRE(tiles_m <= 65535, "qgemm: a batch of ", m, " rows exceeds the grid (", 65535 * kTile, " rows)");
    const dim3 grid(unsigned((w.n + kTile - 1) / kTile), unsigned(tiles_m));
    qgemm_tiled_kernel<kBits><<<grid, 256, 0, stream>>>(x, m, w, bias, relu, y);
  }
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
