#include "nuq/io/widen.h"

#include <cmath>
#include <cstring>
#include <limits>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "nuq/error.h"

#include "../weight_loads.h"

namespace nuq::io {

bool is_floating(DType dtype) { return dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16; }

WeightType weight_type(DType dtype) {
  NUQ_REQUIRE(is_floating(dtype), "cannot read ", to_string(dtype), " as floats (F32, F16 or BF16)");
  return dtype == DType::BF16 ? WeightType::BF16 : dtype == DType::F16 ? WeightType::F16 : WeightType::F32;
}

std::vector<float> widened(const Tensor& tensor, const std::string& where) {
  NUQ_REQUIRE(is_floating(tensor.dtype), where, ": ", to_string(tensor.dtype),
              " is not one of the floating types nuq widens (F32, F16 or BF16)");
  std::vector<float> values(tensor.element_count());
  NUQ_REQUIRE(tensor.data.size() == values.size() * dtype_size(tensor.dtype), where, ": holds ", tensor.data.size(),
              " bytes, its shape needs ", values.size() * dtype_size(tensor.dtype));
  widen_to_f32(tensor.dtype, tensor.data.data(), values.size(), values.data());
  return values;
}

void widen_to_f32(DType dtype, const void* bytes, std::size_t count, float* out) {
  NUQ_REQUIRE(is_floating(dtype), "cannot read ", to_string(dtype), " as floats (F32, F16 or BF16)");
  if (dtype == DType::F32) {
    std::memcpy(out, bytes, count * sizeof(float));
    return;
  }
  const auto* b = static_cast<const std::uint8_t*>(bytes);
  if (dtype == DType::BF16) {  // bfloat16 is the top half of an F32: a loop the compiler vectorises
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    // The file's byte order is the processor's: whole 16-bit loads (a byte at a time, the loop
    // below, vectorises into byte shuffles that cost more than the shift itself).
#pragma omp simd
    for (std::size_t i = 0; i < count; ++i) {
      std::uint16_t half;
      std::memcpy(&half, b + 2 * i, 2);
      const std::uint32_t word = std::uint32_t(half) << 16;
      std::memcpy(out + i, &word, 4);
    }
#else
#pragma omp simd
    for (std::size_t i = 0; i < count; ++i) {
      const std::uint32_t word = std::uint32_t(b[2 * i] | (b[2 * i + 1] << 8)) << 16;
      std::memcpy(out + i, &word, 4);
    }
#endif
    return;
  }
  std::size_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= count; i += 8)  // the processor's conversion: the same floats as below (NaN payloads aside)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2 * i))));
#endif
  for (; i < count; ++i) out[i] = loads::half_to_float(std::uint16_t(b[2 * i] | (b[2 * i + 1] << 8)));
}

bool is_float8(DType dtype) {
  return dtype == DType::F8_E4M3 || dtype == DType::F8_E5M2 || dtype == DType::F8_E8M0 ||
         dtype == DType::F8_E4M3FNUZ || dtype == DType::F8_E5M2FNUZ;
}

namespace {

// One 8-bit float of a sign bit, `exponent_bits` and the rest mantissa, with an exponent bias:
// subnormals at the smallest exponent; infinity and NaN as each dtype has them (above).
float decode_float8(std::uint8_t byte, DType dtype) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  if (dtype == DType::F8_E8M0) return byte == 0xFF ? nan : std::ldexp(1.0f, int(byte) - 127);
  const bool fnuz = dtype == DType::F8_E4M3FNUZ || dtype == DType::F8_E5M2FNUZ;
  if (fnuz && byte == 0x80) return nan;
  const int exponent_bits = (dtype == DType::F8_E4M3 || dtype == DType::F8_E4M3FNUZ) ? 4 : 5;
  const int mantissa_bits = 7 - exponent_bits;
  const int bias = (1 << (exponent_bits - 1)) - 1 + (fnuz ? 1 : 0);
  const int exponent = (byte >> mantissa_bits) & ((1 << exponent_bits) - 1);
  const int mantissa = byte & ((1 << mantissa_bits) - 1);
  const float sign = (byte & 0x80) ? -1.0f : 1.0f;
  const int top = (1 << exponent_bits) - 1;
  if (dtype == DType::F8_E5M2 && exponent == top)  // IEEE: infinity, or NaN with a mantissa
    return mantissa == 0 ? sign * std::numeric_limits<float>::infinity() : nan;
  if (dtype == DType::F8_E4M3 && exponent == top && mantissa == (1 << mantissa_bits) - 1) return nan;
  if (exponent == 0) return sign * std::ldexp(float(mantissa), 1 - bias - mantissa_bits);
  return sign * std::ldexp(float((1 << mantissa_bits) + mantissa), exponent - bias - mantissa_bits);
}

}  // namespace

void float8_to_f32(DType dtype, const std::uint8_t* bytes, std::size_t count, float* out) {
  NUQ_REQUIRE(is_float8(dtype), "cannot read ", to_string(dtype), " as 8-bit floats");
  float table[256];
  for (int b = 0; b < 256; ++b) table[b] = decode_float8(std::uint8_t(b), dtype);
  for (std::size_t i = 0; i < count; ++i) out[i] = table[bytes[i]];
}

namespace {

// The nearest bfloat16 (ties to even): the top half of the F32 after rounding its bottom half; a
// NaN stays a NaN (quieted, so that rounding cannot carry it into an infinity).
std::uint16_t bf16_nearest(std::uint32_t bits) {
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return std::uint16_t((bits >> 16) | 0x0040u);
  return std::uint16_t((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

// The nearest IEEE half (ties to even), subnormals included; beyond 65504 (from 65520 on, where
// rounding reaches 2^16) infinity, a NaN a quiet NaN.
std::uint16_t f16_nearest(std::uint32_t bits) {
  const std::uint32_t sign = (bits >> 16) & 0x8000u, magnitude = bits & 0x7FFFFFFFu;
  if (magnitude > 0x7F800000u) return std::uint16_t(sign | 0x7E00u);
  if (magnitude >= 0x477FF000u) return std::uint16_t(sign | 0x7C00u);
  const auto round = [](std::uint32_t value, std::uint32_t shift) {  // value / 2^shift, to nearest even
    const std::uint32_t kept = value >> shift, rest = value & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    return kept + (rest > half || (rest == half && (kept & 1u)) ? 1u : 0u);
  };
  if (magnitude >= 0x38800000u)  // a normal half: rebias the exponent (127 -> 15), round 13 bits
    return std::uint16_t(sign | round(magnitude - 0x38000000u, 13));
  if (magnitude <= 0x33000000u) return std::uint16_t(sign);  // at most 2^-25, half the least subnormal
  // A subnormal half counts units of 2^-24: the 24-bit significand m times 2^(e - 150), shifted.
  const std::uint32_t exponent = magnitude >> 23, significand = (magnitude & 0x7FFFFFu) | 0x800000u;
  return std::uint16_t(sign | round(significand, 126u - exponent));  // (a carry makes the least normal)
}

}  // namespace

std::size_t narrow_from_f32(DType dtype, const float* in, std::size_t count, void* bytes) {
  NUQ_REQUIRE(is_floating(dtype), "cannot write floats as ", to_string(dtype), " (F32, F16 or BF16)");
  if (dtype == DType::F32) {
    std::memcpy(bytes, in, count * sizeof(float));
    return count;
  }
  auto* out = static_cast<std::uint8_t*>(bytes);
  std::size_t first_overflow = count;
  for (std::size_t i = 0; i < count; ++i) {
    std::uint32_t word;
    std::memcpy(&word, in + i, 4);
    const std::uint16_t half = dtype == DType::BF16 ? bf16_nearest(word) : f16_nearest(word);
    out[2 * i] = std::uint8_t(half & 0xFFu);
    out[2 * i + 1] = std::uint8_t(half >> 8);
    if ((half & 0x7FFFu) == (dtype == DType::BF16 ? 0x7F80u : 0x7C00u) && std::isfinite(in[i]) &&
        first_overflow == count)
      first_overflow = i;
  }
  return first_overflow;
}

}  // namespace nuq::io
