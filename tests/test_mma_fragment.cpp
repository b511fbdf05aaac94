// The layouts of nuq/mma_fragment.h, exhaustively: the fragment maps against the PTX ISA's tables
// for mma.m16n8k16 (written out below from the ISA's own formulas, element by element), every map
// against its inverse, the fragment order of packed codes (a bijection onto every lane's 128 bits,
// and a round trip through to_fragment_order on random ragged shapes), and the decode tables.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <set>
#include <tuple>
#include <vector>

#include "nuq/error.h"
#include "nuq/mma_fragment.h"
#include "nuq/mma_prepack.h"
#include "nuq/packed.h"

namespace nuq {
namespace {

// --- The ISA's tables (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"),
// in its own terms: element a_i / b_i / c_i of a lane, register i / 2 holding elements i and i + 1
// of a pair for the 16-bit operands.
struct IsaPlace {
  int row, col;
};
IsaPlace isa_a(int laneid, int i) {
  const int groupID = laneid / 4, threadID_in_group = laneid % 4;
  // row: groupID for a0, a1, a4, a5; groupID + 8 for a2, a3, a6, a7.
  const bool low_rows = i == 0 || i == 1 || i == 4 || i == 5;
  const int row = low_rows ? groupID : groupID + 8;
  // col: threadID_in_group * 2 + (i & 0x1) for a_i with i < 4, + 8 for i >= 4.
  const int col = i < 4 ? threadID_in_group * 2 + (i & 0x1) : threadID_in_group * 2 + (i & 0x1) + 8;
  return {row, col};
}
IsaPlace isa_b(int laneid, int i) {
  const int groupID = laneid / 4, threadID_in_group = laneid % 4;
  // row: threadID_in_group * 2 + (i & 0x1) for b_i with i < 2, + 8 for i >= 2; col: groupID.
  const int row = i < 2 ? threadID_in_group * 2 + (i & 0x1) : threadID_in_group * 2 + (i & 0x1) + 8;
  return {row, groupID};
}
IsaPlace isa_c(int laneid, int i) {
  const int groupID = laneid / 4, threadID_in_group = laneid % 4;
  // row: groupID for c0, c1; groupID + 8 for c2, c3; col: threadID_in_group * 2 + (i & 0x1).
  const int row = i < 2 ? groupID : groupID + 8;
  return {row, threadID_in_group * 2 + (i & 0x1)};
}

TEST(MmaFragment, AMatchesTheIsaAndIsABijection) {
  std::set<std::pair<int, int>> seen;
  for (int lane = 0; lane < mma::kLanes; ++lane)
    for (int reg = 0; reg < mma::kARegs; ++reg)
      for (int half = 0; half < 2; ++half) {
        const mma::Coord got = mma::a_coord(lane, reg, half);
        const IsaPlace isa = isa_a(lane, 2 * reg + half);
        ASSERT_EQ(got.row, isa.row) << "lane " << lane << " a" << 2 * reg + half;
        ASSERT_EQ(got.col, isa.col) << "lane " << lane << " a" << 2 * reg + half;
        const mma::Slot back = mma::a_slot(got.row, got.col);
        ASSERT_EQ(std::make_tuple(back.lane, back.reg, back.half), std::make_tuple(lane, reg, half));
        seen.insert({got.row, got.col});
      }
  EXPECT_EQ(seen.size(), std::size_t(mma::kTileM * mma::kTileK));  // 256 distinct: every element once
}

TEST(MmaFragment, BMatchesTheIsaAndIsABijection) {
  std::set<std::pair<int, int>> seen;
  for (int lane = 0; lane < mma::kLanes; ++lane)
    for (int reg = 0; reg < mma::kBRegs; ++reg)
      for (int half = 0; half < 2; ++half) {
        const mma::Coord got = mma::b_coord(lane, reg, half);
        const IsaPlace isa = isa_b(lane, 2 * reg + half);
        ASSERT_EQ(got.row, isa.row) << "lane " << lane << " b" << 2 * reg + half;
        ASSERT_EQ(got.col, isa.col) << "lane " << lane << " b" << 2 * reg + half;
        const mma::Slot back = mma::b_slot(got.row, got.col);
        ASSERT_EQ(std::make_tuple(back.lane, back.reg, back.half), std::make_tuple(lane, reg, half));
        seen.insert({got.row, got.col});
      }
  EXPECT_EQ(seen.size(), std::size_t(mma::kTileK * mma::kTileN));
}

TEST(MmaFragment, CMatchesTheIsaAndIsABijection) {
  std::set<std::pair<int, int>> seen;
  for (int lane = 0; lane < mma::kLanes; ++lane)
    for (int reg = 0; reg < mma::kCRegs; ++reg) {
      const mma::Coord got = mma::c_coord(lane, reg);
      const IsaPlace isa = isa_c(lane, reg);
      ASSERT_EQ(got.row, isa.row) << "lane " << lane << " c" << reg;
      ASSERT_EQ(got.col, isa.col) << "lane " << lane << " c" << reg;
      const mma::Slot back = mma::c_slot(got.row, got.col);
      ASSERT_EQ(std::make_tuple(back.lane, back.reg, back.half), std::make_tuple(lane, reg, 0));
      seen.insert({got.row, got.col});
    }
  EXPECT_EQ(seen.size(), std::size_t(mma::kTileM * mma::kTileN));
}

// The maps are usable in constant expressions (the kernel's unrolled loops fold them).
static_assert(mma::a_coord(5, 3, 1).row == 9 && mma::a_coord(5, 3, 1).col == 11, "a7 of lane 5");
static_assert(mma::b_slot(15, 7).lane == 31 && mma::b_slot(15, 7).reg == 1 && mma::b_slot(15, 7).half == 1, "b3");
static_assert(mma::unit_cols(2) == 256 && mma::unit_cols(4) == 128 && mma::unit_cols(8) == 64, "unit widths");

// Within a unit, every (row, col) has one (lane, position), every lane's codes_per_lane positions
// are taken once, the place agrees with the B map (the lane of code (row, col) is the lane holding
// B element (col mod 16, row)), and the pair of a register is two adjacent positions.
TEST(MmaFragment, UnitPlacesAreABijectionOntoEveryLanesBits) {
  for (int bits : {1, 2, 4, 8}) {
    std::set<std::pair<int, int>> taken;
    for (int row = 0; row < mma::kUnitRows; ++row)
      for (int col = 0; col < mma::unit_cols(bits); ++col) {
        const mma::UnitPlace p = mma::unit_place(row, col);
        ASSERT_GE(p.position, 0);
        ASSERT_LT(p.position, mma::codes_per_lane(bits)) << bits << " bits (" << row << ", " << col << ")";
        const IsaPlace b = isa_b(p.lane, p.position % 4);  // the element of B it feeds, by the ISA
        EXPECT_EQ(b.row, col % 16);
        EXPECT_EQ(b.col, row);
        EXPECT_EQ(p.position / 4, col / 16) << "step";
        const mma::Coord back = mma::unit_coord(p.lane, p.position);
        ASSERT_EQ(back.row, row);
        ASSERT_EQ(back.col, col);
        taken.insert({p.lane, p.position});
      }
    EXPECT_EQ(taken.size(), std::size_t(mma::kLanes * mma::codes_per_lane(bits))) << bits << " bits";
  }
}

std::vector<std::uint32_t> random_codes(std::size_t rows, std::size_t cols, int bits, std::mt19937& rng) {
  std::uniform_int_distribution<std::uint32_t> code(0, (1u << bits) - 1);
  std::vector<std::uint32_t> codes(rows * cols);
  for (auto& c : codes) c = code(rng);
  return codes;
}

// Every code lands where the header says, padding is code 0, and the inverse restores the bytes.
TEST(MmaPrepack, RoundTripsRaggedShapesAndPlacesEveryCode) {
  std::mt19937 rng(17);
  for (int bits : {1, 2, 4, 8})
    for (auto [rows, cols] : std::vector<std::pair<std::size_t, std::size_t>>{
             {1, 1}, {8, 64}, {7, 255}, {9, 257}, {16, 512}, {33, 1000}, {3, 4099}, {40, 130}}) {
      const std::vector<std::uint32_t> codes = random_codes(rows, cols, bits, rng);
      const PackedCodes packed = pack_codes(codes, rows, cols, bits);
      const FragmentCodes fragments = to_fragment_order(packed);
      ASSERT_EQ(fragments.row_blocks, (rows + 7) / 8);
      ASSERT_EQ(fragments.k_units, (cols + std::size_t(mma::unit_cols(bits)) - 1) / std::size_t(mma::unit_cols(bits)));
      ASSERT_EQ(fragments.bytes.size(), fragments.row_blocks * fragments.k_units * 512);
      // Read every code of the padded matrix back through the inverse maps, one lane word at a time.
      for (std::size_t block = 0; block < fragments.row_blocks; ++block)
        for (std::size_t unit = 0; unit < fragments.k_units; ++unit)
          for (int lane = 0; lane < mma::kLanes; ++lane) {
            const std::uint8_t* bytes =
                fragments.bytes.data() + mma::unit_offset(block, unit, fragments.k_units) + lane * mma::kLaneBytes;
            for (int position = 0; position < mma::codes_per_lane(bits); ++position) {
              const int bit = position * bits;
              const std::uint32_t got = (bytes[bit / 8] >> (bit % 8)) & ((1u << bits) - 1u);
              const mma::Coord at = mma::unit_coord(lane, position);
              const std::size_t r = block * 8 + std::size_t(at.row);
              const std::size_t c = unit * std::size_t(mma::unit_cols(bits)) + std::size_t(at.col);
              const std::uint32_t expected = r < rows && c < cols ? codes[r * cols + c] : 0u;
              ASSERT_EQ(got, expected) << bits << " bits " << rows << "x" << cols << " at (" << r << ", " << c << ")";
            }
          }
      const PackedCodes back = from_fragment_order(fragments);
      EXPECT_EQ(back.bytes, packed.bytes) << bits << " bits " << rows << "x" << cols;
      EXPECT_EQ(unpack_codes(back), codes);
    }
}

TEST(MmaPrepack, RefusesWidthsWithoutAFragmentOrderAndBrokenBuffers) {
  EXPECT_FALSE(has_fragment_order(16));
  EXPECT_FALSE(has_fragment_order(3));
  EXPECT_TRUE(has_fragment_order(2));
  const PackedCodes wide = pack_codes(std::vector<std::uint32_t>(8, 300), 2, 4, 16);
  EXPECT_THROW(to_fragment_order(wide), Error);
  FragmentCodes broken = to_fragment_order(pack_codes(std::vector<std::uint32_t>(8, 1), 2, 4, 2));
  broken.bytes.pop_back();
  EXPECT_THROW(from_fragment_order(broken), Error);
}

// pair_code reads the two codes of a register from a lane's words: the codes the prepack put at
// positions (step * 2 + reg) * 2 and + 1, low code in the low bits.
TEST(MmaDecode, PairCodesAreTheRegistersTwoCodes) {
  std::mt19937 rng(3);
  auto check = [&](auto width) {
    constexpr int kBits = decltype(width)::value;
    for (int trial = 0; trial < 200; ++trial) {
      std::uint32_t words[4];
      for (auto& w : words) w = std::uint32_t(rng());
      const auto code = [&](int position) {
        const int bit = position * kBits;
        return (words[bit / 32] >> (bit % 32)) & ((1u << kBits) - 1u);
      };
      for (int step = 0; step < mma::unit_steps(kBits); ++step)
        for (int reg = 0; reg < 2; ++reg) {
          const int p = (step * 2 + reg) * 2;
          ASSERT_EQ(mma::pair_code<kBits>(words, step, reg), code(p) | (code(p + 1) << kBits)) << kBits << " bits";
        }
    }
  };
  check(std::integral_constant<int, 1>{});
  check(std::integral_constant<int, 2>{});
  check(std::integral_constant<int, 4>{});
  check(std::integral_constant<int, 8>{});
}

// BF16 rounding: to nearest, ties to even, against values built from their bits.
TEST(MmaDecode, Bf16RoundsToNearestEven) {
  EXPECT_EQ(mma::bf16_round(1.0f), 0x3F80);
  EXPECT_EQ(mma::bf16_round(-2.0f), 0xC000);
  EXPECT_EQ(mma::bf16_value(0x3F80), 1.0f);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even mantissa (1); 1 + 3 * 2^-8 to 1 + 2^-6.
  EXPECT_EQ(mma::bf16_round(1.0f + 0x1p-8f), 0x3F80);
  EXPECT_EQ(mma::bf16_round(1.0f + 3 * 0x1p-8f), 0x3F82);
  EXPECT_EQ(mma::bf16_round(1.0f + 0x1p-8f + 0x1p-20f), 0x3F81);  // above halfway: up
  EXPECT_EQ(mma::bf16_value(mma::bf16_round(0.1f)), 0.10009765625f);
  // Past the largest BF16 a finite value rounds to infinity, as __float2bfloat16_rn rounds it.
  EXPECT_EQ(mma::bf16_round(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_EQ(mma::bf16_round(-std::numeric_limits<float>::infinity()), 0xFF80);
  // Every NaN is the canonical BF16 NaN: the rounding add alone would carry 0x7FFFFFFF (the NaN of
  // CUDA's FP32 arithmetic) to -0, 0xFFFFFFFF to +0 and the smallest payload to infinity.
  for (std::uint32_t pattern : {0x7FFFFFFFu, 0xFFFFFFFFu, 0x7F800001u, 0xFF800001u, 0x7FC00000u, 0x7FFF8000u}) {
    float nan;
    std::memcpy(&nan, &pattern, sizeof nan);
    EXPECT_EQ(mma::bf16_round(nan), 0x7FFF) << std::hex << pattern;
    EXPECT_TRUE(std::isnan(mma::bf16_value(mma::bf16_round(nan))));
  }
}

// Every register value the decode can produce: for every pair code, both halves are the BF16 levels
// of its two codes (half 0 low), through the pair table at 1 and 2 bits and two look-ups above.
TEST(MmaDecode, EveryPairCodeDecodesToItsTwoLevels) {
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> value(-3.0f, 3.0f);
  auto check = [&](auto width) {
    constexpr int kBits = decltype(width)::value;
    EXPECT_EQ(mma::uses_pair_table(kBits), kBits <= 2);
    std::vector<float> levels(1u << kBits);
    std::vector<std::uint16_t> rounded(levels.size());
    for (std::size_t i = 0; i < levels.size(); ++i) levels[i] = value(rng), rounded[i] = mma::bf16_round(levels[i]);
    std::vector<std::uint32_t> table(std::size_t(mma::decode_table_entries(kBits)));
    for (std::size_t e = 0; e < table.size(); ++e) table[e] = mma::decode_table_entry(rounded.data(), int(e), kBits);
    for (std::uint32_t pair = 0; pair < (1u << (2 * kBits)); ++pair) {
      const std::uint32_t reg = mma::decode_register<kBits>(pair, [&](int e) { return table.at(std::size_t(e)); });
      const float low = mma::bf16_value(std::uint16_t(reg & 0xFFFFu)), high = mma::bf16_value(std::uint16_t(reg >> 16));
      ASSERT_EQ(low, mma::bf16_value(mma::bf16_round(levels[pair & ((1u << kBits) - 1u)]))) << kBits << " bits " << pair;
      ASSERT_EQ(high, mma::bf16_value(mma::bf16_round(levels[pair >> kBits]))) << kBits << " bits " << pair;
      const float level = levels[pair & ((1u << kBits) - 1u)];
      ASSERT_LE(std::abs(low - level), std::abs(level) * 0x1p-8f);  // half of BF16's 8-bit significand's step
    }
  };
  check(std::integral_constant<int, 1>{});
  check(std::integral_constant<int, 2>{});
  check(std::integral_constant<int, 4>{});
  check(std::integral_constant<int, 8>{});
}

}  // namespace
}  // namespace nuq
