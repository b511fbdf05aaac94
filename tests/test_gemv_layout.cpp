// The CUDA-core GEMV's maps (kernels/gemv_layout.h) and its arithmetic (tests/gemv_model.h) on the
// CPU, before any kernel runs: the X slots are a permutation that keeps every 16-byte shared-memory
// phase free of bank conflicts (where storing quads as they come would not be), the unit decode
// reads nuq/packed.h's layout, the grid planner covers every row, and the lane-by-lane model of
// the kernel agrees with a double reference within a bound derived from its roundings, while a
// planted layout bug does not.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>
#include <vector>

#include "gemv_model.h"
#include "nuq/packed.h"
#include "qgemm_cases.h"

namespace nuq {
namespace {

constexpr int kWidths[] = {1, 2, 4, 8, 16};
constexpr int kBankQuads = 8;   // 16-byte quads in a row of the 32 four-byte banks
constexpr int kPhaseLanes = 8;  // lanes served together by a 16-byte shared-memory access

int identity_slot(int quad, int) { return quad; }

// The most lanes of one phase that fall in the same bank quad (1: conflict-free) when lane l of a
// warp reads quad l * unit_quads + t, stored at slot(quad), for the worst phase and step t.
int worst_conflict(int bits, int (*slot)(int, int)) {
  int worst = 1;
  for (int t = 0; t < gemv::unit_quads(bits); ++t)
    for (int phase = 0; phase < gemv::kLanes / kPhaseLanes; ++phase) {
      int count[kBankQuads] = {};
      for (int l = phase * kPhaseLanes; l < (phase + 1) * kPhaseLanes; ++l)
        worst = std::max(worst, ++count[slot(l * gemv::unit_quads(bits) + t, bits) % kBankQuads]);
    }
  return worst;
}

TEST(GemvLayout, QuadSlotsPermuteEachAlignedGroupOfEightQuads) {
  for (int bits : kWidths) {
    std::set<int> seen;
    for (int q = 0; q < gemv::slice_quads(bits); ++q) {
      const int slot = gemv::quad_slot(q, bits);
      ASSERT_EQ(slot / kBankQuads, q / kBankQuads) << bits << " bits, quad " << q;  // staging stays in its bank row
      seen.insert(slot);
    }
    EXPECT_EQ(int(seen.size()), gemv::slice_quads(bits)) << bits << " bits";
    EXPECT_EQ(gemv::slice_quads(bits) % kBankQuads, 0) << "rows of the slice start on a bank row";
  }
}

TEST(GemvLayout, EveryLanesReadOfXIsFreeOfBankConflictsWhereUnswizzledQuadsConflict) {
  // Quads as they come: 8-way conflicts at 1, 2 and 4 bits, 4-way at 8, 2-way at 16.
  const int unswizzled[] = {8, 8, 8, 4, 2};
  for (std::size_t w = 0; w < std::size(kWidths); ++w) {
    EXPECT_EQ(worst_conflict(kWidths[w], gemv::quad_slot), 1) << kWidths[w] << " bits";
    EXPECT_EQ(worst_conflict(kWidths[w], identity_slot), unswizzled[w]) << kWidths[w] << " bits";
  }
}

TEST(GemvLayout, StagingThreadsWriteConsecutiveQuadsToDistinctBankQuads) {
  for (int bits : kWidths)
    for (int first = 0; first < gemv::kMaxBatch * gemv::slice_quads(bits); first += kPhaseLanes) {
      std::set<int> banks;
      for (int e = first; e < first + kPhaseLanes; ++e)
        banks.insert(gemv::quad_slot(e % gemv::slice_quads(bits), bits) % kBankQuads);
      ASSERT_EQ(banks.size(), std::size_t(kPhaseLanes)) << bits << " bits, threads from " << first;
    }
}

TEST(GemvLayout, UnitCodesAreThePackedRowsCodes) {
  std::mt19937 rng(71);
  for (int bits : kWidths) {
    const std::size_t cols = 3 * std::size_t(gemv::unit_codes(bits));
    std::uniform_int_distribution<std::uint32_t> code(0, (1u << bits) - 1);
    std::vector<std::uint32_t> codes(cols);
    for (auto& c : codes) c = code(rng);
    const PackedCodes packed = pack_codes(codes, 1, cols, bits);
    for (std::size_t unit = 0; unit < 3; ++unit) {
      const std::uint8_t* u = packed.bytes.data() + unit * gemv::kUnitBytes;
      for (int j = 0; j < gemv::unit_codes(bits); ++j)
        ASSERT_EQ(gemv::unit_code(test::little_endian_word(u), test::little_endian_word(u + 4),
                                  test::little_endian_word(u + 8), test::little_endian_word(u + 12), j, bits),
                  codes[unit * std::size_t(gemv::unit_codes(bits)) + std::size_t(j)])
            << bits << " bits, unit " << unit << ", code " << j;
    }
  }
}

TEST(GemvLayout, TakesRowsFromOneWarpStepToTheMostSlicesTheGridHolds) {
  // Longer rows go to the default kernel: launched, the GEMV would refuse them (gridDim.y).
  for (int bits : kWidths) {
    const std::size_t step = std::size_t(gemv::slice_columns(bits)), longest = step * gemv::kMaxSlices;
    EXPECT_TRUE(gemv::takes(1, step, bits) && gemv::takes(4, longest, bits)) << bits;
    EXPECT_EQ(gemv::slices(longest, bits), gemv::kMaxSlices);
    EXPECT_FALSE(gemv::takes(1, longest + 1, bits)) << bits;
    EXPECT_FALSE(gemv::takes(1, step - 1, bits) || gemv::takes(0, step, bits) || gemv::takes(5, step, bits)) << bits;
  }
  EXPECT_FALSE(gemv::takes(1, 4096, 3));
}

TEST(GemvLayout, TheGridCoversEveryRowWithAWaveOfBlocksWhereTheRowsAllowIt) {
  for (int bits : kWidths)
    for (std::size_t n : {1u, 31u, 32u, 33u, 4096u, 8192u, 28672u})
      for (std::size_t k : {std::size_t(gemv::slice_columns(bits)), std::size_t(8192), std::size_t(28672)})
        for (std::size_t resident : {132u, 264u, 396u, 1056u}) {
          const std::size_t passes = gemv::passes_per_block(n, k, bits, resident);
          const std::size_t row_passes = (n + gemv::kRowsPerPass - 1) / gemv::kRowsPerPass;
          const auto blocks = [&](std::size_t p) { return (row_passes + p - 1) / p * gemv::slices(k, bits); };
          ASSERT_TRUE(passes >= 1 && passes <= 16 && (passes & (passes - 1)) == 0) << passes;
          ASSERT_GE(blocks(passes) / gemv::slices(k, bits) * passes * gemv::kRowsPerPass, n);  // every row taken
          if (passes > 1) {
            ASSERT_GE(blocks(passes), resident) << "a wave, when the rows give one";
          }
          if (passes < 16) {
            ASSERT_LT(blocks(2 * passes), resident) << "and the most rows per block that keeps it";
          }
        }
}

// Y in double from the same X and levels, and sum |x w| + |bias| per output.
struct Reference {
  std::vector<double> y, magnitude;
};
Reference reference(const std::vector<float>& x, std::size_t m, const QuantizedMatrix& w, const std::vector<float>& bias) {
  const std::size_t n = w.codes.rows, k = w.codes.cols;
  Reference ref{std::vector<double>(m * n), std::vector<double>(m * n)};
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t r = 0; r < n; ++r) {
      double sum = bias[r], magnitude = std::abs(double(bias[r]));
      for (std::size_t c = 0; c < k; ++c) {
        const double product = double(x[i * k + c]) * double(w.row_levels(r)[w.codes.at(r, c)]);
        sum += product, magnitude += std::abs(product);
      }
      ref.y[i * n + r] = sum, ref.magnitude[i * n + r] = magnitude;
    }
  return ref;
}

// Each output passes through at most unit_codes fused multiply-adds in its lane, 5 shuffle
// additions, one addition per slice and the bias, each rounding by at most one unit roundoff of a
// running sum bounded by sum |x w| + |bias|.
double bound(const Reference& ref, std::size_t e, std::size_t k, int bits) {
  const double roundings = gemv::unit_codes(bits) + 5 + double(gemv::slices(k, bits)) + 1;
  return 1.01 * roundings * 0x1p-24 * ref.magnitude[e];
}

// Random cases at every width and batch: k a whole slice, a slice and a part (odd, so X's rows
// are not aligned for vectors), several slices; one table or a table per row.
template <typename Check>
void for_each_case(Check&& check) {
  std::mt19937 rng(72);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (int bits : kWidths)
    for (std::size_t m = 1; m <= std::size_t(gemv::kMaxBatch); ++m) {
      const std::size_t slice = std::size_t(gemv::slice_columns(bits));
      for (std::size_t k : {slice, slice + 37, 3 * slice - 5}) {
        const std::size_t n = 1 + (k + m) % 7;
        const bool per_row = (k + m) % 2 == 1;
        const QuantizedMatrix w = test::random_matrix(n, k, bits, rng, false, per_row);
        std::vector<float> x(m * k), bias(n);
        for (auto& v : x) v = value(rng);
        for (auto& v : bias) v = value(rng);
        check(bits, m, n, k, w, x, bias);
      }
    }
}

TEST(GemvModel, MatchesTheDoubleReferenceAtEveryWidthBatchAndSlicing) {
  for_each_case([](int bits, std::size_t m, std::size_t n, std::size_t k, const QuantizedMatrix& w,
                   const std::vector<float>& x, const std::vector<float>& bias) {
    const std::vector<float> got = test::gemv_model(x.data(), m, w, bias.data(), false);
    const Reference ref = reference(x, m, w, bias);
    for (std::size_t e = 0; e < m * n; ++e)
      ASSERT_LE(std::abs(double(got[e]) - ref.y[e]), bound(ref, e, k, bits))
          << bits << " bits, m=" << m << " n=" << n << " k=" << k << " at (" << e / n << ", " << e % n << ")";
  });
}

TEST(GemvModel, AppliesReluAfterTheBias) {
  std::mt19937 rng(73);
  const QuantizedMatrix w = test::random_matrix(9, 2048, 2, rng, true);
  std::vector<float> x(2 * 2048), bias(9);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(int(i % 5) - 2);
  for (std::size_t r = 0; r < bias.size(); ++r) bias[r] = float(int(r) - 4) * 100.0f;
  const std::vector<float> plain = test::gemv_model(x.data(), 2, w, bias.data(), false);
  const std::vector<float> relu = test::gemv_model(x.data(), 2, w, bias.data(), true);
  std::size_t clipped = 0;
  for (std::size_t e = 0; e < plain.size(); ++e) {
    EXPECT_EQ(relu[e], std::max(plain[e], 0.0f));
    clipped += plain[e] < 0.0f;
  }
  EXPECT_GT(clipped, 0u);
}

// Reading quads where they were not staged (the kernel without its swizzle on one side) gives
// errors of the size of the outputs, far beyond the bound: the test above would catch it.
TEST(GemvModel, APlantedLayoutBugFailsTheReference) {
  for_each_case([](int bits, std::size_t m, std::size_t n, std::size_t k, const QuantizedMatrix& w,
                   const std::vector<float>& x, const std::vector<float>& bias) {
    test::GemvSlots wrong;
    wrong.read = identity_slot;
    const std::vector<float> got = test::gemv_model(x.data(), m, w, bias.data(), false, wrong);
    const Reference ref = reference(x, m, w, bias);
    std::size_t beyond = 0;
    for (std::size_t e = 0; e < m * n; ++e) beyond += std::abs(double(got[e]) - ref.y[e]) > bound(ref, e, k, bits);
    EXPECT_GT(beyond, 0u) << bits << " bits, m=" << m << " n=" << n << " k=" << k;
  });
}

}  // namespace
}  // namespace nuq
