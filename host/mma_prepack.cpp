#include "nuq/mma_prepack.h"

#include "nuq/error.h"
#include "nuq/mma_fragment.h"

namespace nuq {
namespace {

// Bit `bit` of the unit's lane `lane` (its 16 bytes read little-endian: bit p*b of the lane's
// 128 holds code p) in a buffer of whole units.
std::size_t lane_bit(std::size_t unit_byte, int lane, int position, int bits) {
  return (unit_byte + std::size_t(lane) * mma::kLaneBytes) * 8 + std::size_t(position) * std::size_t(bits);
}

// Calls f(row, col, bit) for every code of the matrix: its place in row-major `codes` and the
// first bit of its place in the fragment order.
template <typename F>
void for_each_code(std::size_t rows, std::size_t cols, int bits, std::size_t units, F&& f) {
  const int unit_cols = mma::unit_cols(bits);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) {
      const std::size_t block = r / mma::kUnitRows, unit = c / std::size_t(unit_cols);
      const mma::UnitPlace place = mma::unit_place(int(r % mma::kUnitRows), int(c % std::size_t(unit_cols)));
      f(r, c, lane_bit(mma::unit_offset(block, unit, units), place.lane, place.position, bits));
    }
}

}  // namespace

bool has_fragment_order(int bits) { return mma::is_fragment_bits(bits); }

FragmentCodes to_fragment_order(const PackedCodes& codes) {
  NUQ_REQUIRE(has_fragment_order(codes.bits), "fragment order: ", codes.bits,
              "-bit codes have none (1, 2, 4 or 8 bits)");
  NUQ_REQUIRE(codes.bytes.size() == codes.rows * packed_row_bytes(codes.cols, codes.bits), "fragment order: ",
              codes.bytes.size(), " bytes for ", codes.rows, " x ", codes.cols, " codes of ", codes.bits, " bits");
  FragmentCodes out;
  out.rows = codes.rows, out.cols = codes.cols, out.bits = codes.bits;
  out.row_blocks = mma::row_blocks(codes.rows);
  out.k_units = mma::k_units(codes.cols, codes.bits);
  out.bytes.assign(out.row_blocks * out.k_units * mma::kUnitBytes, 0);
  for_each_code(codes.rows, codes.cols, codes.bits, out.k_units, [&](std::size_t r, std::size_t c, std::size_t bit) {
    out.bytes[bit / 8] |= std::uint8_t(codes.at(r, c) << (bit % 8));  // bits divides 8: never straddles
  });
  return out;
}

PackedCodes from_fragment_order(const FragmentCodes& codes) {
  NUQ_REQUIRE(has_fragment_order(codes.bits), "fragment order: ", codes.bits,
              "-bit codes have none (1, 2, 4 or 8 bits)");
  NUQ_REQUIRE(codes.row_blocks == mma::row_blocks(codes.rows) && codes.k_units == mma::k_units(codes.cols, codes.bits) &&
                  codes.bytes.size() == codes.row_blocks * codes.k_units * mma::kUnitBytes,
              "fragment order: ", codes.bytes.size(), " bytes in ", codes.row_blocks, " x ", codes.k_units,
              " units do not hold ", codes.rows, " x ", codes.cols, " codes of ", codes.bits, " bits");
  PackedCodes out{codes.rows, codes.cols, codes.bits,
                  std::vector<std::uint8_t>(codes.rows * packed_row_bytes(codes.cols, codes.bits), 0)};
  const std::size_t row_bytes = packed_row_bytes(codes.cols, codes.bits);
  const std::uint32_t mask = (1u << codes.bits) - 1u;
  for_each_code(codes.rows, codes.cols, codes.bits, codes.k_units, [&](std::size_t r, std::size_t c, std::size_t bit) {
    const std::uint32_t code = (codes.bytes[bit / 8] >> (bit % 8)) & mask;
    const std::size_t to = c * std::size_t(codes.bits);
    out.bytes[r * row_bytes + to / 8] |= std::uint8_t(code << (to % 8));
  });
  return out;
}

}  // namespace nuq
