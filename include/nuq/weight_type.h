// How weights lie in memory: float, or the 16-bit BF16 and IEEE half of checkpoints, which the
// CPU's statistics and quantization pass read as they lie, widening each weight exactly.
#pragma once

namespace nuq {

enum class WeightType { F32, BF16, F16 };

}  // namespace nuq
