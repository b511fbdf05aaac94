// The large-batch quantized GEMM on tensor cores: Y = act(X W^T + b) with X (FP32 or BF16) and the
// levels in BF16 and FP32 accumulation (WMMA 16 x 16 x 16). A block computes a 128 x 128 tile of Y
// with 8 warps (each 32 rows x 64 columns, 2 x 4 fragments). Per k-step of 32 the X tile is
// converted to BF16 and the W tile decoded from its packed codes into BF16, both into shared
// memory, so the FP32 weights never exist anywhere. Two shared buffers: while the warps multiply
// one step, each thread already holds the next step's X and codes in registers (loaded before the
// multiply, stored after it), so global latency hides behind the tensor cores and one barrier a
// step suffices. The epilogue goes fragment by fragment through a per-warp staging tile (in the
// X buffers, free by then), adding the bias, applying ReLU and writing only inside Y.
#include <cuda_bf16.h>
#include <mma.h>

#include <cstdint>

#include "cuda_check.cuh"
#include "nuq/error.h"
#include "nuq/packed.h"
#include "qgemm.cuh"

namespace nuq::cuda {
namespace {

constexpr int kTileM = 128, kTileN = 128, kStepK = 32;
static_assert(kStepK == int(kRowCodes), "a k-step reads whole groups of a device row (device_row_stride)");
constexpr int kPad = 8;                  // bf16 elements of padding per shared row (80-byte rows)
constexpr int kLd = kStepK + kPad;       // a multiple of 8, as WMMA needs for 16-bit types
constexpr int kWarpsM = 4, kWarpsN = 2;  // 8 warps: 4 x 32 rows, 2 x 64 columns
constexpr int kThreads = 32 * kWarpsM * kWarpsN;
// Per thread and step: 16 consecutive elements of one row of the X tile, 16 codes of one row of W.
constexpr int kPerThread = kTileM * kStepK / kThreads;
static_assert(kPerThread == 16 && kTileN * kStepK / kThreads == 16, "two threads per row, 16 elements each");

// Words of 16 codes of kBits bits (one, half used, at 1 bit).
template <int kBits>
constexpr int kCodeWords = kBits < 2 ? 1 : kBits / 2;

// What one thread carries from global memory to the next step's shared buffers: 16 elements of X
// as BF16 pairs (element 2j in the low half of word j) and 16 codes.
template <int kBits>
struct Staged {
  std::uint32_t x[8];
  std::uint32_t codes[kCodeWords<kBits>];
};

__device__ __forceinline__ std::uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);  // .x (lo) is the low half
  return std::uint32_t(__bfloat16_as_ushort(pair.x)) | (std::uint32_t(__bfloat16_as_ushort(pair.y)) << 16);
}
__device__ __forceinline__ std::uint16_t bf16_bits(float v) { return __bfloat16_as_ushort(__float2bfloat16(v)); }
__device__ __forceinline__ std::uint16_t bf16_bits(__nv_bfloat16 v) { return __bfloat16_as_ushort(v); }

// 16 elements of X from (row, col) as BF16 pairs; zero past the batch or past k. Vector loads when
// the 16 lie inside the row and every row of X starts on a 16-byte boundary (`x_vectors`).
template <typename TX>
__device__ __forceinline__ void load_x(const TX* __restrict__ x, std::size_t m, std::size_t k, std::size_t row,
                                       std::size_t col, bool x_vectors, std::uint32_t (&out)[8]) {
  const TX* p = x + row * k + col;
  if (row < m && col + 16 <= k && x_vectors) {
    if constexpr (sizeof(TX) == 4) {
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const float4 v = __ldg(reinterpret_cast<const float4*>(p) + q);
        out[2 * q] = pack_bf16(v.x, v.y);
        out[2 * q + 1] = pack_bf16(v.z, v.w);
      }
    } else {
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        const uint4 v = __ldg(reinterpret_cast<const uint4*>(p) + q);
        out[4 * q] = v.x, out[4 * q + 1] = v.y, out[4 * q + 2] = v.z, out[4 * q + 3] = v.w;
      }
    }
    return;
  }
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const std::uint32_t lo = row < m && col + 2 * j < k ? bf16_bits(p[2 * j]) : 0u;
    const std::uint32_t hi = row < m && col + 2 * j + 1 < k ? bf16_bits(p[2 * j + 1]) : 0u;
    out[j] = lo | (hi << 16);
  }
}

// The 16 codes of columns [col, col + 16) of a device row (col a multiple of 16, so every load is
// aligned: rows start on 16-byte boundaries), packed as in nuq/packed.h, into words.
template <int kBits>
__device__ __forceinline__ void load_codes(const std::uint8_t* __restrict__ row, std::size_t col,
                                           std::uint32_t (&words)[kCodeWords<kBits>]) {
  const std::uint8_t* p = row + col * kBits / 8;
  if constexpr (kBits == 1) {
    words[0] = __ldg(reinterpret_cast<const unsigned short*>(p));
  } else if constexpr (kBits == 2) {
    words[0] = __ldg(reinterpret_cast<const unsigned int*>(p));
  } else if constexpr (kBits == 4) {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
    words[0] = v.x, words[1] = v.y;
  } else {
#pragma unroll
    for (int q = 0; q < kBits / 8; ++q) {  // 16 or 32 bytes
      const uint4 v = __ldg(reinterpret_cast<const uint4*>(p) + q);
      words[4 * q] = v.x, words[4 * q + 1] = v.y, words[4 * q + 2] = v.z, words[4 * q + 3] = v.w;
    }
  }
}

template <int kBits>
__device__ __forceinline__ std::uint32_t code_of(const std::uint32_t (&words)[kCodeWords<kBits>], int j) {
  constexpr int kPerWord = 32 / kBits;
  return (words[j / kPerWord] >> ((j % kPerWord) * kBits)) & ((1u << kBits) - 1u);
}

template <typename TX, int kBits>
__global__ void __launch_bounds__(kThreads) qgemm_tensor_kernel(const TX* __restrict__ x, std::size_t m,
                                                                DeviceQuantizedMatrix w,
                                                                const float* __restrict__ bias, bool relu,
                                                                bool x_vectors, float* __restrict__ y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  __shared__ alignas(128) __nv_bfloat16 xs[2][kTileM][kLd];  // X tiles, row-major: matrix_a
  __shared__ alignas(128) __nv_bfloat16 ws[2][kTileN][kLd];  // W tiles [n][k]: matrix_b, column-major
  static_assert(sizeof(xs) >= kWarpsM * kWarpsN * 16 * 16 * sizeof(float), "the epilogue's staging fits in xs");
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int warp_m = warp / kWarpsN, warp_n = warp % kWarpsN;
  const std::size_t row0 = std::size_t(blockIdx.y) * kTileM, col0 = std::size_t(blockIdx.x) * kTileN;
  // This thread's share of each step: half `half` of row `r` of both tiles.
  const int r = threadIdx.x / 2, half = threadIdx.x % 2;
  const std::size_t gn = col0 + r;
  const std::uint8_t* codes = gn < w.n ? w.row_codes(gn) : nullptr;
  const float* levels = gn < w.n ? w.row_levels(gn) : nullptr;

  Staged<kBits> staged;
  auto load = [&](std::size_t k0) {
    load_x(x, m, w.k, row0 + r, k0 + half * 16, x_vectors, staged.x);
    if (codes) load_codes<kBits>(codes, k0 + half * 16, staged.codes);
  };
  auto store = [&](int buffer, std::size_t k0) {
    uint4* xrow = reinterpret_cast<uint4*>(&xs[buffer][r][half * 16]);  // 16-byte aligned: 80-byte rows
    xrow[0] = make_uint4(staged.x[0], staged.x[1], staged.x[2], staged.x[3]);
    xrow[1] = make_uint4(staged.x[4], staged.x[5], staged.x[6], staged.x[7]);
    std::uint32_t decoded[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      float pair[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int c = 2 * j + h;
        pair[h] = codes && k0 + half * 16 + c < w.k ? w.level(levels, code_of<kBits>(staged.codes, c)) : 0.0f;
      }
      decoded[j] = pack_bf16(pair[0], pair[1]);
    }
    uint4* wrow = reinterpret_cast<uint4*>(&ws[buffer][r][half * 16]);
    wrow[0] = make_uint4(decoded[0], decoded[1], decoded[2], decoded[3]);
    wrow[1] = make_uint4(decoded[4], decoded[5], decoded[6], decoded[7]);
  };

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  load(0);
  store(0, 0);
  __syncthreads();
  int buffer = 0;
  for (std::size_t k0 = 0; k0 < w.k; k0 += kStepK) {
    const bool more = k0 + kStepK < w.k;
    if (more) load(k0 + kStepK);  // in flight while the tensor cores work on this step
#pragma unroll
    for (int kk = 0; kk < kStepK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b[4];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], &xs[buffer][warp_m * 32 + i * 16][kk], kLd);
#pragma unroll
      for (int j = 0; j < 4; ++j) wmma::load_matrix_sync(b[j], &ws[buffer][warp_n * 64 + j * 16][kk], kLd);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
    }
    // The other buffer was last read in the previous step, before the barrier that ended it.
    if (more) store(buffer ^ 1, k0 + kStepK);
    __syncthreads();
    buffer ^= 1;
  }

  float* stage = reinterpret_cast<float*>(&xs[0][0][0]) + warp * 16 * 16;  // every warp is past the loop
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      wmma::store_matrix_sync(stage, acc[i][j], 16, wmma::mem_row_major);
      __syncwarp();
      const std::size_t r0 = row0 + warp_m * 32 + i * 16, c0 = col0 + warp_n * 64 + j * 16;
      for (int e = lane; e < 256; e += 32) {
        const std::size_t rr = r0 + e / 16, c = c0 + e % 16;
        if (rr < m && c < w.n) {
          const float out = stage[e] + (bias ? bias[c] : 0.0f);
          y[rr * w.n + c] = relu ? fmaxf(out, 0.0f) : out;
        }
      }
      __syncwarp();
    }
#else
  __trap();  // the host refuses devices below compute capability 8.0 before launching
#endif
}

template <typename TX, int kBits>
void launch_for_width(const TX* x, std::size_t m, const DeviceQuantizedMatrix& w, const float* bias, bool relu,
                      float* y, cudaStream_t stream) {
  const std::size_t tiles_m = (m + kTileM - 1) / kTileM;
  NUQ_REQUIRE(tiles_m <= 65535, "qgemm: a batch of ", m, " rows exceeds the grid (", 65535 * kTileM, " rows)");
  require_device_rows(w);
  // 16 elements of a row at a time: vector loads need every row of X on a 16-byte boundary.
  const bool x_vectors = (w.k * sizeof(TX)) % 16 == 0 && reinterpret_cast<std::uintptr_t>(x) % 16 == 0;
  const dim3 grid(unsigned((w.n + kTileN - 1) / kTileN), unsigned(tiles_m));
  qgemm_tensor_kernel<TX, kBits><<<grid, kThreads, 0, stream>>>(x, m, w, bias, relu, x_vectors, y);
  NUQ_CUDA_CHECK_LAUNCH();
}

template <typename TX>
void launch_tensor(const TX* d_x, std::size_t m, const DeviceQuantizedMatrix& w, const float* d_bias, bool relu,
                   float* d_y, cudaStream_t stream) {
  int device = 0, major = 0;
  NUQ_CUDA_CHECK(cudaGetDevice(&device));
  NUQ_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  NUQ_REQUIRE(major >= 8, "qgemm: BF16 tensor cores need compute capability 8.0 or newer (device ", device, " has ",
              major, ".x); use FP32");
  with_code_width(w.bits, "qgemm", [&](auto bits) {
    launch_for_width<TX, decltype(bits)::value>(d_x, m, w, d_bias, relu, d_y, stream);
  });
}

}  // namespace

void launch_qgemm_tensor(const float* d_x, std::size_t m, const DeviceQuantizedMatrix& w, const float* d_bias,
                         bool relu, float* d_y, cudaStream_t stream) {
  launch_tensor(d_x, m, w, d_bias, relu, d_y, stream);
}

void launch_qgemm_tensor(const __nv_bfloat16* d_x, std::size_t m, const DeviceQuantizedMatrix& w,
                         const float* d_bias, bool relu, float* d_y, cudaStream_t stream) {
  launch_tensor(d_x, m, w, d_bias, relu, d_y, stream);
}

}  // namespace nuq::cuda
