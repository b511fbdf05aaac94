// The CUDA-core GEMV (qgemm_gemv.cuh). A block of gemv::kWarps warps takes one slice of k
// (blockIdx.y: slice_columns codes, one warp step) and `passes` passes of kRowsPerPass rows:
//  - X's rows are staged for the slice as FP32 quads at gemv::quad_slot (zero past m and k), so
//    that the 8 lanes of each 16-byte shared-memory phase read 8 different bank quads;
//  - each warp takes kRowsPerWarp rows a pass: every lane loads its 16-byte unit of each row
//    (__ldcs: streamed, evict-first, the codes are read once), the next pass's units in flight
//    while this pass's are decoded; a quad of X read once serves the four rows;
//  - 1- to 4-bit codes are decoded through the row's table in shared memory (at most 16 levels,
//    each in its own bank, so every pattern of codes is conflict-free), wider ones through the
//    read-only cache or computed on a uniform grid;
//  - a warp's 32 partial sums per output are added by shuffles; one slice writes Y with bias and
//    ReLU, several write partial[slice] and run_split_k adds them in slice order.
// tests/test_gemv_layout.cpp runs this arithmetic, lane by lane, on the host.
#include "qgemm_gemv.cuh"
#include "warp_row_dot.cuh"

#include <cstdint>
#include <map>
#include <mutex>

#include "cuda_check.cuh"
#include "nuq/error.h"

namespace nuq::cuda {
namespace {

using gemv::kLanes;
using gemv::kRowsPerPass;
using gemv::kRowsPerWarp;
using gemv::kWarps;

// Shared memory of X's slice: kBatch rows of slice_quads quads.
template <int kBits, int kBatch>
constexpr std::size_t x_slice_bytes() {
  return std::size_t(kBatch) * gemv::slice_quads(kBits) * sizeof(float4);
}

// Columns [c, c + 4) of a row of X, zero past k; a vector load when the row is aligned for it.
__device__ __forceinline__ float4 x_quad(const float* __restrict__ row, std::size_t c, std::size_t k, bool vectors) {
  if (vectors && c + 4 <= k) return load4<true>(row + c);
  float v[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) v[e] = c + e < k ? load1<true>(row + c + e) : 0.0f;
  return make_float4(v[0], v[1], v[2], v[3]);
}

template <int kBits, int kBatch>
__global__ void __launch_bounds__(32 * kWarps) qgemm_gemv_kernel(const float* __restrict__ x, int m,
                                                                 DeviceQuantizedMatrix w, const float* __restrict__ bias,
                                                                 bool relu, bool x_vectors, unsigned passes,
                                                                 float* __restrict__ y, float* __restrict__ partial) {
  constexpr int kQuads = gemv::unit_quads(kBits), kSliceQuads = gemv::slice_quads(kBits);
  constexpr bool in_shared = kBits <= 4;
  constexpr int kTable = in_shared ? 1 << kBits : 1;
  extern __shared__ float4 x_slice[];  // [kBatch][kSliceQuads], quad q of a row at quad_slot(q)
  __shared__ float tables[kWarps][kRowsPerWarp][kTable];
  const int lane = threadIdx.x % kLanes, warp = threadIdx.x / kLanes;
  const std::size_t slice = blockIdx.y, first_column = slice * std::size_t(gemv::slice_columns(kBits));

  // This lane's unit of every row in the slice; past the row's padded codes (the last slice of
  // short rows) the lane has none and adds nothing. The first pass's units are asked for before X
  // is staged, so that their latency and the staging's overlap.
  const std::size_t unit = slice * kLanes + std::size_t(lane);
  const bool has_unit = unit < w.row_stride / gemv::kUnitBytes;
  const std::size_t block_row = std::size_t(blockIdx.x) * passes * kRowsPerPass + std::size_t(warp) * kRowsPerWarp;
  auto load_units = [&](std::size_t row0, uint4 (&units)[kRowsPerWarp]) {
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r)
      units[r] = has_unit && row0 + r < w.n
                     ? __ldcs(reinterpret_cast<const uint4*>(w.row_codes(row0 + r)) + unit)
                     : make_uint4(0u, 0u, 0u, 0u);
  };
  // Per-row tables (1- to 4-bit codes with a table per row): each lane carries kTableLoads of the
  // warp's kRowsPerWarp tables, the next pass's loaded beside its units.
  const bool one_table = w.levels_stride == 0;
  constexpr int kTableLoads = (kRowsPerWarp * kTable + kLanes - 1) / kLanes;
  auto load_tables = [&](std::size_t row0, float (&values)[kTableLoads]) {
#pragma unroll
    for (int j = 0; j < kTableLoads; ++j) {
      const int e = lane + j * kLanes;
      const std::size_t row = row0 + std::size_t(e / kTable);
      values[j] = e < kRowsPerWarp * kTable && row < w.n ? __ldg(w.row_levels(row) + e % kTable) : 0.0f;
    }
  };
  uint4 units[kRowsPerWarp], next[kRowsPerWarp] = {};
  float table_values[kTableLoads] = {}, next_table_values[kTableLoads] = {};
  load_units(block_row, units);
  if (in_shared && !one_table) load_tables(block_row, table_values);

  // X's slice, kStagedAtOnce quads a thread in flight before they are stored.
  constexpr int kStaged = kBatch * kSliceQuads, kThreads = 32 * kWarps;
  constexpr int kPerThread = (kStaged + kThreads - 1) / kThreads, kStagedAtOnce = kPerThread < 8 ? kPerThread : 8;
  for (int first = 0; first < kPerThread; first += kStagedAtOnce) {
    float4 quads[kStagedAtOnce];
#pragma unroll
    for (int j = 0; j < kStagedAtOnce; ++j) {
      const int e = int(threadIdx.x) + (first + j) * kThreads, i = e / kSliceQuads, q = e % kSliceQuads;
      quads[j] = e < kStaged && i < m
                     ? x_quad(x + std::size_t(i) * w.k, first_column + 4 * std::size_t(q), w.k, x_vectors)
                     : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
#pragma unroll
    for (int j = 0; j < kStagedAtOnce; ++j) {
      const int e = int(threadIdx.x) + (first + j) * kThreads;
      if (e < kStaged) x_slice[(e / kSliceQuads) * kSliceQuads + gemv::quad_slot(e % kSliceQuads, kBits)] = quads[j];
    }
  }
  if (in_shared && one_table)
    for (int j = lane; j < kTable; j += kLanes) tables[warp][0][j] = __ldg(w.levels + j);
  __syncthreads();

  for (unsigned pass = 0; pass < passes; ++pass) {
    const std::size_t row0 = block_row + std::size_t(pass) * kRowsPerPass;
    if (row0 >= w.n) break;  // the same for every lane of the warp
    if (pass + 1 < passes) {
      load_units(row0 + kRowsPerPass, next);
      if (in_shared && !one_table) load_tables(row0 + kRowsPerPass, next_table_values);
    }
    if (in_shared && !one_table) {
      __syncwarp();  // the last pass's tables are no longer read
#pragma unroll
      for (int j = 0; j < kTableLoads; ++j) {
        const int e = lane + j * kLanes;
        if (e < kRowsPerWarp * kTable) tables[warp][e / kTable][e % kTable] = table_values[j];
      }
      __syncwarp();
    }
    float acc[kRowsPerWarp][kBatch];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
      for (int i = 0; i < kBatch; ++i) acc[r][i] = 0.0f;
    if (has_unit) {
#pragma unroll
      for (int t = 0; t < kQuads; ++t) {
        float4 xq[kBatch];
#pragma unroll
        for (int i = 0; i < kBatch; ++i) xq[i] = x_slice[i * kSliceQuads + gemv::quad_slot(lane * kQuads + t, kBits)];
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r) {
          float l[4];
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const std::uint32_t code =
                gemv::unit_code(units[r].x, units[r].y, units[r].z, units[r].w, 4 * t + e, kBits);
            if constexpr (in_shared) {
              l[e] = tables[warp][one_table ? 0 : r][code];
            } else {
              const std::size_t row = row0 + r < w.n ? row0 + r : 0;
              l[e] = w.level(w.row_levels(row), code);
            }
          }
#pragma unroll
          for (int i = 0; i < kBatch; ++i)
            acc[r][i] = fmaf(l[3], xq[i].w, fmaf(l[2], xq[i].z, fmaf(l[1], xq[i].y, fmaf(l[0], xq[i].x, acc[r][i]))));
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
      for (int i = 0; i < kBatch; ++i) {
        const float sum = group_sum(acc[r][i], kLanes);
        const std::size_t row = row0 + r;
        if (lane == 0 && row < w.n && i < m) {
          if (partial) {
            partial[(slice * std::size_t(m) + std::size_t(i)) * w.n + row] = sum;
          } else {
            const float out = sum + (bias ? bias[row] : 0.0f);
            y[std::size_t(i) * w.n + row] = relu ? fmaxf(out, 0.0f) : out;
          }
        }
      }
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) units[r] = next[r];
#pragma unroll
    for (int j = 0; j < kTableLoads; ++j) table_values[j] = next_table_values[j];
  }
}

// Blocks of the kernel resident on one multiprocessor of `device`, asked of the occupancy API
// once per device and instantiation, after lifting the device's dynamic shared memory cap to what
// a slice of X needs (64 KiB at one bit and four rows).
template <int kBits, int kBatch>
int resident_blocks_per_multiprocessor(int device) {
  static std::mutex mutex;
  static std::map<int, int> resident_on;
  const std::lock_guard<std::mutex> lock(mutex);
  if (const auto found = resident_on.find(device); found != resident_on.end()) return found->second;
  const auto kernel = qgemm_gemv_kernel<kBits, kBatch>;
  NUQ_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      int(x_slice_bytes<kBits, kBatch>())));
  int resident = 0;
  NUQ_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, kernel, 32 * kWarps,
                                                               x_slice_bytes<kBits, kBatch>()));
  NUQ_REQUIRE(resident > 0, "qgemm: the GEMV kernel does not fit on a multiprocessor at ", kBits, " bits");
  return resident_on[device] = resident;
}

template <int kBits, int kBatch>
void launch_gemv(const float* x, std::size_t m, const DeviceQuantizedMatrix& w, const float* bias, bool relu, float* y,
                 cudaStream_t stream) {
  int device = 0, multiprocessors = 0;
  NUQ_CUDA_CHECK(cudaGetDevice(&device));
  NUQ_CUDA_CHECK(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device));
  const std::size_t resident = std::size_t(resident_blocks_per_multiprocessor<kBits, kBatch>(device)) * multiprocessors;
  const std::size_t passes = gemv::passes_per_block(w.n, w.k, kBits, resident);
  const std::size_t blocks = (w.n + passes * kRowsPerPass - 1) / (passes * kRowsPerPass);
  const std::size_t splits = gemv::slices(w.k, kBits);
  NUQ_REQUIRE(blocks <= 0x7FFFFFFFu && splits <= gemv::kMaxSlices, "qgemm: ", w.n, " rows of ", w.k,
              " columns exceed the GEMV's grid");
  // Quads of X load as vectors when its rows start on 16-byte boundaries.
  const bool x_vectors = w.k % 4 == 0 && reinterpret_cast<std::uintptr_t>(x) % 16 == 0;
  const dim3 grid{unsigned(blocks), unsigned(splits)};
  run_split_k(unsigned(splits), m, w.n, bias, relu, y, stream, [&](float* partial) {
    qgemm_gemv_kernel<kBits, kBatch><<<grid, 32 * kWarps, x_slice_bytes<kBits, kBatch>(), stream>>>(
        x, int(m), w, bias, relu, x_vectors, unsigned(passes), y, partial);
  });
}

}  // namespace

void launch_qgemm_gemv(const float* d_x, std::size_t m, const DeviceQuantizedMatrix& w, const float* d_bias, bool relu,
                       float* d_y, cudaStream_t stream) {
  NUQ_REQUIRE(gemv_takes(m, w), "qgemm: the GEMV takes 1 to ", gemv::kMaxBatch,
              " rows of X and rows of at least one warp step of codes, not m = ", m, " with k = ", w.k, " at ", w.bits,
              " bits");
  if (w.n == 0) return;
  require_device_rows(w);
  with_code_width(w.bits, "qgemm", [&](auto bits) {
    constexpr int kBits = decltype(bits)::value;
    switch (gemv::batch_bound(m)) {
      case 1: return launch_gemv<kBits, 1>(d_x, m, w, d_bias, relu, d_y, stream);
      case 2: return launch_gemv<kBits, 2>(d_x, m, w, d_bias, relu, d_y, stream);
      default: return launch_gemv<kBits, 4>(d_x, m, w, d_bias, relu, d_y, stream);
    }
  });
}

}  // namespace nuq::cuda
