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
    offset_ = _mm512_set1_ps(grid ? grid->offset : 0.0f);
    scale_ = _mm512_set1_ps(grid ? grid->scale : 0.0f);
  }
  __m512 operator()(__m512i codes) const {
    if (in_register_) return _mm512_permutexvar_ps(codes, register_);
    if (on_grid_) return _mm512_fmadd_ps(scale_, _mm512_cvtepi32_ps(codes), offset_);
    return _mm512_i32gather_ps(codes, table_, 4);
  }

 private:
  const float* table_;
  bool in_register_, on_grid_;
  __m512 register_, offset_, scale_;
};

}  // namespace nuq::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif
