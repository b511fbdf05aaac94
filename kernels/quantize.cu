#include "quantize.cuh"

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cuda_check.cuh"
#include "nuq/error.h"
#include "nuq/packed.h"
#include "one_wave.cuh"
#include "pipeline_thread.h"

namespace nuq::cuda {
namespace {

// A per-tensor table of up to 256 levels (stored widths up to 8 bits) is copied into shared memory
// once per block, so searches and level look-ups never leave the SM; wider or per-row tables are
// read from global memory (through L1).
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

// The table as the block's threads read it: staged into shared memory when it is one group of at
// most 256 levels.
template <int B>
__device__ pipeline::TableSource stage_table(const DeviceTable& table, float* shared_thresholds, float* shared_levels) {
  pipeline::TableSource source{table.thresholds, table.levels, table.params, table.levels_count, table.per_row};
  if (B <= 8 && !table.per_row && table.levels_count <= kSharedThresholds + 1) {
    for (std::uint32_t i = threadIdx.x; i + 1 < table.levels_count; i += kPipelineThreads)
      shared_thresholds[i] = table.thresholds[i];
    for (std::uint32_t i = threadIdx.x; i < (1u << B) && i <= kSharedThresholds; i += kPipelineThreads)
      shared_levels[i] = table.levels[i];
    source.thresholds = shared_thresholds;
    source.levels = shared_levels;
  }
  __syncthreads();
  return source;
}

__device__ void write_block_totals(const pipeline::ErrorThread& mine, QuantizeTotals* partials) {
  using BlockReduce = cub::BlockReduce<QuantizeTotals, kPipelineThreads>;
  __shared__ typename BlockReduce::TempStorage storage;
  const QuantizeTotals block = BlockReduce(storage).Reduce(mine.totals(), CombineTotals());
  if (threadIdx.x == 0) partials[blockIdx.x] = block;
}

// The flat word layout (pipeline_layout.h): items of 16 (32) weights in float4 loads, whole words
// of codes stored per item.
template <int B, bool PerRow>
__global__ void __launch_bounds__(kPipelineThreads)
    quantize_flat_kernel(const float* __restrict__ values, pipeline::PieceShape piece, DeviceTable table,
                         std::uint8_t* __restrict__ packed, QuantizeTotals* __restrict__ partials) {
  __shared__ float shared_thresholds[kSharedThresholds];
  __shared__ float shared_levels[kSharedThresholds + 1];
  const pipeline::TableSource source = stage_table<B>(table, shared_thresholds, shared_levels);
  pipeline::ErrorThread mine;
  pipeline::quantize_flat_thread<B, PerRow>(values, piece, source, packed,
                                            std::size_t(blockIdx.x) * kPipelineThreads + threadIdx.x,
                                            std::size_t(gridDim.x) * kPipelineThreads, mine);
  write_block_totals(mine, partials);
}

// The unit layout: rows padded to a byte, per-row tables whose rows do not hold whole items,
// unaligned pointers.
template <int B>
__global__ void __launch_bounds__(kPipelineThreads)
    quantize_units_kernel(const float* __restrict__ values, pipeline::PieceShape piece, DeviceTable table,
                          std::uint8_t* __restrict__ packed, QuantizeTotals* __restrict__ partials) {
  __shared__ float shared_thresholds[kSharedThresholds];
  __shared__ float shared_levels[kSharedThresholds + 1];
  const pipeline::TableSource source = stage_table<B>(table, shared_thresholds, shared_levels);
  pipeline::ErrorThread mine;
  pipeline::quantize_units_thread<B>(values, piece, source, packed,
                                     std::size_t(blockIdx.x) * kPipelineThreads + threadIdx.x,
                                     std::size_t(gridDim.x) * kPipelineThreads, mine);
  write_block_totals(mine, partials);
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
  const std::size_t wanted = (units + kPipelineThreads - 1) / kPipelineThreads;
  const std::size_t cap = std::size_t(multiprocessors) * kMaxBlocksPerSm;
  return int(wanted < 1 ? 1 : wanted > cap ? cap : wanted);
}

// Runs `launch` with the stored width as a compile-time constant: the one place widths are listed.
template <typename Launch>
void with_stored_width(int bits, const Launch& launch) {
  switch (bits) {
    case 1: return launch(std::integral_constant<int, 1>{});
    case 2: return launch(std::integral_constant<int, 2>{});
    case 4: return launch(std::integral_constant<int, 4>{});
    case 8: return launch(std::integral_constant<int, 8>{});
    case 16: return launch(std::integral_constant<int, 16>{});
  }
  NUQ_ASSERT(false, "quantize: stored width ", bits, " is not 1, 2, 4, 8 or 16");
}

template <int B>
void launch_quantize_width(const float* d_values, const Piece& piece, const DeviceTable& table,
                           std::uint8_t* d_packed, QuantizeTotals* partials, int multiprocessors,
                           cudaStream_t stream, int& blocks) {
  const pipeline::PieceShape shape{piece.rows, piece.cols, piece.first_row,
                                   piece.first_row * piece.total_cols + piece.first_col, piece.total_cols,
                                   piece.first_col};
  const bool flat = pipeline::use_flat_layout(shape, B, table.per_row, d_values, d_packed);
  // ErrorThread counts the weights inside the support region in 32 bits.
  const auto check_share = [&](int launched) {
    NUQ_ASSERT(piece.rows * piece.cols / (std::size_t(launched) * kPipelineThreads) < (std::size_t{1} << 31),
               "quantize: more than 2^31 weights a thread");
  };
  if (flat) {
    const pipeline::FlatPlan plan = pipeline::flat_plan<B>(piece.rows * piece.cols);
    if (table.per_row) {
      NUQ_REQUIRE(plan.items < pipeline::kMaxUnits, "quantize: ", plan.items, " items of a per-row table in one piece");
      constexpr auto kernel = quantize_flat_kernel<B, true>;
      blocks = one_wave_blocks<kernel>(plan.items, multiprocessors);
      check_share(blocks);
      kernel<<<blocks, kPipelineThreads, 0, stream>>>(d_values, shape, table, d_packed, partials);
    } else {
      constexpr auto kernel = quantize_flat_kernel<B, false>;
      blocks = one_wave_blocks<kernel>(plan.items, multiprocessors);
      check_share(blocks);
      kernel<<<blocks, kPipelineThreads, 0, stream>>>(d_values, shape, table, d_packed, partials);
    }
  } else {
    const pipeline::UnitPlan plan = pipeline::unit_plan(piece.rows, piece.cols, B);
    NUQ_REQUIRE(plan.units < pipeline::kMaxUnits && piece.cols <= UINT32_MAX, "quantize: a piece of ", piece.rows,
                " x ", piece.cols, " whose rows do not fill whole bytes is too large for one launch");
    constexpr auto kernel = quantize_units_kernel<B>;
    blocks = one_wave_blocks<kernel>(plan.units, multiprocessors);
    check_share(blocks);
    kernel<<<blocks, kPipelineThreads, 0, stream>>>(d_values, shape, table, d_packed, partials);
  }
  NUQ_CUDA_CHECK_LAUNCH();
}

}  // namespace

std::size_t quantize_units(const Piece& piece, int bits) {
  return piece.rows * (bits == 16 ? piece.cols : packed_row_bytes(piece.cols, bits));
}

std::size_t quantize_scratch_bytes(std::size_t, int multiprocessors) {
  return partials_bytes(sizeof(QuantizeTotals), multiprocessors);
}

void launch_quantize(const float* d_values, const Piece& piece, const DeviceTable& table, std::uint8_t* d_packed,
                     QuantizeTotals* d_totals, void* d_scratch, std::size_t scratch_bytes, int multiprocessors,
                     cudaStream_t stream) {
  NUQ_ASSERT(scratch_bytes >= quantize_scratch_bytes(quantize_units(piece, table.bits), multiprocessors),
             "quantize scratch too small");
  NUQ_ASSERT(piece.first_col % 16 == 0, "pieces start on 16-column boundaries");
  auto* partials = static_cast<QuantizeTotals*>(d_scratch);
  int blocks = 0;
  with_stored_width(table.bits, [&](auto width) {
    launch_quantize_width<decltype(width)::value>(d_values, piece, table, d_packed, partials, multiprocessors, stream,
                                                  blocks);
  });
  launch_join<QuantizeTotals, CombineTotals>(partials, blocks, empty_totals(), d_totals, stream);
}

void launch_dequantize(const std::uint8_t* d_packed, const Piece& piece, const DeviceTable& table, float* d_values,
                       int multiprocessors, cudaStream_t stream) {
  const std::size_t count = piece.rows * piece.cols;
  if (count == 0) return;
  dequantize_kernel<<<blocks_for(count, multiprocessors), kPipelineThreads, 0, stream>>>(d_packed, piece, table,
                                                                                      d_values);
  NUQ_CUDA_CHECK_LAUNCH();
}

}  // namespace nuq::cuda
