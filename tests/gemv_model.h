// The CUDA-core GEMV's arithmetic (kernels/qgemm_gemv.cu) on the host, lane by lane: X's slice
// staged at gemv::quad_slot, each lane's 16-byte unit decoded with gemv::unit_code and met with
// its quads in the kernel's order of fused multiply-adds, the warp's shuffle tree, the slices
// added in order, then the bias. Every step rounds as the kernel's does, so the GPU test asks the
// kernel for these floats exactly, and the CPU test holds them to a double reference.
#pragma once

#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "../kernels/device_rows.h"
#include "../kernels/gemv_layout.h"
#include "nuq/qgemm.h"

namespace nuq::test {

// Where the model stages a quad of X and where its lanes look for it: the kernel uses quad_slot
// for both; a test plants a layout bug by reading elsewhere.
struct GemvSlots {
  int (*stage)(int quad, int bits) = gemv::quad_slot;
  int (*read)(int quad, int bits) = gemv::quad_slot;
};

// w's packed rows as upload_weights lays them out: every device_row_stride bytes, zero padded.
inline std::vector<std::uint8_t> device_rows(const QuantizedMatrix& w) {
  const std::size_t stride = cuda::device_row_stride(w.codes.cols, w.codes.bits);
  const std::size_t bytes = packed_row_bytes(w.codes.cols, w.codes.bits);
  std::vector<std::uint8_t> rows(w.codes.rows * stride, 0);
  for (std::size_t r = 0; r < w.codes.rows; ++r)
    if (bytes) std::memcpy(rows.data() + r * stride, w.codes.bytes.data() + r * bytes, bytes);
  return rows;
}

// What group_sum(v, 32) leaves in lane 0: each step adds the value `offset` lanes down (a lane
// whose partner is past the warp gets its own value back from the shuffle).
inline float warp_sum(std::array<float, gemv::kLanes> v) {
  for (int offset = gemv::kLanes / 2; offset > 0; offset /= 2) {
    const std::array<float, gemv::kLanes> before = v;
    for (int l = 0; l < gemv::kLanes; ++l) v[l] = before[l] + before[l + offset < gemv::kLanes ? l + offset : l];
  }
  return v[0];
}

inline std::uint32_t little_endian_word(const std::uint8_t* p) {
  return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24;
}

// Y[m, n] = act(X[m, k] W^T + bias) as the GEMV computes it (levels looked up, not on a grid).
inline std::vector<float> gemv_model(const float* x, std::size_t m, const QuantizedMatrix& w, const float* bias,
                                     bool relu, GemvSlots slots = {}) {
  const int bits = w.codes.bits, quads = gemv::unit_quads(bits), slice_quads = gemv::slice_quads(bits);
  const std::size_t n = w.codes.rows, k = w.codes.cols, slices = gemv::slices(k, bits);
  const std::size_t stride = cuda::device_row_stride(k, bits), row_units = stride / gemv::kUnitBytes;
  const std::vector<std::uint8_t> rows = device_rows(w);
  std::vector<float> partial(slices * m * n);
  std::vector<std::array<float, 4>> staged(m * std::size_t(slice_quads));
  for (std::size_t s = 0; s < slices; ++s) {
    const std::size_t first_column = s * std::size_t(gemv::slice_columns(bits));
    for (std::size_t i = 0; i < m; ++i)
      for (int q = 0; q < slice_quads; ++q)
        for (int e = 0; e < 4; ++e) {
          const std::size_t c = first_column + 4 * std::size_t(q) + std::size_t(e);
          staged[i * slice_quads + std::size_t(slots.stage(q, bits))][e] = c < k ? x[i * k + c] : 0.0f;
        }
    for (std::size_t row = 0; row < n; ++row) {
      const float* levels = w.row_levels(row);
      for (std::size_t i = 0; i < m; ++i) {
        std::array<float, gemv::kLanes> lanes{};
        for (int lane = 0; lane < gemv::kLanes; ++lane) {
          const std::size_t unit = s * gemv::kLanes + std::size_t(lane);
          if (unit >= row_units) continue;  // no unit: the lane adds nothing
          const std::uint8_t* u = rows.data() + row * stride + unit * gemv::kUnitBytes;
          const std::uint32_t w0 = little_endian_word(u), w1 = little_endian_word(u + 4),
                              w2 = little_endian_word(u + 8), w3 = little_endian_word(u + 12);
          float acc = 0.0f;
          for (int t = 0; t < quads; ++t) {
            const auto& xq = staged[i * slice_quads + std::size_t(slots.read(lane * quads + t, bits))];
            float l[4];
            for (int e = 0; e < 4; ++e) l[e] = levels[gemv::unit_code(w0, w1, w2, w3, 4 * t + e, bits)];
            acc = std::fmaf(l[3], xq[3], std::fmaf(l[2], xq[2], std::fmaf(l[1], xq[1], std::fmaf(l[0], xq[0], acc))));
          }
          lanes[std::size_t(lane)] = acc;
        }
        partial[(s * m + i) * n + row] = warp_sum(lanes);
      }
    }
  }
  std::vector<float> y(m * n);
  for (std::size_t e = 0; e < m * n; ++e) {
    float sum = partial[e];  // one slice: the kernel's own sum
    if (slices > 1) {        // several: run_split_k's ordered sum from zero
      sum = 0.0f;
      for (std::size_t s = 0; s < slices; ++s) sum += partial[s * m * n + e];
    }
    const float out = sum + (bias ? bias[e % n] : 0.0f);
    y[e] = relu ? std::fmax(out, 0.0f) : out;
  }
  return y;
}

}  // namespace nuq::test
