// Weights as they lie in memory (F32, or the 16-bit BF16 and F16 of checkpoints), read as floats
// one at a time or eight (AVX) / sixteen (AVX-512) at a time, widened in registers. The CPU's
// statistics and quantization pass are written once over these loaders, so that a BF16 checkpoint
// is read without first being widened into a float buffer. Widening is exact: a pass over the
// 16-bit weights gives the same result, bit for bit, as the same pass over their floats.
// Private to the CPU backend (stats.cpp, quantize_fast.cpp, io/widen.cpp).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "nuq/weight_type.h"

#if defined(__AVX__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace nuq::loads {

// IEEE half to float, exactly, without F16C (the scalar tails; NaN payloads aside).
inline float half_to_float(std::uint16_t h) {
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

#if defined(__AVX__)
// Eight weights widened one at a time (AVX without AVX2 or F16C): slow, but the same floats.
template <typename Element>
__m256 load8_one_at_a_time(const typename Element::Stored* p) {
  float values[8];
  for (std::size_t i = 0; i < 8; ++i) values[i] = Element::at(p, i);
  return _mm256_loadu_ps(values);
}
#endif

// The element types, as tags: Element::Stored is what lies in memory (in the processor's byte
// order), at() one weight as float, load8()/load16() eight or sixteen. Weights need not be aligned
// to their size (a tensor at an offset that is not a multiple of it), so every load is unaligned:
// at() copies the element out (one plain load on x86) rather than dereferencing.
template <typename T>
T load_unaligned(const T* p, std::size_t i) {
  T value;
  std::memcpy(&value, reinterpret_cast<const unsigned char*>(p) + i * sizeof(T), sizeof(T));
  return value;
}

struct F32 {
  using Stored = float;
  static float at(const Stored* p, std::size_t i) { return load_unaligned(p, i); }
#if defined(__AVX__)
  static __m256 load8(const Stored* p) { return _mm256_loadu_ps(p); }
#endif
#if defined(__AVX512F__)
  static __m512 load16(const Stored* p) { return _mm512_loadu_ps(p); }
#endif
};

struct BF16 {  // the upper half of a float
  using Stored = std::uint16_t;
  static float at(const Stored* p, std::size_t i) {
    const std::uint32_t word = std::uint32_t(load_unaligned(p, i)) << 16;
    float value;
    std::memcpy(&value, &word, 4);
    return value;
  }
#if defined(__AVX2__)
  static __m256 load8(const Stored* p) {
    const __m256i words = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(words, 16));
  }
#elif defined(__AVX__)
  static __m256 load8(const Stored* p) { return load8_one_at_a_time<BF16>(p); }
#endif
#if defined(__AVX512F__)
  static __m512 load16(const Stored* p) {
    const __m512i words = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(words, 16));
  }
#endif
};

struct F16 {  // IEEE half
  using Stored = std::uint16_t;
  static float at(const Stored* p, std::size_t i) { return half_to_float(load_unaligned(p, i)); }
#if defined(__AVX__) && defined(__F16C__)
  static __m256 load8(const Stored* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
#elif defined(__AVX__)
  static __m256 load8(const Stored* p) { return load8_one_at_a_time<F16>(p); }
#endif
#if defined(__AVX512F__)
  static __m512 load16(const Stored* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
#endif
};

// work(Element{}, pointer) for the element type `type` names, the pointer cast to its storage:
// the one switch from a run-time type to the passes written over the loaders.
template <typename Work>
decltype(auto) with_element(const void* values, WeightType type, Work&& work) {
  switch (type) {
    case WeightType::BF16: return work(BF16{}, static_cast<const BF16::Stored*>(values));
    case WeightType::F16: return work(F16{}, static_cast<const F16::Stored*>(values));
    case WeightType::F32: break;
  }
  return work(F32{}, static_cast<const F32::Stored*>(values));
}

}  // namespace nuq::loads
