// Floating tensors as float: F16 and BF16 (IEEE half, bfloat16) widen exactly to F32. One
// conversion shared by checkpoint quantization and the Python binding, which hands it pieces of a
// tensor at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

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

// The other way: `count` floats as little-endian elements of `dtype` (F32 as they are; BF16 and
// F16 each the nearest, ties to even, as numpy's and PyTorch's casts; a NaN stays a NaN). Returns
// the index of the first finite value that became an infinity (beyond the dtype's range), or
// `count` when none did. Another dtype throws nuq::Error.
std::size_t narrow_from_f32(DType dtype, const float* in, std::size_t count, void* bytes);

// A whole F32, F16 or BF16 tensor's values as float (errors name `where`: another dtype, or bytes
// that do not fill its shape).
std::vector<float> widened(const Tensor& tensor, const std::string& where);

// The five 8-bit float dtypes (F8_E4M3, F8_E5M2, F8_E8M0 and the FNUZ variants). nuq keeps them
// in checkpoints as they are (an FP8 checkpoint's weights are scaled by tensors of their own, so
// quantizing them alone would change the model); the Python package reads them as float32.
bool is_float8(DType dtype);

// out[i] = element i of `count` 8-bit floats of `dtype`, exactly (every one is a float32): E4M3 is
// OCP's FN variant (bias 7, no infinity, S.1111.111 NaN), E5M2 IEEE-like (bias 15), the FNUZ
// variants have bias 8 and 16, no infinity and no negative zero (0x80 is their NaN), and E8M0 is
// an unsigned power of two 2^(e-127) (0xFF NaN). Any other dtype throws nuq::Error.
void float8_to_f32(DType dtype, const std::uint8_t* bytes, std::size_t count, float* out);

}  // namespace nuq::io
