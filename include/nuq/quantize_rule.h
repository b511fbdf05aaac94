// The quantization rule for one weight, shared word for word by the CPU backend (reference and
// fast path) and the CUDA kernels, so that GPU codes are bit-identical to the CPU's by
// construction rather than by luck.
//
// The rule works in the weights' own units: a codebook's thresholds t_k (for normalised weights)
// become mean + scale * t_k, computed in double and rounded UP to the next float. For a float w,
// "w >= that float" is then exactly "w >= mean + scale * t_k", so no per-weight division is
// needed and every backend compares the same floats. The code is the number of thresholds <= w
// (ties go to the upper cell, as Codebook::index_of does).
#pragma once

#include <cstdint>

#include "nuq/host_device.h"

namespace nuq {

// What one codebook group (a tensor, or one output channel) needs besides its thresholds.
struct GroupParams {
  float inside_lo = 0.0f, inside_hi = 0.0f;  // [mean - scale*xmax, mean + scale*xmax], rounded inwards
  std::uint32_t nan_code = 0;                // where NaN goes (NonFinite::Skip): the cell of the mean
  // A uniform grid's first guess of the cell, (w - grid_origin) * grid_inv_step, corrected by the
  // neighbouring thresholds; grid_inv_step == 0 means "no grid, search the thresholds".
  float grid_origin = 0.0f, grid_inv_step = 0.0f;
};

// A view of one group: pointers into host or device memory.
struct GroupRule {
  const float* thresholds;  // levels_count - 1, ascending, in weight units
  std::uint32_t levels_count;
  GroupParams params;
};

// Thresholds are searched linearly up to this many levels (compare-and-count has no branches),
// by bisection above it.
constexpr std::uint32_t kLinearSearchLevels = 16;

NUQ_HOST_DEVICE inline std::uint32_t code_of(float w, const GroupRule& rule) {
  const std::uint32_t last = rule.levels_count - 1;
  if (w != w) return rule.params.nan_code;
  // Infinities saturate to the outermost cells (only reachable with NonFinite::Skip).
  if (w - w != 0.0f) return w > 0.0f ? last : 0u;
  const float* t = rule.thresholds;
  std::uint32_t k = 0;
  if (rule.params.grid_inv_step > 0.0f) {
    const float guess = (w - rule.params.grid_origin) * rule.params.grid_inv_step;
    k = guess <= 0.0f ? 0u : guess >= float(last) ? last : static_cast<std::uint32_t>(guess);
    while (k < last && w >= t[k]) ++k;  // the guess is at most a cell off: these run once or not at all
    while (k > 0 && w < t[k - 1]) --k;
  } else if (rule.levels_count <= kLinearSearchLevels) {
    for (std::uint32_t i = 0; i < last; ++i) k += w >= t[i] ? 1u : 0u;
  } else {  // upper bound: the first threshold above w
    std::uint32_t lo = 0, hi = last;
    while (lo < hi) {
      const std::uint32_t mid = (lo + hi) / 2;
      if (w >= t[mid]) lo = mid + 1;
      else hi = mid;
    }
    k = lo;
  }
  return k;
}

}  // namespace nuq
