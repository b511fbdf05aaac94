// The large-batch quantized GEMM on tensor cores: Y = act(X W^T + b) with X and the levels rounded
// to BF16 and FP32 accumulation (WMMA 16 x 16 x 16). A block computes a 128 x 128 tile of Y with
// 8 warps (each 32 rows x 64 columns, 2 x 4 fragments); per k-step of 32 the X tile is converted
// to BF16 and the W tile decoded from its packed codes into BF16, both in shared memory, so the
// FP32 weights never exist anywhere. The epilogue goes fragment by fragment through a per-warp
// staging tile, adding the bias, applying ReLU and writing only inside Y.
#include <cuda_bf16.h>
#include <mma.h>

#include "cuda_check.cuh"
#include "nuq/error.h"
#include "nuq/packed.h"
#include "qgemm.cuh"

namespace nuq::cuda {
namespace {

constexpr int kTileM = 128, kTileN = 128, kStepK = 32;
constexpr int kPad = 8;                  // bf16 elements of padding per shared row (80-byte rows)
constexpr int kLd = kStepK + kPad;       // a multiple of 8, as WMMA needs for 16-bit types
constexpr int kWarpsM = 4, kWarpsN = 2;  // 8 warps: 4 x 32 rows, 2 x 64 columns
constexpr int kThreads = 32 * kWarpsM * kWarpsN;

template <int kBits>
__global__ void __launch_bounds__(kThreads) qgemm_tensor_kernel(const float* __restrict__ x, std::size_t m,
                                                                DeviceQuantizedMatrix w,
                                                                const float* __restrict__ bias, bool relu,
                                                                float* __restrict__ y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  __shared__ alignas(128) __nv_bfloat16 xs[kTileM][kLd];  // X tile, row-major: matrix_a
  __shared__ alignas(128) __nv_bfloat16 ws[kTileN][kLd];  // W tile [n][k]: matrix_b, column-major
  __shared__ alignas(128) float staging[kWarpsM * kWarpsN][16 * 16];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int warp_m = warp / kWarpsN, warp_n = warp % kWarpsN;
  const std::size_t row0 = std::size_t(blockIdx.y) * kTileM, col0 = std::size_t(blockIdx.x) * kTileN;

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  for (std::size_t k0 = 0; k0 < w.k; k0 += kStepK) {
    // X: 128 rows x 32 columns, 16 per thread, converted to BF16 (zero outside X).
    for (int e = threadIdx.x; e < kTileM * kStepK; e += kThreads) {
      const int r = e / kStepK, c = e % kStepK;
      const std::size_t gr = row0 + r, gc = k0 + c;
      xs[r][c] = __float2bfloat16(gr < m && gc < w.k ? x[gr * w.k + gc] : 0.0f);
    }
    // W: two threads per output row, 16 consecutive codes each, decoded through the row's levels.
    {
      const int r = threadIdx.x / 2, half = threadIdx.x % 2;
      const std::size_t gn = col0 + r;
      const std::uint8_t* codes = gn < w.n ? w.row_codes(gn) : nullptr;
      const float* levels = gn < w.n ? w.row_levels(gn) : nullptr;
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const int c = half * 16 + j;
        const std::size_t gc = k0 + c;
        ws[r][c] = __float2bfloat16(gn < w.n && gc < w.k ? __ldg(levels + code_at<kBits>(codes, gc)) : 0.0f);
      }
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kStepK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b[4];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], &xs[warp_m * 32 + i * 16][kk], kLd);
#pragma unroll
      for (int j = 0; j < 4; ++j) wmma::load_matrix_sync(b[j], &ws[warp_n * 64 + j * 16][kk], kLd);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }

  float* stage = staging[warp];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      wmma::store_matrix_sync(stage, acc[i][j], 16, wmma::mem_row_major);
      __syncwarp();
      const std::size_t r0 = row0 + warp_m * 32 + i * 16, c0 = col0 + warp_n * 64 + j * 16;
      for (int e = lane; e < 256; e += 32) {
        const std::size_t r = r0 + e / 16, c = c0 + e % 16;
        if (r < m && c < w.n) {
          const float out = stage[e] + (bias ? bias[c] : 0.0f);
          y[r * w.n + c] = relu ? fmaxf(out, 0.0f) : out;
        }
      }
      __syncwarp();
    }
#else
  __trap();  // the host refuses devices below compute capability 8.0 before launching
#endif
}

template <int kBits>
void launch_for_width(const float* x, std::size_t m, const DeviceQuantizedMatrix& w, const float* bias, bool relu,
                      float* y, cudaStream_t stream) {
  const std::size_t tiles_m = (m + kTileM - 1) / kTileM;
  NUQ_REQUIRE(tiles_m <= 65535, "qgemm: a batch of ", m, " rows exceeds the grid (", 65535 * kTileM, " rows)");
  const dim3 grid(unsigned((w.n + kTileN - 1) / kTileN), unsigned(tiles_m));
  qgemm_tensor_kernel<kBits><<<grid, kThreads, 0, stream>>>(x, m, w, bias, relu, y);
  NUQ_CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_qgemm_tensor(const float* d_x, std::size_t m, const DeviceQuantizedMatrix& w, const float* d_bias,
                         bool relu, float* d_y, cudaStream_t stream) {
  int device = 0, major = 0;
  NUQ_CUDA_CHECK(cudaGetDevice(&device));
  NUQ_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  NUQ_REQUIRE(major >= 8, "qgemm: BF16 tensor cores need compute capability 8.0 or newer (device ", device, " has ",
              major, ".x); use FP32");
  with_code_width(w.bits, "qgemm", [&](auto bits) {
    launch_for_width<decltype(bits)::value>(d_x, m, w, d_bias, relu, d_y, stream);
  });
}

}  // namespace nuq::cuda
