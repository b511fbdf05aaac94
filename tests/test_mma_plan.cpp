// The tensor-core qgemm's launch plan (kernels/mma_plan.h) at every width and batch tile it is
// built for: every block's shared memory within what its launch may take, every slice holding at
// least a unit, and the slices covering k exactly. A plan with no unit used to throw at 2 bits and
// 33-64 rows of X, where a unit of X alone nearly filled the 48 KiB a launch gets by default.
#include <gtest/gtest.h>

#include <cstddef>

#include "../kernels/mma_plan.h"

namespace nuq::mma_plan {
namespace {

constexpr std::size_t kOptInLimit = 227 * 1024;  // a block's most on sm_90 (sm_80: 163 KiB)

TEST(MmaPlan, EveryWidthAndTileFitsItsLaunch) {
  for (const int bits : {2, 4, 8})
    for (const std::size_t rows : {16, 32, 64}) {
      const std::size_t budget = shared_budget(bits, rows);
      EXPECT_LE(budget, 96u * 1024) << bits << " bits, " << rows << " rows";
      EXPECT_LE(budget, kOptInLimit);
      EXPECT_LE(shared_bytes(bits, rows, kMinUnits), budget) << bits << " bits, " << rows << " rows";
      // The default 48 KiB wherever it holds kMinUnits units: no opt-in, four blocks a multiprocessor.
      if (shared_bytes(bits, rows, kMinUnits) <= kDefaultSharedBytes) {
        EXPECT_EQ(budget, kDefaultSharedBytes);
      }
      for (const std::size_t k_units : {1, 2, 3, 5, 32, 33, 64, 255, 1000})
        for (const std::size_t ctas_n : {1, 7, 128, 1024, 1 << 20})
          for (const int multiprocessors : {1, 108, 132}) {
            const std::size_t units = units_per_slice(bits, rows, k_units, ctas_n, multiprocessors);
            ASSERT_GE(units, 1u);
            ASSERT_LE(units, k_units);
            ASSERT_LE(shared_bytes(bits, rows, units), budget) << bits << " bits, " << rows << " rows, " << units;
            const std::size_t slices = (k_units + units - 1) / units;
            ASSERT_LT((slices - 1) * units, k_units);  // no empty slice
            ASSERT_LE(slices, k_units);
          }
    }
}

// The two tiles that did not fit before: 32 and 64 rows of X at 2 bits get two units a slice
// (a unit is 256 columns), the 64-row tile by opting in to 81 KiB.
TEST(MmaPlan, TwoBitTilesOfManyRowsHoldTwoUnits) {
  EXPECT_EQ(mma::unit_cols(2), 256);
  EXPECT_EQ(shared_budget(2, 64), kRingBytes + kWarps * table_bytes(2) + 64 * (2 * 256 + kPadX) * 2);
  EXPECT_GT(shared_budget(2, 64), kDefaultSharedBytes);
  EXPECT_EQ(units_per_slice(2, 64, 32, 1, 1), 2u);   // k = 8192: one block, nothing to spread
  EXPECT_EQ(units_per_slice(2, 32, 32, 1, 1), 2u);
  EXPECT_EQ(units_per_slice(2, 16, 32, 1, 1), 3u);   // 48 KiB as before
  EXPECT_EQ(units_per_slice(4, 64, 64, 1, 1), 2u);
  EXPECT_EQ(units_per_slice(8, 16, 128, 1, 1), 11u);
  // 128 blocks along n on 132 multiprocessors want at least 3 slices; the budget asks for more at
  // 2 bits (11 of at most 3 units), at 4 bits 4 slices of 8 units (at most 9 fit) spread them evenly.
  EXPECT_EQ(units_per_slice(2, 16, 32, 128, 132), 3u);
  EXPECT_EQ(units_per_slice(4, 16, 32, 128, 132), 8u);
  EXPECT_EQ(units_per_slice(4, 16, 32, 4096, 132), 8u);  // wanted 1 slice; the budget's 4 remain
}

}  // namespace
}  // namespace nuq::mma_plan
