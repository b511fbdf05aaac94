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

}  // namespace nuq::io
