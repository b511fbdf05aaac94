#include "nuq/packed.h"

#include "nuq/error.h"

namespace nuq {

std::uint32_t PackedCodes::at(std::size_t row, std::size_t col) const {
  const std::size_t bit = col * static_cast<std::size_t>(bits);
  const std::uint8_t* base = bytes.data() + row * packed_row_bytes(cols, bits);
  if (bits == 16) return base[2 * col] | (std::uint32_t{base[2 * col + 1]} << 8);
  return (base[bit / 8] >> (bit % 8)) & ((1u << bits) - 1u);
}

PackedCodes pack_codes(const std::vector<std::uint32_t>& codes, std::size_t rows, std::size_t cols, int bits) {
  NUQ_REQUIRE(is_packable_bits(bits), "pack_codes: ", bits, "-bit codes are not supported (1, 2, 4, 8, 16)");
  NUQ_REQUIRE(codes.size() == rows * cols, "pack_codes: ", codes.size(), " codes for a ", rows, " x ", cols,
              " matrix");
  PackedCodes packed{rows, cols, bits, std::vector<std::uint8_t>(rows * packed_row_bytes(cols, bits), 0)};
  const std::size_t row_bytes = packed_row_bytes(cols, bits);
  for (std::size_t r = 0; r < rows; ++r) {
    std::uint8_t* base = packed.bytes.data() + r * row_bytes;
    for (std::size_t c = 0; c < cols; ++c) {
      const std::uint32_t code = codes[r * cols + c];
      NUQ_REQUIRE(code < (1u << bits), "pack_codes: code ", code, " at (", r, ", ", c, ") needs more than ",
                  bits, " bits");
      if (bits == 16) {
        base[2 * c] = static_cast<std::uint8_t>(code);
        base[2 * c + 1] = static_cast<std::uint8_t>(code >> 8);
      } else {
        const std::size_t bit = c * static_cast<std::size_t>(bits);
        base[bit / 8] |= static_cast<std::uint8_t>(code << (bit % 8));
      }
    }
  }
  return packed;
}

std::vector<std::uint32_t> unpack_codes(const PackedCodes& packed) {
  std::vector<std::uint32_t> codes(packed.rows * packed.cols);
  for (std::size_t r = 0; r < packed.rows; ++r)
    for (std::size_t c = 0; c < packed.cols; ++c) codes[r * packed.cols + c] = packed.at(r, c);
  return codes;
}

}  // namespace nuq
