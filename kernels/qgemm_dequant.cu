// Dequantize to BF16 + cuBLAS for large batches (qgemm_dequant.cuh). One thread decodes one
// 32-bit word of a row's codes (32 / bits codes, two to thirty-two) into BF16 pairs and stores them
// with the widest aligned stores the row allows; the levels come through the read-only cache (a
// table of at most 65,536 levels per matrix or per row) or from the uniform grid.
#include "qgemm_dequant.cuh"

#include <climits>
#include <cstdint>

#include "cublas_check.cuh"
#include "cuda_check.cuh"
#include "nuq/error.h"
#include "nuq/mma_fragment.h"

namespace nuq::cuda {
namespace {

// Scratch from the stream's pool, given back (in stream order) however the scope is left.
class PoolScratch {
 public:
  PoolScratch(std::size_t bytes, cudaStream_t stream) : stream_(stream) {
    if (bytes) NUQ_CUDA_CHECK(cudaMallocAsync(&data_, bytes, stream));
  }
  PoolScratch(const PoolScratch&) = delete;
  PoolScratch& operator=(const PoolScratch&) = delete;
  ~PoolScratch() {
    if (data_) NUQ_CUDA_CHECK_NOTHROW(cudaFreeAsync(data_, stream_));
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  void* data_ = nullptr;
  cudaStream_t stream_;
};

template <int kBits>
__global__ void dequantize_bf16_kernel(DeviceQuantizedMatrix w, std::size_t first_row, std::size_t rows,
                                       std::uint16_t* __restrict__ out) {
  constexpr int kCodes = 32 / kBits, kPairs = kCodes / 2;
  const std::size_t words_per_row = (w.k * kBits + 31) / 32;  // inside the padded device row
  const std::size_t total = rows * words_per_row;
  const bool pairs_aligned = w.k % 2 == 0, quads_aligned = w.k % 8 == 0;
  for (std::size_t item = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; item < total;
       item += std::size_t(gridDim.x) * blockDim.x) {
    const std::size_t r = item / words_per_row, word_index = item % words_per_row;
    const std::size_t row = first_row + r, c0 = word_index * kCodes;
    const std::uint32_t word = __ldg(reinterpret_cast<const std::uint32_t*>(w.row_codes(row)) + word_index);
    const float* table = w.row_levels(row);
    std::uint32_t pairs[kPairs];
#pragma unroll
    for (int p = 0; p < kPairs; ++p) {
      const std::uint32_t low = (word >> (2 * p * kBits)) & ((1u << kBits) - 1u);
      const std::uint32_t high = (word >> ((2 * p + 1) * kBits)) & ((1u << kBits) - 1u);
      pairs[p] = std::uint32_t(mma::bf16_round(w.level(table, low))) |
                 std::uint32_t(mma::bf16_round(w.level(table, high))) << 16;
    }
    std::uint16_t* dst = out + r * w.k + c0;
    if (c0 + kCodes <= w.k && pairs_aligned) {
      if constexpr (kPairs % 4 == 0) {
        if (quads_aligned) {
#pragma unroll
          for (int p = 0; p < kPairs; p += 4)
            reinterpret_cast<uint4*>(dst)[p / 4] = make_uint4(pairs[p], pairs[p + 1], pairs[p + 2], pairs[p + 3]);
          continue;
        }
      }
#pragma unroll
      for (int p = 0; p < kPairs; ++p) reinterpret_cast<std::uint32_t*>(dst)[p] = pairs[p];
      continue;
    }
#pragma unroll
    for (int p = 0; p < kPairs; ++p)  // the row's last word, or rows of odd length: one element at a time
      for (int half = 0; half < 2; ++half)
        if (c0 + 2 * p + half < w.k) dst[2 * p + half] = std::uint16_t(pairs[p] >> (16 * half));
  }
}

__global__ void round_to_bf16_kernel(const float* __restrict__ x, std::size_t count, std::uint16_t* __restrict__ out) {
  for (std::size_t e = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count;
       e += std::size_t(gridDim.x) * blockDim.x)
    out[e] = mma::bf16_round(x[e]);
}

unsigned grid_for(std::size_t items) {
  return unsigned(std::min<std::size_t>((items + 255) / 256, std::size_t{1} << 20));
}

}  // namespace

std::size_t dequant_band_rows(std::size_t n, std::size_t k) {
  const std::size_t fit = kDequantBandBytes / (std::max<std::size_t>(k, 1) * sizeof(__nv_bfloat16));
  const std::size_t rows = std::max(kDequantBandAlign, fit / kDequantBandAlign * kDequantBandAlign);
  return std::min(rows, n);
}

void launch_dequantize_bf16(const DeviceQuantizedMatrix& w, std::size_t first_row, std::size_t rows,
                            __nv_bfloat16* d_out, cudaStream_t stream) {
  NUQ_REQUIRE(first_row + rows <= w.n, "dequantize: rows ", first_row, " to ", first_row + rows, " of ", w.n);
  NUQ_REQUIRE(reinterpret_cast<std::uintptr_t>(d_out) % 16 == 0, "dequantize: the BF16 rows must start on a 16-byte "
              "boundary (the decode's vector stores)");
  if (rows == 0 || w.k == 0) return;
  require_device_rows(w);
  with_code_width(w.bits, "dequantize", [&](auto bits) {
    constexpr int kBits = decltype(bits)::value;
    const std::size_t words = rows * ((w.k * kBits + 31) / 32);
    dequantize_bf16_kernel<kBits><<<grid_for(words), 256, 0, stream>>>(w, first_row, rows,
                                                                       reinterpret_cast<std::uint16_t*>(d_out));
    NUQ_CUDA_CHECK_LAUNCH();
  });
}

void launch_qgemm_dequant_cublas(const __nv_bfloat16* d_x, std::size_t m, const DeviceQuantizedMatrix& w,
                                 const float* d_bias, bool relu, float* d_y, cublasHandle_t handle,
                                 cudaStream_t stream) {
  if (m == 0 || w.n == 0) return;
  NUQ_REQUIRE(m <= INT_MAX && w.n <= INT_MAX && w.k <= INT_MAX, "qgemm: ", m, " x ", w.n, " x ", w.k,
              " exceeds cuBLAS's int dimensions");
  if (w.k == 0) {  // an empty sum: Y is the bias
    NUQ_CUDA_CHECK(cudaMemsetAsync(d_y, 0, m * w.n * sizeof(float), stream));
    launch_bias_relu(d_y, m, w.n, d_bias, relu, stream);
    return;
  }
  NUQ_CUBLAS_CHECK(cublas().set_stream(handle, stream));
  const std::size_t band = dequant_band_rows(w.n, w.k);
  const PoolScratch weights(band * w.k * sizeof(__nv_bfloat16), stream);
  const float one = 1.0f, zero = 0.0f;
  for (std::size_t first = 0; first < w.n; first += band) {
    const std::size_t rows = std::min(band, w.n - first);
    launch_dequantize_bf16(w, first, rows, weights.as<__nv_bfloat16>(), stream);
    // Row-major Y[m, n] = X W^T is column-major Y^T[n, m]; this band fills its rows first..first+rows.
    NUQ_CUBLAS_CHECK(cublas().gemm_ex(handle, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), int(m), int(w.k), &one,
                                  weights.as<__nv_bfloat16>(), CUDA_R_16BF, int(w.k), d_x, CUDA_R_16BF, int(w.k), &zero,
                                  d_y + first, CUDA_R_32F, int(w.n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  launch_bias_relu(d_y, m, w.n, d_bias, relu, stream);
}

void launch_qgemm_dequant_cublas(const float* d_x, std::size_t m, const DeviceQuantizedMatrix& w, const float* d_bias,
                                 bool relu, float* d_y, cublasHandle_t handle, cudaStream_t stream) {
  if (m == 0 || w.n == 0) return;
  NUQ_REQUIRE(m <= INT_MAX && w.n <= INT_MAX && w.k <= INT_MAX, "qgemm: ", m, " x ", w.n, " x ", w.k,
              " exceeds cuBLAS's int dimensions");
  const PoolScratch x(m * w.k * sizeof(__nv_bfloat16), stream);
  if (m * w.k) {
    round_to_bf16_kernel<<<grid_for(m * w.k), 256, 0, stream>>>(d_x, m * w.k, x.as<std::uint16_t>());
    NUQ_CUDA_CHECK_LAUNCH();
  }
  launch_qgemm_dequant_cublas(x.as<__nv_bfloat16>(), m, w, d_bias, relu, d_y, handle, stream);
}

}  // namespace nuq::cuda
