// How weights lie in memory: float, or the 16-bit BF16 and IEEE half of checkpoints, which the
// CPU's statistics and quantization pass read as they lie, widening each weight exactly.
#pragma once

#include <cstddef>

namespace nuq {

enum class WeightType { F32, BF16, F16 };

constexpr std::size_t element_bytes(WeightType type) { return type == WeightType::F32 ? 4 : 2; }

// Weights of one type where they lie.
struct WeightView {
  const void* data;
  WeightType type;
};

}  // namespace nuq
