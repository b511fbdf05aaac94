// Floating tensors as float: F16 and BF16 (IEEE half, bfloat16) widen exactly to F32. One
// conversion shared by checkpoint quantization and the Python binding, which hands it pieces of a
// tensor at a time.
#pragma once

#include <cstddef>
#include <cstdint>

#include "nuq/io/safetensors.h"
#include "nuq/weight_type.h"

namespace nuq::io {

// F32, F16 or BF16: the dtypes nuq quantizes.
bool is_floating(DType dtype);

// How the weights of a floating dtype lie in memory (F32, BF16, F16; anything else throws).
WeightType weight_type(DType dtype);

// out[i] = element i of `count` little-endian elements of `dtype` at `bytes` (F32, F16 or BF16;
// anything else throws nuq::Error naming the dtype).
void widen_to_f32(DType dtype, const void* bytes, std::size_t count, float* out);

}  // namespace nuq::io
