#include "quantize.cuh"

#include <cub/block/block_reduce.cuh>
#include <cub/device/device_reduce.cuh>

#include <cmath>

#include "cuda_check.cuh"
#include "nuq/error.h"
#include "nuq/packed.h"

namespace nuq::cuda {
namespace {

// kBlockThreads: 256 threads; with up to 8 blocks per SM a 2-bit pass keeps 4 float loads per
// thread in flight, enough to stream from HBM. kSharedThresholds: tables up to 8 bits (255
// thresholds) are copied into shared memory once per block, so the search never leaves the SM.
constexpr int kBlockThreads = 256;
constexpr int kBlocksPerSm = 8;
constexpr std::uint32_t kSharedThresholds = 255;

__host__ __device__ QuantizeTotals empty_totals() {
  QuantizeTotals t;
  t.first_nonfinite = ~0ull;
  return t;
}

struct CombineTotals {
  __host__ __device__ QuantizeTotals operator()(const QuantizeTotals& a, const QuantizeTotals& b) const {
    QuantizeTotals s;
    s.signal = a.signal + b.signal;
    s.noise = a.noise + b.noise;
    s.max_error = a.max_error > b.max_error ? a.max_error : b.max_error;
    s.inside = a.inside + b.inside;
    s.nonfinite = a.nonfinite + b.nonfinite;
    s.first_nonfinite = a.first_nonfinite < b.first_nonfinite ? a.first_nonfinite : b.first_nonfinite;
    return s;
  }
};

__device__ std::size_t units_per_row(std::size_t cols, int bits) {
  return bits == 16 ? cols : (cols * std::size_t(bits) + 7) / 8;
}

__global__ void __launch_bounds__(kBlockThreads) quantize_kernel(const float* __restrict__ values, Piece piece,
                                                                 DeviceTable table, std::uint8_t* __restrict__ packed,
                                                                 QuantizeTotals* __restrict__ partials) {
  using BlockReduce = cub::BlockReduce<QuantizeTotals, kBlockThreads>;
  __shared__ typename BlockReduce::TempStorage storage;
  __shared__ float shared_thresholds[kSharedThresholds];
  __shared__ float shared_levels[kSharedThresholds + 1];
  const bool shared = !table.per_row && table.levels_count <= kSharedThresholds + 1;
  if (shared) {
    for (std::uint32_t i = threadIdx.x; i + 1 < table.levels_count; i += kBlockThreads)
      shared_thresholds[i] = table.thresholds[i];
    for (std::uint32_t i = threadIdx.x; i < (1u << table.bits) && i <= kSharedThresholds; i += kBlockThreads)
      shared_levels[i] = table.levels[i];
  }
  __syncthreads();

  const int bits = table.bits;
  const unsigned per_unit = bits < 8 ? 8u / unsigned(bits) : 1u;
  const std::size_t row_units = units_per_row(piece.cols, bits);
  const std::size_t row_bytes = (piece.cols * std::size_t(bits) + 7) / 8;
  const std::size_t units = piece.rows * row_units;
  QuantizeTotals t = empty_totals();
  for (std::size_t u = std::size_t(blockIdx.x) * kBlockThreads + threadIdx.x; u < units;
       u += std::size_t(gridDim.x) * kBlockThreads) {
    const std::size_t r = u / row_units;
    const std::size_t j = u - r * row_units;
    const std::size_t row = piece.first_row + r;
    const std::size_t group = table.per_row ? row : 0;
    GroupRule rule{shared ? shared_thresholds : table.thresholds + group * (table.levels_count - 1),
                   table.levels_count, table.params[group]};
    const float* levels = shared ? shared_levels : table.levels + (group << bits);
    const std::size_t c0 = j * per_unit;
    const std::size_t c1 = c0 + per_unit < piece.cols ? c0 + per_unit : piece.cols;
    std::uint32_t word = 0;
    for (std::size_t c = c0; c < c1; ++c) {
      const float w = values[r * piece.cols + c];
      const std::uint32_t code = code_of(w, rule);
      word |= code << ((c - c0) * unsigned(bits));
      if (!isfinite(w)) {
        ++t.nonfinite;
        const unsigned long long index = row * piece.total_cols + piece.first_col + c;
        t.first_nonfinite = index < t.first_nonfinite ? index : t.first_nonfinite;
        continue;
      }
      const double error = double(w) - double(levels[code]);
      t.signal += double(w) * double(w);
      t.noise += error * error;
      t.max_error = fmax(t.max_error, fabs(error));
      t.inside += (w >= rule.params.inside_lo && w <= rule.params.inside_hi) ? 1u : 0u;
    }
    std::uint8_t* out = packed + r * row_bytes;
    if (bits == 16) {
      out[2 * j] = std::uint8_t(word);
      out[2 * j + 1] = std::uint8_t(word >> 8);
    } else {
      out[j] = std::uint8_t(word);
    }
  }
  const QuantizeTotals block = BlockReduce(storage).Reduce(t, CombineTotals());
  if (threadIdx.x == 0) partials[blockIdx.x] = block;
}

__global__ void dequantize_kernel(const std::uint8_t* __restrict__ packed, Piece piece, DeviceTable table,
                                  float* __restrict__ values) {
  const std::size_t count = piece.rows * piece.cols;
  const std::size_t row_bytes = (piece.cols * std::size_t(table.bits) + 7) / 8;
  const unsigned mask = table.bits == 16 ? 0xFFFFu : (1u << table.bits) - 1u;
  for (std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += std::size_t(gridDim.x) * blockDim.x) {
    const std::size_t r = i / piece.cols, c = i - r * piece.cols;
    const std::uint8_t* row = packed + r * row_bytes;
    std::uint32_t code;
    if (table.bits == 16) {
      code = row[2 * c] | (std::uint32_t(row[2 * c + 1]) << 8);
    } else {
      const std::size_t bit = c * std::size_t(table.bits);
      code = (row[bit / 8] >> (bit % 8)) & mask;
    }
    const std::size_t group = table.per_row ? piece.first_row + r : 0;
    values[i] = table.levels[(group << table.bits) + code];
  }
}

int blocks_for(std::size_t units, int multiprocessors) {
  const std::size_t wanted = (units + kBlockThreads - 1) / kBlockThreads;
  const std::size_t cap = std::size_t(multiprocessors) * kBlocksPerSm;
  return int(wanted < 1 ? 1 : wanted > cap ? cap : wanted);
}

std::size_t aligned(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

std::size_t cub_bytes(int blocks) {
  std::size_t bytes = 0;
  NUQ_CUDA_CHECK(cub::DeviceReduce::Reduce(nullptr, bytes, static_cast<const QuantizeTotals*>(nullptr),
                                           static_cast<QuantizeTotals*>(nullptr), blocks, CombineTotals(),
                                           empty_totals()));
  return bytes;
}

}  // namespace

std::size_t quantize_units(const Piece& piece, int bits) {
  return piece.rows * (bits == 16 ? piece.cols : packed_row_bytes(piece.cols, bits));
}

std::size_t quantize_scratch_bytes(std::size_t units, int multiprocessors) {
  const int blocks = blocks_for(units, multiprocessors);
  return aligned(blocks * sizeof(QuantizeTotals)) + cub_bytes(blocks);
}

void launch_quantize(const float* d_values, const Piece& piece, const DeviceTable& table, std::uint8_t* d_packed,
                     QuantizeTotals* d_totals, void* d_scratch, std::size_t scratch_bytes, int multiprocessors,
                     cudaStream_t stream) {
  const std::size_t units = quantize_units(piece, table.bits);
  const int blocks = blocks_for(units, multiprocessors);
  NUQ_ASSERT(scratch_bytes >= quantize_scratch_bytes(units, multiprocessors), "quantize scratch too small");
  NUQ_ASSERT(piece.first_col % 16 == 0, "pieces start on 16-column boundaries");
  auto* partials = static_cast<QuantizeTotals*>(d_scratch);
  void* temp = static_cast<char*>(d_scratch) + aligned(blocks * sizeof(QuantizeTotals));
  std::size_t temp_bytes = scratch_bytes - aligned(blocks * sizeof(QuantizeTotals));
  quantize_kernel<<<blocks, kBlockThreads, 0, stream>>>(d_values, piece, table, d_packed, partials);
  NUQ_CUDA_CHECK_LAUNCH();
  NUQ_CUDA_CHECK(cub::DeviceReduce::Reduce(temp, temp_bytes, partials, d_totals, blocks, CombineTotals(),
                                           empty_totals(), stream));
}

void launch_dequantize(const std::uint8_t* d_packed, const Piece& piece, const DeviceTable& table, float* d_values,
                       int multiprocessors, cudaStream_t stream) {
  const std::size_t count = piece.rows * piece.cols;
  if (count == 0) return;
  dequantize_kernel<<<blocks_for(count, multiprocessors), kBlockThreads, 0, stream>>>(d_packed, piece, table,
                                                                                      d_values);
  NUQ_CUDA_CHECK_LAUNCH();
}

}  // namespace nuq::cuda
