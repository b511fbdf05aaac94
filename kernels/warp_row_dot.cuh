// The inner loop shared by the small-batch qgemm kernel and the fused MLP: a group of lanes of one
// warp multiplies one packed row of W with every row of X. The group's lanes take the row's 16-byte
// units in turn (32 lanes read 512 contiguous bytes a step), decode them through `level` and meet
// the matching columns of X four at a time (vector loads when `x_vectors`: X's rows start on
// boundaries of four elements); a partial unit at the end of a row is taken column by column.
// Short rows (the MLP's 784 and 512 columns are 13 and 8 units at two bits) take groups of fewer
// lanes, several rows to a warp, so that no lane idles.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace nuq::cuda {

constexpr int kMinLanesPerRow = 4;

// Lanes per row for rows of `units` 16-byte units: a power of two from kMinLanesPerRow to 32, the
// smallest that gives every unit a lane.
__host__ __device__ constexpr int lanes_per_row(std::size_t units) {
  int lanes = kMinLanesPerRow;
  while (lanes < 32 && std::size_t(lanes) < units) lanes *= 2;
  return lanes;
}

// Four consecutive elements of X as floats (p aligned to four elements), and one.
template <bool kGlobalX>
__device__ __forceinline__ float4 load4(const float* p) {
  if constexpr (kGlobalX) return __ldg(reinterpret_cast<const float4*>(p));
  else return *reinterpret_cast<const float4*>(p);
}
template <bool kGlobalX>
__device__ __forceinline__ float4 load4(const __nv_bfloat16* p) {
  uint2 v;
  if constexpr (kGlobalX) v = __ldg(reinterpret_cast<const uint2*>(p));
  else v = *reinterpret_cast<const uint2*>(p);
  // A BF16 value is the high half of the float with the same bits.
  return make_float4(__uint_as_float(v.x << 16), __uint_as_float(v.x & 0xFFFF0000u), __uint_as_float(v.y << 16),
                     __uint_as_float(v.y & 0xFFFF0000u));
}
template <bool kGlobalX>
__device__ __forceinline__ float load1(const float* p) {
  if constexpr (kGlobalX) return __ldg(p);
  else return *p;
}
template <bool kGlobalX>
__device__ __forceinline__ float load1(const __nv_bfloat16* p) {
  if constexpr (kGlobalX) return __bfloat162float(__ldg(p));
  else return __bfloat162float(*p);
}

// Adds to acc[i] (i < m) the share of row . X[i] of lane `sub` of a group of `lanes`, over units
// [first, last) of the row. X is FP32 or BF16 (TX), in global memory (kGlobalX: read through the
// read-only cache) or in shared memory; `x_vectors`: its rows start on boundaries of four elements.
template <int kBits, int kBatch, bool kGlobalX, typename TX, typename Level>
__device__ __forceinline__ void row_partial(const uint4* __restrict__ codes, std::size_t first, std::size_t last,
                                            int sub, int lanes, const TX* __restrict__ x, std::size_t k, int m,
                                            bool x_vectors, Level level, float (&acc)[kBatch]) {
  constexpr int kCodesPerWord = 32 / kBits, kCodesPerUnit = 128 / kBits;
  constexpr std::uint32_t kMask = (1u << kBits) - 1u;
  for (std::size_t u = first + std::size_t(sub); u < last; u += std::size_t(lanes)) {
    const uint4 v = __ldg(codes + u);
    // Word q of the unit, without an array (a runtime index would put it in local memory).
    auto word = [&](int q) { return q == 0 ? v.x : q == 1 ? v.y : q == 2 ? v.z : v.w; };
    const std::size_t c0 = u * kCodesPerUnit;
    if (x_vectors && c0 + kCodesPerUnit <= k) {  // a whole unit inside the row: no column checks
#pragma unroll
      for (int t = 0; t < kCodesPerUnit; t += 4) {
        float l[4];
#pragma unroll
        for (int q = 0; q < 4; ++q)
          l[q] = level((word((t + q) / kCodesPerWord) >> (((t + q) % kCodesPerWord) * kBits)) & kMask);
#pragma unroll
        for (int i = 0; i < kBatch; ++i)
          if (i < m) {
            const float4 xv = load4<kGlobalX>(x + std::size_t(i) * k + c0 + t);
            acc[i] = fmaf(l[0], xv.x, fmaf(l[1], xv.y, fmaf(l[2], xv.z, fmaf(l[3], xv.w, acc[i]))));
          }
      }
    } else {
#pragma unroll 4
      for (int t = 0; t < kCodesPerUnit; ++t) {
        const std::size_t c = c0 + std::size_t(t);
        if (c >= k) break;
        const float l = level((word(t / kCodesPerWord) >> ((t % kCodesPerWord) * kBits)) & kMask);
#pragma unroll
        for (int i = 0; i < kBatch; ++i)
          if (i < m) acc[i] = fmaf(l, load1<kGlobalX>(x + std::size_t(i) * k + c), acc[i]);
      }
    }
  }
}

// The sum of v over each group of `lanes` consecutive lanes, in the group's first lane. Every lane
// of the warp must call it.
__device__ __forceinline__ float group_sum(float v, int lanes) {
  for (int offset = lanes / 2; offset > 0; offset /= 2) v += __shfl_down_sync(0xFFFFFFFFu, v, offset);
  return v;
}

}  // namespace nuq::cuda
