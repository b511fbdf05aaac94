// The small-batch tensor-core qgemm (qgemm_mma.cuh). A block of kWarps warps takes kBlocksPerWarp
// row blocks (8 rows of W, 8 columns of Y) per warp and one slice of k:
//  - X's slice is staged once per block into shared memory as BF16 (rows up to 16 * kMTiles, zero
//    past m and k) and read by every warp for every row block: the A registers come from it through
//    mma::a_coord, with rows kLdX elements apart so the 32 lanes' loads fall in 32 banks;
//  - each lane streams its 16 bytes of every unit (8 rows x 16 * unit_steps columns of codes) with
//    cp.async into a private ring of kStages slots in shared memory, evict-first in the L2 (the
//    codes are read once); a lane reads back only what it copied, so the ring needs no barrier;
//  - the B registers are decoded from the lane word (mma::pair_code, mma::decode_register) through
//    the decode table of the lane's row: a BF16x2 pair table per lane at 2 bits (16 words, one
//    look-up a register, no bank conflicts: each lane has its own column), a BF16 level table per
//    row otherwise;
//  - one mma.sync m16n8k16 per 16-row tile of X and k-step; the C registers go through
//    mma::c_coord to Y (one slice: bias and ReLU here) or to partial[slice] (several slices:
//    run_split_k adds them in slice order, so the result is the same on every run).
// tests/test_mma_warp_model.cpp runs the same maps on the host against dequantize-then-GEMM.
#include "qgemm_mma.cuh"

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <set>

#include "cuda_check.cuh"
#include "mma_plan.h"
#include "nuq/error.h"
#include "nuq/mma_fragment.h"

namespace nuq::cuda {
namespace {

using mma_plan::kPadX;
using mma_plan::kRingBytes;
using mma_plan::kStages;
using mma_plan::kWarps;
constexpr int kThreads = 32 * kWarps;
constexpr int kBlocksPerWarp = 2;
constexpr int kRowBlocksPerCta = kWarps * kBlocksPerWarp;

__device__ __forceinline__ std::uint32_t shared_address(const void* p) {
  return std::uint32_t(__cvta_generic_to_shared(p));
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
__device__ __forceinline__ std::uint64_t evict_first_policy() {
  std::uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  return policy;
}
__device__ __forceinline__ void copy_16_async(void* shared, const void* global, std::uint64_t policy) {
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;" ::"r"(shared_address(shared)),
               "l"(global), "l"(policy)
               : "memory");
}
__device__ __forceinline__ void commit_copies() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void wait_copies() {
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending) : "memory");
}
// D = A B + D, mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (registers as nuq/mma_fragment.h maps them).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif

__device__ __forceinline__ std::uint16_t to_bf16(float v) { return mma::bf16_round(v); }
__device__ __forceinline__ std::uint16_t to_bf16(__nv_bfloat16 v) { return __bfloat16_as_ushort(v); }

template <typename TX, int kBits, int kMTiles>
__global__ void __launch_bounds__(kThreads) qgemm_mma_kernel(const TX* __restrict__ x, int m, DeviceQuantizedMatrix w,
                                                             DeviceFragmentCodes codes, int units_per_slice,
                                                             const float* __restrict__ bias, bool relu,
                                                             float* __restrict__ y, float* __restrict__ partial) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr int kRows = 16 * kMTiles, kUnitCols = mma::unit_cols(kBits), kSteps = mma::unit_steps(kBits);
  constexpr int kEntries = mma::decode_table_entries(kBits);
  constexpr bool kPairTable = mma::uses_pair_table(kBits);
  extern __shared__ uint4 shared[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  uint4* ring = shared + std::size_t(warp) * kStages * mma::kLanes;  // [kStages][32] per warp
  auto* table_base = reinterpret_cast<std::uint8_t*>(shared) + kRingBytes + std::size_t(warp) * mma_plan::table_bytes(kBits);
  auto* pair_table = reinterpret_cast<std::uint32_t*>(table_base);   // [kEntries][32]
  auto* level_table = reinterpret_cast<std::uint16_t*>(table_base);  // [8][kEntries]
  auto* xs = reinterpret_cast<std::uint16_t*>(reinterpret_cast<std::uint8_t*>(shared) + kRingBytes +
                                              kWarps * mma_plan::table_bytes(kBits));
  const int slice_cols = units_per_slice * kUnitCols, ld = slice_cols + kPadX;

  const std::size_t unit_first = std::size_t(blockIdx.y) * std::size_t(units_per_slice);
  const std::size_t unit_last = min(codes.k_units, unit_first + std::size_t(units_per_slice));
  const std::size_t col_first = unit_first * kUnitCols;

  // X's slice, once per block, as BF16 pairs (k even in every row's pair; zero past m and k).
  for (int e = threadIdx.x; e < kRows * slice_cols / 2; e += kThreads) {
    const int row = e / (slice_cols / 2), pair = e % (slice_cols / 2);
    const std::size_t col = col_first + 2 * std::size_t(pair);
    std::uint32_t lo = 0, hi = 0;
    if (row < m) {
      const TX* p = x + std::size_t(row) * w.k + col;
      if (col < w.k) lo = to_bf16(p[0]);
      if (col + 1 < w.k) hi = to_bf16(p[1]);
    }
    *reinterpret_cast<std::uint32_t*>(xs + row * ld + 2 * pair) = lo | (hi << 16);
  }
  __syncthreads();

  const std::size_t block_first = std::size_t(blockIdx.x) * kRowBlocksPerCta + std::size_t(warp) * kBlocksPerWarp;
  if (block_first >= codes.row_blocks || unit_first >= unit_last) return;  // no barrier below
  const int blocks = int(min(std::size_t(kBlocksPerWarp), codes.row_blocks - block_first));
  const int units = int(unit_last - unit_first), items = blocks * units;
  const std::uint64_t policy = evict_first_policy();
  auto issue = [&](int item) {
    const std::size_t block = block_first + std::size_t(item / units), unit = unit_first + std::size_t(item % units);
    copy_16_async(ring + (item % kStages) * mma::kLanes + lane,
                  codes.bytes + mma::unit_offset(block, unit, codes.k_units) + std::size_t(lane) * mma::kLaneBytes,
                  policy);
  };
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < items) issue(s);
    commit_copies();  // empty groups too, so that wait_copies counts the same everywhere
  }

  float acc[kMTiles][4] = {};
  for (int item = 0; item < items; ++item) {
    if (item + kStages - 1 < items) issue(item + kStages - 1);
    commit_copies();
    wait_copies<kStages - 1>();  // this item's group has landed
    const int unit_in_slice = item % units;
    const std::size_t block = block_first + std::size_t(item / units);
    if (unit_in_slice == 0) {  // a new row block: its decode tables, fresh accumulators
      __syncwarp();  // every lane is done with the previous block's tables
      if constexpr (kPairTable) {
        const std::size_t row = min(block * mma::kUnitRows + std::size_t(mma::group_of(lane)), w.n - 1);
        const float* levels = w.row_levels(row);
        std::uint16_t rounded[1 << kBits];
#pragma unroll
        for (int c = 0; c < (1 << kBits); ++c) rounded[c] = mma::bf16_round(__ldg(levels + c));
#pragma unroll
        for (int e = 0; e < kEntries; ++e) pair_table[e * mma::kLanes + lane] = mma::decode_table_entry(rounded, e, kBits);
      } else {
        for (int i = lane; i < mma::kUnitRows * kEntries; i += mma::kLanes) {
          const std::size_t row = min(block * mma::kUnitRows + std::size_t(i / kEntries), w.n - 1);
          level_table[i] = mma::bf16_round(__ldg(w.row_levels(row) + i % kEntries));
        }
      }
      __syncwarp();
#pragma unroll
      for (int t = 0; t < kMTiles; ++t)
#pragma unroll
        for (int r = 0; r < 4; ++r) acc[t][r] = 0.0f;
    }
    const uint4 loaded = ring[(item % kStages) * mma::kLanes + lane];
    const std::uint32_t words[4] = {loaded.x, loaded.y, loaded.z, loaded.w};
    const std::uint16_t* lane_levels = level_table + mma::group_of(lane) * kEntries;
    auto entry = [&](int e) -> std::uint32_t {
      if constexpr (kPairTable) return pair_table[e * mma::kLanes + lane];
      else return lane_levels[e];
    };
#pragma unroll
    for (int step = 0; step < kSteps; ++step) {
      const std::uint32_t b0 = mma::decode_register<kBits>(mma::pair_code<kBits>(words, step, 0), entry);
      const std::uint32_t b1 = mma::decode_register<kBits>(mma::pair_code<kBits>(words, step, 1), entry);
      const int col0 = unit_in_slice * kUnitCols + step * mma::kTileK;
#pragma unroll
      for (int t = 0; t < kMTiles; ++t) {
        std::uint32_t a[4];
#pragma unroll
        for (int r = 0; r < 4; ++r) {  // half 0's column is even: one 32-bit load takes both halves
          const mma::Coord at = mma::a_coord(lane, r, 0);
          a[r] = *reinterpret_cast<const std::uint32_t*>(xs + (t * 16 + at.row) * ld + col0 + at.col);
        }
        mma_bf16(acc[t], a, b0, b1);
      }
    }
    if (unit_in_slice == units - 1) {  // the row block's slice is done: out through the C map
#pragma unroll
      for (int t = 0; t < kMTiles; ++t)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const mma::Coord at = mma::c_coord(lane, r);
          const int i = t * 16 + at.row;
          const std::size_t out = block * mma::kUnitRows + std::size_t(at.col);
          if (i >= m || out >= w.n) continue;
          if (partial) {
            partial[(std::size_t(blockIdx.y) * std::size_t(m) + std::size_t(i)) * w.n + out] = acc[t][r];
          } else {
            const float v = acc[t][r] + (bias ? bias[out] : 0.0f);
            y[std::size_t(i) * w.n + out] = relu ? fmaxf(v, 0.0f) : v;
          }
        }
    }
  }
  wait_copies<0>();  // nothing left in flight when the block ends
#else
  __trap();  // the host refuses devices below compute capability 8.0 before launching
#endif
}

// Launches above the default 48 KiB of dynamic shared memory must opt in, per kernel and device
// (once each: the attribute stays set for the context).
template <typename TX, int kBits, int kMTiles>
void allow_shared_budget(int device) {
  constexpr std::size_t budget = mma_plan::shared_budget(kBits, 16 * kMTiles);
  if constexpr (budget > mma_plan::kDefaultSharedBytes) {
    static std::mutex mutex;
    static std::set<int> allowed_on;
    const std::lock_guard<std::mutex> lock(mutex);
    if (allowed_on.count(device)) return;
    NUQ_CUDA_CHECK(cudaFuncSetAttribute(qgemm_mma_kernel<TX, kBits, kMTiles>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, int(budget)));
    allowed_on.insert(device);
  }
}

// Row tiles of 16 rows of X a block multiplies for a batch of m rows (the kernels compiled).
int m_tiles(std::size_t m) { return m <= 16 ? 1 : m <= 32 ? 2 : 4; }

// The grid of a launch: blocks along n (x) and slices of k (y) of units_per_slice units each.
struct TilePlan {
  std::size_t ctas_n = 0, slices = 0, per_slice = 0;
  bool fits() const { return ctas_n <= 0x7FFFFFFFu && slices <= 65535; }
};

TilePlan plan_tiles(int bits, int m_tiles, const DeviceFragmentCodes& codes, int multiprocessors) {
  TilePlan plan;
  plan.ctas_n = (codes.row_blocks + kRowBlocksPerCta - 1) / kRowBlocksPerCta;
  plan.per_slice = mma_plan::units_per_slice(bits, 16 * std::size_t(m_tiles), codes.k_units, plan.ctas_n, multiprocessors);
  plan.slices = (codes.k_units + plan.per_slice - 1) / plan.per_slice;
  return plan;
}

template <typename TX, int kBits, int kMTiles>
void launch_tiles(const TX* x, std::size_t m, const DeviceQuantizedMatrix& w, const DeviceFragmentCodes& codes,
                  const float* bias, bool relu, float* y, cudaStream_t stream, int multiprocessors) {
  const TilePlan plan = plan_tiles(kBits, kMTiles, codes, multiprocessors);
  NUQ_REQUIRE(plan.fits(), "qgemm (mma): ", w.n, " rows of ", w.k, " columns exceed the grid (", plan.ctas_n,
              " blocks, ", plan.slices, " slices of k)");
  const std::size_t ctas_n = plan.ctas_n, slices = plan.slices;
  const int per_slice = int(plan.per_slice);
  const std::size_t shared_bytes = mma_plan::shared_bytes(kBits, 16 * kMTiles, std::size_t(per_slice));
  NUQ_ASSERT(shared_bytes <= mma_plan::shared_budget(kBits, 16 * kMTiles), "qgemm (mma): the plan exceeds its budget");
  int device = 0;
  NUQ_CUDA_CHECK(cudaGetDevice(&device));
  allow_shared_budget<TX, kBits, kMTiles>(device);
  const dim3 grid(static_cast<unsigned>(ctas_n), static_cast<unsigned>(slices));
  run_split_k(unsigned(slices), m, w.n, bias, relu, y, stream, [&](float* partial) {
    qgemm_mma_kernel<TX, kBits, kMTiles>
        <<<grid, kThreads, shared_bytes, stream>>>(x, int(m), w, codes, per_slice, bias, relu, y, partial);
  });
}

template <typename TX>
void launch_mma(const TX* x, std::size_t m, const DeviceQuantizedMatrix& w, const DeviceFragmentCodes& codes,
                const float* bias, bool relu, float* y, cudaStream_t stream) {
  if (m == 0 || w.n == 0) return;
  NUQ_REQUIRE(m <= kMmaMaxBatch, "qgemm (mma): batches of up to ", kMmaMaxBatch, " rows, not ", m);
  NUQ_REQUIRE(mma_kernel_bits(w.bits), "qgemm (mma): ", w.bits, "-bit codes are not supported (2, 4 or 8)");
  NUQ_REQUIRE(codes.bytes && codes.row_blocks == mma::row_blocks(w.n) && codes.k_units == mma::k_units(w.k, w.bits) &&
                  reinterpret_cast<std::uintptr_t>(codes.bytes) % mma::kLaneBytes == 0,
              "qgemm (mma): the codes are not in fragment order for ", w.n, " x ", w.k, " at ", w.bits, " bits");
  int device = 0, major = 0, multiprocessors = 0;
  NUQ_CUDA_CHECK(cudaGetDevice(&device));
  NUQ_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  NUQ_CUDA_CHECK(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device));
  NUQ_REQUIRE(major >= 8, "qgemm (mma): BF16 tensor cores need compute capability 8.0 or newer (device ", device,
              " has ", major, ".x)");
  NUQ_REQUIRE(codes.k_units > 0, "qgemm (mma): k = 0 has no codes (the default kernels take it)");
  with_code_width(w.bits, "qgemm (mma)", [&](auto width) {
    constexpr int kBits = decltype(width)::value;
    if constexpr (mma_kernel_bits(kBits)) {
      if (m_tiles(m) == 1) return launch_tiles<TX, kBits, 1>(x, m, w, codes, bias, relu, y, stream, multiprocessors);
      if (m_tiles(m) == 2) return launch_tiles<TX, kBits, 2>(x, m, w, codes, bias, relu, y, stream, multiprocessors);
      return launch_tiles<TX, kBits, 4>(x, m, w, codes, bias, relu, y, stream, multiprocessors);
    }
  });
}

}  // namespace

bool mma_takes(std::size_t m, const DeviceQuantizedMatrix& w, const DeviceFragmentCodes& codes, int multiprocessors) {
  return m >= 1 && m <= kMmaMaxBatch && mma_kernel_bits(w.bits) && codes.bytes && codes.k_units > 0 &&
         plan_tiles(w.bits, m_tiles(m), codes, multiprocessors).fits();
}

void launch_qgemm_mma(const float* d_x, std::size_t m, const DeviceQuantizedMatrix& w, const DeviceFragmentCodes& codes,
                      const float* d_bias, bool relu, float* d_y, cudaStream_t stream) {
  launch_mma(d_x, m, w, codes, d_bias, relu, d_y, stream);
}

void launch_qgemm_mma(const __nv_bfloat16* d_x, std::size_t m, const DeviceQuantizedMatrix& w,
                      const DeviceFragmentCodes& codes, const float* d_bias, bool relu, float* d_y,
                      cudaStream_t stream) {
  launch_mma(d_x, m, w, codes, d_bias, relu, d_y, stream);
}

}  // namespace nuq::cuda
