#include "nuq/io/widen.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "nuq/error.h"

namespace nuq::io {
namespace {

float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h >> 15) << 31;
  const int exponent = (h >> 10) & 0x1F;
  const std::uint32_t mantissa = h & 0x3FF;
  float magnitude;
  if (exponent == 0) magnitude = std::ldexp(float(mantissa), -24);  // zero and subnormals
  else if (exponent == 31) magnitude = mantissa ? std::numeric_limits<float>::quiet_NaN() : INFINITY;
  else magnitude = std::ldexp(float(mantissa | 0x400), exponent - 25);
  std::uint32_t bits;
  std::memcpy(&bits, &magnitude, 4);
  bits |= sign;
  float value;
  std::memcpy(&value, &bits, 4);
  return value;
}

}  // namespace

bool is_floating(DType dtype) { return dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16; }

void widen_to_f32(DType dtype, const void* bytes, std::size_t count, float* out) {
  NUQ_REQUIRE(is_floating(dtype), "cannot read ", to_string(dtype), " as floats (F32, F16 or BF16)");
  if (dtype == DType::F32) {
    std::memcpy(out, bytes, count * sizeof(float));
    return;
  }
  const auto* b = static_cast<const std::uint8_t*>(bytes);
  for (std::size_t i = 0; i < count; ++i) {
    const std::uint16_t h = std::uint16_t(b[2 * i] | (b[2 * i + 1] << 8));
    if (dtype == DType::BF16) {
      const std::uint32_t bits = std::uint32_t(h) << 16;  // bfloat16 is the top half of an F32
      std::memcpy(&out[i], &bits, 4);
    } else {
      out[i] = half_to_float(h);
    }
  }
}

}  // namespace nuq::io
