// Internal to host/: packed codes unpacked sixteen at a time into AVX-512 lanes, and looked up in
// their levels, for the CPU paths that decode codes in registers (host/qgemm.cpp, host/grouped.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>

#include "nuq/qgemm.h"

#if defined(__AVX512F__)
#include <immintrin.h>

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 warns about the undefined pass-through operand inside its own AVX-512 intrinsics.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace nuq::detail {

// Sixteen codes starting at code index 16*chunk of a row, as 32-bit lane indices.
inline __m512i unpack16(const std::uint8_t* row, std::size_t chunk, int bits) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  if (bits == 2) {
    std::uint32_t word;
    std::memcpy(&word, row + 4 * chunk, 4);
    return _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(int(word)), _mm512_slli_epi32(lane, 1)),
                            _mm512_set1_epi32(3));
  }
  if (bits == 4) {
    std::uint32_t words[2];
    std::memcpy(words, row + 8 * chunk, 8);
    // Lanes 0-7 read the first word, 8-15 the second; lane j takes nibble j mod 8.
    const __m512i word = _mm512_mask_set1_epi32(_mm512_set1_epi32(int(words[0])), 0xFF00, int(words[1]));
    const __m512i shift = _mm512_slli_epi32(_mm512_and_si512(lane, _mm512_set1_epi32(7)), 2);
    return _mm512_and_si512(_mm512_srlv_epi32(word, shift), _mm512_set1_epi32(15));
  }
  if (bits == 8) return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 16 * chunk)));
  if (bits == 16) return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 32 * chunk)));
  std::uint16_t half;  // bits == 1
  std::memcpy(&half, row + 2 * chunk, 2);
  return _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(half), lane), _mm512_set1_epi32(1));
}

// The levels of sixteen codes: up to 16 levels sit in one register and a lane permute looks them
// up; 256 or 65536 levels are gathered from the table (L1 or L2 resident).
class Levels16 {
 public:
  Levels16(const float* levels, int bits, const std::optional<LevelGrid>& grid)
      : table_(levels), in_register_(bits <= 4), on_grid_(grid.has_value()) {
    float padded[16] = {};
    if (in_register_) std::copy(levels, levels + (1 << bits), padded);
    register_ = _mm512_loadu_ps(padded);
    origin_level_ = _mm512_set1_ps(grid ? grid->origin_level : 0.0f);
    scale_ = _mm512_set1_ps(grid ? grid->scale : 0.0f);
    origin_code_ = _mm512_set1_epi32(grid ? grid->origin_code : 0);
  }
  __m512 operator()(__m512i codes) const {
    if (in_register_) return _mm512_permutexvar_ps(codes, register_);
    if (on_grid_)  // LevelGrid::level, sixteen at once
      return _mm512_fmadd_ps(scale_, _mm512_cvtepi32_ps(_mm512_sub_epi32(codes, origin_code_)), origin_level_);
    return _mm512_i32gather_ps(codes, table_, 4);
  }

 private:
  const float* table_;
  bool in_register_, on_grid_;
  __m512 register_, origin_level_, scale_;
  __m512i origin_code_;
};

#if defined(__AVX512VBMI__)
// A table of 256 levels (8-bit codes off any grid) as four planes of bytes, plane p holding byte p
// of every level, which VBMI's two-register byte permutes look up 64 codes at a time: eight
// permutes, four blends and eight unpacks give 64 levels, bit for bit the table's, about 2.4
// times as fast on one core as four 16-lane gathers from the same L1-resident table (2026-12-06,
// AMD EPYC). Building the planes costs about what looking up 200 codes does, so a table per row
// is worth it on rows of a few hundred codes and more.
class BytePlaneLevels {
 public:
  static constexpr std::size_t kCodes = 64;  // looked up at a time

  explicit BytePlaneLevels(const float* levels) {
    // Within each 128-bit lane p of a permuted register, byte p of its sixteen levels in order.
    alignas(64) std::uint8_t by_byte[64];
    for (int i = 0; i < 64; ++i) by_byte[i] = std::uint8_t(4 * (i % 16) + i / 16);
    const __m512i to_lanes = _mm512_load_si512(by_byte);
    for (int quarter = 0; quarter < 4; ++quarter) {
      __m512i t[4];
      for (int j = 0; j < 4; ++j)
        t[j] = _mm512_permutexvar_epi8(to_lanes, _mm512_loadu_si512(levels + 64 * quarter + 16 * j));
      // A 4 x 4 transpose of 128-bit lanes: plane p's quarter is lane p of t[0], t[1], t[2], t[3].
      const __m512i low01 = _mm512_shuffle_i64x2(t[0], t[1], _MM_SHUFFLE(1, 0, 1, 0));
      const __m512i low23 = _mm512_shuffle_i64x2(t[2], t[3], _MM_SHUFFLE(1, 0, 1, 0));
      const __m512i high01 = _mm512_shuffle_i64x2(t[0], t[1], _MM_SHUFFLE(3, 2, 3, 2));
      const __m512i high23 = _mm512_shuffle_i64x2(t[2], t[3], _MM_SHUFFLE(3, 2, 3, 2));
      planes_[0][quarter] = _mm512_shuffle_i64x2(low01, low23, _MM_SHUFFLE(2, 0, 2, 0));
      planes_[1][quarter] = _mm512_shuffle_i64x2(low01, low23, _MM_SHUFFLE(3, 1, 3, 1));
      planes_[2][quarter] = _mm512_shuffle_i64x2(high01, high23, _MM_SHUFFLE(2, 0, 2, 0));
      planes_[3][quarter] = _mm512_shuffle_i64x2(high01, high23, _MM_SHUFFLE(3, 1, 3, 1));
    }
    // The unpacks below put code 16k + 4l + j of the 64 at byte 16l + 4k + j before they
    // interleave: the codes are moved there first, so that out[k] holds codes 16k .. 16k + 15.
    alignas(64) std::uint8_t order[64];
    for (int l = 0; l < 4; ++l)
      for (int k = 0; k < 4; ++k)
        for (int j = 0; j < 4; ++j) order[16 * l + 4 * k + j] = std::uint8_t(16 * k + 4 * l + j);
    order_ = _mm512_load_si512(order);
  }

  // The levels of codes[0, 64) into out[0..3], sixteen each, in order.
  void operator()(const std::uint8_t* codes, __m512 out[4]) const {
    const __m512i index = _mm512_permutexvar_epi8(order_, _mm512_loadu_si512(codes));
    const __mmask64 upper = _mm512_movepi8_mask(index);  // codes 128-255 take quarters 2 and 3
    __m512i bytes[4];
    for (int p = 0; p < 4; ++p)
      bytes[p] = _mm512_mask_blend_epi8(upper, _mm512_permutex2var_epi8(planes_[p][0], index, planes_[p][1]),
                                        _mm512_permutex2var_epi8(planes_[p][2], index, planes_[p][3]));
    const __m512i low01 = _mm512_unpacklo_epi8(bytes[0], bytes[1]), high01 = _mm512_unpackhi_epi8(bytes[0], bytes[1]);
    const __m512i low23 = _mm512_unpacklo_epi8(bytes[2], bytes[3]), high23 = _mm512_unpackhi_epi8(bytes[2], bytes[3]);
    out[0] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(low01, low23));
    out[1] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(low01, low23));
    out[2] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(high01, high23));
    out[3] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(high01, high23));
  }

 private:
  __m512i planes_[4][4];  // [byte of the level][quarter of the codes: 0-63, 64-127, ...]
  __m512i order_;
};
#endif

}  // namespace nuq::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif
