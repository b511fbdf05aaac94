// The packed code layout, shared by the CPU and CUDA backends and the quantized model files.
// A weight matrix [rows, cols] of b-bit codes is stored row by row; within a row, code j sits in
// bits (j mod (8/b)) * b of byte j / (8/b), least significant bits first, and every row starts
// on a byte boundary (rows are padded), so that a kernel can address row r directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace nuq {

// Bit widths the packed layout supports: they divide a byte, or fill two.
constexpr bool is_packable_bits(int bits) { return bits == 1 || bits == 2 || bits == 4 || bits == 8 || bits == 16; }
static_assert(is_packable_bits(2) && !is_packable_bits(3), "packable widths");

constexpr std::size_t packed_row_bytes(std::size_t cols, int bits) {
  return (cols * static_cast<std::size_t>(bits) + 7) / 8;
}

struct PackedCodes {
  std::size_t rows = 0, cols = 0;
  int bits = 2;
  std::vector<std::uint8_t> bytes;  // rows * packed_row_bytes(cols, bits)

  std::uint32_t at(std::size_t row, std::size_t col) const;
};

// Packs codes (row-major, each < 2^bits) into the layout above. Throws nuq::Error on a code that
// does not fit or a width the layout does not support.
PackedCodes pack_codes(const std::vector<std::uint32_t>& codes, std::size_t rows, std::size_t cols, int bits);
std::vector<std::uint32_t> unpack_codes(const PackedCodes& packed);

}  // namespace nuq
