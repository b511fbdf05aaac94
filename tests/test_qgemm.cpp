// Packed codes and the fused CPU qgemm against dequantize-then-sgemm, on ragged shapes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <tuple>

#include "nuq/backend.h"
#include "nuq/error.h"
#include "nuq/grouped.h"
#include "nuq/packed.h"
#include "nuq/ptq.h"
#include "nuq/quantized_file.h"
#include "nuq/qgemm.h"
#include "qgemm_cases.h"

#include "../host/panel_gemm.h"
#include "../host/qgemm_lut.h"

namespace nuq {
namespace {

using test::random_matrix;

TEST(Packed, RoundTripsEveryWidthOnRaggedRows) {
  std::mt19937 rng(3);
  for (int bits : {1, 2, 4, 8, 16})
    for (std::size_t cols : {1u, 3u, 5u, 17u, 33u}) {
      std::uniform_int_distribution<std::uint32_t> code(0, (1u << bits) - 1);
      std::vector<std::uint32_t> codes(3 * cols);
      for (auto& c : codes) c = code(rng);
      const PackedCodes packed = pack_codes(codes, 3, cols, bits);
      EXPECT_EQ(packed.bytes.size(), 3 * packed_row_bytes(cols, bits));
      EXPECT_EQ(unpack_codes(packed), codes) << bits << " bits, " << cols << " columns";
    }
}

TEST(Packed, LayoutIsLeastSignificantBitsFirstAndRowAligned) {
  const PackedCodes p = pack_codes({0, 1, 2, 3, 3, 0, 1, 2, 1}, 3, 3, 2);
  // Row 0: codes 0,1,2 -> 0b10_01_00 = 0x24; each row starts a new byte.
  EXPECT_EQ(p.bytes, (std::vector<std::uint8_t>{0x24, 0x0F, 0x19}));  // 3|3<<2, 1|2<<2|1<<4
  EXPECT_THROW(pack_codes({4}, 1, 1, 2), Error);
  EXPECT_THROW(pack_codes({0}, 1, 1, 3), Error);
  EXPECT_THROW(pack_codes({0, 1}, 1, 1, 2), Error);
}

// qgemm on m random rows of X (and a random bias) against dequantize-then-sgemm, to FP32 rounding;
// `where` names the case in a failure.
void expect_qgemm_matches_reference(const QuantizedMatrix& w, std::size_t m, std::mt19937& rng,
                                    const std::string& where) {
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  const std::size_t n = w.codes.rows, k = w.codes.cols;
  std::vector<float> x(m * k), bias(n), fused(m * n), reference(m * n);
  for (auto& v : x) v = value(rng);
  for (auto& v : bias) v = value(rng);
  qgemm(x.data(), m, w, bias.data(), fused.data());
  qgemm_ref(x.data(), m, w, bias.data(), reference.data());
  double largest = 0.0;
  for (std::size_t i = 0; i < fused.size(); ++i) {
    ASSERT_NEAR(fused[i], reference[i], 1e-4 * (1.0 + std::abs(reference[i]))) << where << " at " << i;
    largest = std::max(largest, double(std::abs(fused[i])));
  }
  ASSERT_GT(largest, 0.0) << where;  // a kernel that writes nothing cannot pass
}

TEST(Qgemm, MatchesDequantizeThenSgemmOnRaggedShapes) {
  std::mt19937 rng(11);
  for (int bits : {1, 2, 4, 8, 16})
    for (std::size_t m : {1u, 3u, 4u, 5u, 11u, 16u, 53u, 300u})  // 300: past the look-up path
      for (std::size_t n : {1u, 7u, 64u, 65u, 130u})
        for (std::size_t k : {1u, 3u, 33u, 100u, 784u}) {
          ASSERT_NO_FATAL_FAILURE(expect_qgemm_matches_reference(
              random_matrix(n, k, bits, rng, false), m, rng,
              "bits " + std::to_string(bits) + " m " + std::to_string(m) + " n " + std::to_string(n) + " k " +
                  std::to_string(k)));
        }
}

TEST(Qgemm, ExactOnSmallIntegers) {
  // Integer inputs and levels: every product and sum is exact in float, so both paths agree bitwise.
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> small(-3, 3);
  for (std::size_t m : {1u, 9u}) {
    const QuantizedMatrix w = random_matrix(37, 45, 2, rng, true);
    std::vector<float> x(m * 45), fused(m * 37), reference(m * 37);
    for (auto& v : x) v = float(small(rng));
    qgemm(x.data(), m, w, nullptr, fused.data());
    qgemm_ref(x.data(), m, w, nullptr, reference.data());
    EXPECT_EQ(fused, reference);
  }
}

TEST(Qgemm, IdentityInputsReadBackTheLevels) {
  std::mt19937 rng(9);
  const QuantizedMatrix w = random_matrix(6, 5, 4, rng, false);
  std::vector<float> identity(5 * 5, 0.0f), y(5 * 6);
  for (int i = 0; i < 5; ++i) identity[i * 5 + i] = 1.0f;
  qgemm(identity.data(), 5, w, nullptr, y.data());
  for (std::size_t r = 0; r < 6; ++r)
    for (std::size_t c = 0; c < 5; ++c) EXPECT_EQ(y[c * 6 + r], w.levels[w.codes.at(r, c)]);
}

// Per-channel normalisation: each row has its own table of levels. Every path (direct AVX-512
// rows, the per-code decoder of the sgemm panels, 8/16-bit look-ups) must take the row's table.
TEST(Qgemm, PerRowLevelsMatchDequantizeThenSgemm) {
  std::mt19937 rng(17);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (int bits : {1, 2, 4, 8, 16})
    for (std::size_t m : {1u, 3u, 5u, 40u})
      for (auto [n, k] : std::vector<std::pair<std::size_t, std::size_t>>{{2, 33}, {65, 100}, {130, 784}}) {
        if (bits == 16 && n > 65) continue;  // 65536 levels per row: keep the test small
        const QuantizedMatrix w = random_matrix(n, k, bits, rng, false, true);
        ASSERT_TRUE(w.per_row());
        std::vector<float> x(m * k), bias(n), fused(m * n), reference(m * n);
        for (auto& v : x) v = value(rng);
        for (auto& v : bias) v = value(rng);
        qgemm(x.data(), m, w, bias.data(), fused.data());
        qgemm_ref(x.data(), m, w, bias.data(), reference.data());
        for (std::size_t i = 0; i < fused.size(); ++i)
          ASSERT_NEAR(fused[i], reference[i], 1e-4 * (1.0 + std::abs(reference[i])))
              << "bits " << bits << " m " << m << " n " << n << " k " << k << " at " << i;
      }
  // Identity inputs read back each row's own levels, exactly.
  const QuantizedMatrix w = random_matrix(6, 5, 2, rng, true, true);
  std::vector<float> identity(5 * 5, 0.0f), y(5 * 6);
  for (int i = 0; i < 5; ++i) identity[i * 5 + i] = 1.0f;
  qgemm(identity.data(), 5, w, nullptr, y.data());
  for (std::size_t r = 0; r < 6; ++r)
    for (std::size_t c = 0; c < 5; ++c) EXPECT_EQ(y[c * 6 + r], w.levels[r * 4 + w.codes.at(r, c)]) << r << "," << c;
}

// Batches past the direct rows (and, at 1 and 2 bits with one table, past the look-up's 256) are
// decoded into FP32 panels for sgemm, sixteen codes at a time with AVX-512 and the rest one by
// one: identity rows of X read back every level as the decoder gives it, in both parts of a row.
// 16-bit codes of one uniform table take the grid's fma, 8-bit ones their table: the levels here
// are a grid to rounding (-1.5 + 0.1 c in double, then float), where the two differ.
TEST(Qgemm, PanelsDecodeEveryWidthToItsLevels) {
  std::mt19937 rng(29);
  const std::size_t n = 7, k = 37, m = 300;  // two chunks of sixteen and five more
  std::vector<float> x(m * k, 0.0f), y(m * n);
  for (std::size_t i = 0; i < k; ++i) x[i * k + i] = 1.0f;  // rows past k stay 0
  for (int bits : {1, 2, 4, 8, 16})
    for (int kind = 0; kind < 3; ++kind) {  // one random table, a table per row, one uniform grid
      QuantizedMatrix w = random_matrix(n, k, bits, rng, false, kind == 1);
      if (kind == 2)
        for (std::size_t c = 0; c < w.levels.size(); ++c) w.levels[c] = float(-1.5 + 0.1 * double(c));
      const std::optional<LevelGrid> found = kind == 2 ? level_grid(w.levels.data(), w.levels.size()) : std::nullopt;
      ASSERT_EQ(found.has_value(), kind == 2);
      const LevelGrid grid = found.value_or(LevelGrid{});
      if (bits == 8 && found) {  // the table and the grid disagree somewhere, so the test can tell them apart
        std::size_t differ = 0;
        for (std::size_t c = 0; c < 256; ++c) differ += grid.level(std::uint32_t(c)) != w.levels[c];
        ASSERT_GT(differ, 0u);
      }
      qgemm(x.data(), m, w, nullptr, y.data());
      for (std::size_t r = 0; r < n; ++r)
        for (std::size_t c = 0; c < k; ++c) {
          const std::uint32_t code = w.codes.at(r, c);
          const float level = found && bits == 16 ? grid.level(code) : w.row_levels(r)[code];
          ASSERT_EQ(y[c * n + r], level) << bits << " bits, kind " << kind << ", row " << r << ", column " << c;
        }
    }
}

// 8-bit codes off a grid: with AVX-512 VBMI the direct products and the panels' decoder look levels
// up 64 codes at a time in byte planes of the table, then gather the chunks of sixteen left and
// take the rest one by one. Identity rows of X read back, bit for bit, the level of every code at
// every column (all three parts of a row), from one table and from a table per row, whose levels
// span the exponents (denormals and -0 included: their bytes must travel, not their values).
TEST(Qgemm, EightBitTablesReadBackEveryLevelOnEveryPath) {
  std::mt19937 rng(31);
  const std::size_t n = 5, k = 64 * 4 + 16 + 5;  // four blocks of 64, a chunk of sixteen, five more
  std::vector<std::uint32_t> codes(n * k);
  for (std::size_t r = 0; r < n; ++r)
    for (std::size_t c = 0; c < k; ++c) codes[r * k + c] = (c + 53 * r) % 256;  // each row holds every code
  std::uniform_int_distribution<int> exponent(-140, 100);
  std::uniform_real_distribution<float> mantissa(-2.0f, 2.0f);
  for (bool per_row : {false, true}) {
    QuantizedMatrix w{pack_codes(codes, n, k, 8), std::vector<float>((per_row ? n : 1) * 256)};
    for (float& level : w.levels) level = std::ldexp(mantissa(rng), exponent(rng));
    w.levels[7] = -0.0f;
    w.levels[200] = std::numeric_limits<float>::denorm_min();
    ASSERT_FALSE(level_grid(w.levels.data(), 256).has_value());
    for (std::size_t m : {1u, 16u, 40u}) {  // 1 and 16: direct products; 40: decoded panels
      std::vector<float> x(m * k), y(m * n);
      for (std::size_t first = 0; first < k; first += m) {
        std::fill(x.begin(), x.end(), 0.0f);
        for (std::size_t i = 0; i < m && first + i < k; ++i) x[i * k + first + i] = 1.0f;
        qgemm(x.data(), m, w, nullptr, y.data());
        for (std::size_t i = 0; i < m && first + i < k; ++i)
          for (std::size_t r = 0; r < n; ++r) {
            const float level = w.row_levels(r)[codes[r * k + first + i]];
            ASSERT_EQ(y[i * n + r], level) << (per_row ? "per row" : "one table") << ", m " << m << ", row " << r
                                           << ", column " << first + i;
          }
      }
    }
  }
}

// A matrix of no columns multiplies to the bias on every path (the panels' size divides by k).
TEST(Qgemm, NoColumnsGiveTheBias) {
  const std::vector<float> bias{1.0f, 2.0f, 3.0f, 4.0f};
  for (int bits : {1, 2, 4, 8, 16})
    for (bool per_row : {false, true})
      for (std::size_t m : {std::size_t{1}, std::size_t{16}, std::size_t{17}, std::size_t{300}}) {
        QuantizedMatrix w;
        w.codes = {4, 0, bits, {}};
        w.levels.assign((per_row ? 4 : 1) << bits, 0.5f);
        std::vector<float> x(1), y(m * 4, -9.0f);
        qgemm(x.data(), m, w, bias.data(), y.data());
        for (std::size_t i = 0; i < m * 4; ++i) ASSERT_EQ(y[i], bias[i % 4]) << bits << " bits, m " << m;
      }
  QuantizedTensor t;
  t.shape = {4, 0};
  t.group_size = 8;
  t.matrix.codes = {0, 8, 2, {}};
  t.normalised_levels = {-1.5f, -0.5f, 0.5f, 1.5f};
  for (std::size_t m : {std::size_t{3}, std::size_t{17}}) {
    std::vector<float> x(1), y(m * 4, -9.0f);
    qgemm_grouped(x.data(), m, t, bias.data(), y.data());
    for (std::size_t i = 0; i < m * 4; ++i) ASSERT_EQ(y[i], bias[i % 4]) << "grouped, m " << m;
  }
}

// A row just over an eighth of a panel long makes panels of 7 rows: 19 rows take three, 7 + 7 + 5,
// shared by the threads (batches past the direct rows; 2-bit codes with a table per row are not
// the look-up's). Small integers keep every sum exact (below 2^24), so any order agrees.
TEST(Qgemm, RowsSpanningSeveralPanelsMatchDequantizeThenSgemm) {
  std::mt19937 rng(31);
  std::uniform_int_distribution<int> small(-3, 3);
  const std::size_t n = 19, k = detail::kPanelBytes / (8 * sizeof(float)) + 3;
  ASSERT_EQ(detail::kPanelBytes / (sizeof(float) * k), 7u);
  for (auto [bits, per_row, m] : {std::tuple{8, false, std::size_t{17}}, std::tuple{2, true, std::size_t{20}}}) {
    const QuantizedMatrix w = random_matrix(n, k, bits, rng, true, per_row);
    std::vector<float> x(m * k), fused(m * n), reference(m * n);
    for (auto& v : x) v = float(small(rng));
    qgemm(x.data(), m, w, nullptr, fused.data());
    qgemm_ref(x.data(), m, w, nullptr, reference.data());
    EXPECT_EQ(fused, reference) << bits << " bits";
    EXPECT_GT(*std::max_element(reference.begin(), reference.end()), 100.0f);  // not all zero
  }
}

// Prepared weights (on the CPU: the rows interleaved for the look-up path) take the same
// arithmetic in the same order as the row-major codes, so the products agree bit for bit; the
// shapes cross every edge of the layout: rows past a block of 16, words past a 64-byte group,
// several chunks of groups, both sides of the threading threshold, batches past a slice of 8.
TEST(Qgemm, PreparedWeightsGiveTheSameProductBitForBit) {
  std::mt19937 rng(23);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (int bits : {1, 2, 4, 8})
    for (bool per_row : {false, true})
      for (auto [n, k] : std::vector<std::pair<std::size_t, std::size_t>>{
               {1, 1}, {15, 33}, {17, 257}, {130, 784}, {33, 1500}, {300, 1000}})
        for (std::size_t m : {1u, 3u, 8u, 9u, 53u}) {
          const QuantizedMatrix w = random_matrix(n, k, bits, rng, false, per_row);
          const auto prepared = cpu_backend().prepare(w);
          ASSERT_EQ(&prepared->matrix(), &w);
          ASSERT_EQ(cpu_layout_used(w, m), detail::lut_compiled() && ((bits <= 4 && !w.per_row() && m <= 256 &&
                                                                        (bits < 4 || m <= 3)) ||
                                                                       (bits == 8 && w.per_row() && m <= 16)));
          std::vector<float> x(m * k), bias(n), direct(m * n), from_prepared(m * n, NAN), reference(m * n);
          for (auto& v : x) v = value(rng);
          for (auto& v : bias) v = value(rng);
          qgemm(x.data(), m, w, bias.data(), direct.data());
          cpu_backend().qgemm(x.data(), m, *prepared, bias.data(), from_prepared.data());
          qgemm_ref(x.data(), m, w, bias.data(), reference.data());
          const std::string where = "bits " + std::to_string(bits) + (per_row ? " per row" : "") + " m " +
                                    std::to_string(m) + " n " + std::to_string(n) + " k " + std::to_string(k);
          ASSERT_EQ(from_prepared, direct) << where;
          for (std::size_t i = 0; i < direct.size(); ++i)
            ASSERT_NEAR(from_prepared[i], reference[i], 1e-4 * (1.0 + std::abs(reference[i]))) << where << " at " << i;
        }
}

TEST(Qgemm, PreparingChecksTheMatrixAndTheBackend) {
  std::mt19937 rng(2);
  QuantizedMatrix w = random_matrix(4, 4, 2, rng, false);
  w.levels.pop_back();
  EXPECT_THROW(cpu_backend().prepare(w), Error);
  // Weights prepared elsewhere (here: by nobody) are refused, not misread.
  struct Foreign final : PreparedWeights {
    explicit Foreign(const QuantizedMatrix& m) : PreparedWeights(m) {}
  };
  const QuantizedMatrix good = random_matrix(4, 4, 2, rng, false);
  std::vector<float> x(4), y(4);
  EXPECT_THROW(cpu_backend().qgemm(x.data(), 1, Foreign(good), nullptr, y.data()), Error);
}

// The uniform quantizers' 16-bit tables (level = offset + scale * code, computed in double and
// rounded, as make_quantize_table does) are found to be grids; anything else is not.
TEST(Qgemm, LevelGridFindsUniformTablesOnly) {
  std::vector<float> grid(65536);
  for (std::size_t c = 0; c < grid.size(); ++c) grid[c] = float(-0.2374 + 7.25e-6 * double(c));
  const auto found = level_grid(grid.data(), grid.size());
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->origin_code, 32745);  // -0.2374 + 7.25e-6 c is nearest zero there
  EXPECT_EQ(found->origin_level, grid[32745]);
  EXPECT_NEAR(found->scale, 7.25e-6, 1e-12);
  std::vector<float> bent = grid;
  bent[40000] += 1e-6f;  // a 7th of a step off: not on the grid
  EXPECT_FALSE(level_grid(bent.data(), bent.size()).has_value());
  bent = grid;
  bent[3] = NAN;
  EXPECT_FALSE(level_grid(bent.data(), bent.size()).has_value());
  const std::vector<float> lloyd = {-1.5f, -0.4f, 0.4f, 1.5f};
  EXPECT_FALSE(level_grid(lloyd.data(), lloyd.size()).has_value());
  EXPECT_FALSE(level_grid(grid.data(), 1).has_value());
}

// A unit-variance 16-bit uniform design met by weights of sigma 0.02 without normalisation (the
// companion paper's variance mismatch): the weights take levels within 1% of zero on a grid that
// reaches +-14.3. Levels computed from the grid's end carried its rounding (2^-24 of x_max, a
// thousandth of these weights' own size) into every weight, and 4096 of them summed it: products
// 500 times further from the exact product of the table's levels than float rounding puts them.
// From the level nearest zero, every path agrees with it as closely as sgemm does.
TEST(Qgemm, GridLevelsKeepTheAccuracyOfLevelsFarSmallerThanTheGrid) {
  std::mt19937 rng(41);
  const std::size_t n = 24, k = 4096;
  std::vector<float> levels(65536);
  const double scale = 28.666 / 65535.0;
  for (std::size_t c = 0; c < levels.size(); ++c) levels[c] = float(-14.333 + scale * double(c));
  ASSERT_TRUE(level_grid(levels.data(), levels.size()).has_value());
  std::vector<std::uint32_t> codes(n * k);
  std::exponential_distribution<double> magnitude(1.0 / 0.014);  // Laplace, sigma 0.02
  for (auto& code : codes) {
    const double weight = (rng() & 1 ? 1.0 : -1.0) * magnitude(rng);
    code = std::uint32_t(std::lround((weight + 14.333) / scale));
  }
  const QuantizedMatrix w{pack_codes(codes, n, k, 16), levels};
  const auto prepared = cpu_backend().prepare(w);
  for (std::size_t m : {1u, 8u, 40u}) {
    std::vector<float> x(m * k);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto& v : x) v = std::abs(normal(rng));  // after a ReLU: no sign to cancel the error
    std::vector<float> direct(m * n), from_prepared(m * n);
    qgemm(x.data(), m, w, nullptr, direct.data());
    cpu_backend().qgemm(x.data(), m, *prepared, nullptr, from_prepared.data());
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t r = 0; r < n; ++r) {
        double exact = 0.0, size = 0.0;
        for (std::size_t c = 0; c < k; ++c) {
          const double term = double(x[i * k + c]) * double(levels[codes[r * k + c]]);
          exact += term, size += std::abs(term);
        }
        // float sums of 4096 terms in blocks: well within 2^-20 of the terms' magnitude
        EXPECT_NEAR(direct[i * n + r], exact, std::ldexp(size, -20)) << "m " << m << ", row " << r;
        EXPECT_NEAR(from_prepared[i * n + r], exact, std::ldexp(size, -20)) << "prepared, m " << m << ", row " << r;
      }
  }
}

// 8- and 16-bit codes on a grid are dequantized by scale and offset (no gather from the table): the
// products agree with the table's to rounding, on the register path (m <= 16) and the panel path.
TEST(Qgemm, GridCodesComputeTheirLevels) {
  std::mt19937 rng(29);
  for (int bits : {8, 16}) {
    QuantizedMatrix w = random_matrix(67, 301, bits, rng, false);
    const double top = double(w.levels.size() - 1);
    for (std::size_t c = 0; c < w.levels.size(); ++c) w.levels[c] = float(-0.5 + double(c) / top);
    ASSERT_TRUE(level_grid(w.levels.data(), w.levels.size()).has_value());
    const auto prepared = cpu_backend().prepare(w);  // the grid found once, not per call
    for (std::size_t m : {1u, 3u, 40u}) {
      ASSERT_NO_FATAL_FAILURE(
          expect_qgemm_matches_reference(w, m, rng, std::to_string(bits) + " bits, m " + std::to_string(m)));
      std::vector<float> x(m * 301, 0.25f), direct(m * 67), from_prepared(m * 67);
      x[m * 301 / 2] = -3.0f;
      qgemm(x.data(), m, w, nullptr, direct.data());
      cpu_backend().qgemm(x.data(), m, *prepared, nullptr, from_prepared.data());
      EXPECT_EQ(from_prepared, direct) << bits << " bits, m " << m;
    }
  }
}

// Per-channel normalisation of a uniform design gives each row its own map of one grid: prepared
// weights find every row's grid, and products of up to 16 rows of X compute the levels (the grid's
// fma, which identity inputs read back exactly) instead of gathering them; 8-bit panels and
// unprepared products keep the tables. One row off its grid, and no row's grid is taken.
TEST(Qgemm, PerRowGridsComputeTheirLevels) {
  std::mt19937 rng(31);
  for (int bits : {8, 16}) {
    const std::size_t n = bits == 8 ? 70 : 5, k = 301;
    QuantizedMatrix w = random_matrix(n, k, bits, rng, false, true);
    const std::size_t per_table = std::size_t{1} << bits;
    for (std::size_t r = 0; r < n; ++r)  // mean + sigma * level, in double, then float: make_quantize_table's way
      for (std::size_t c = 0; c < per_table; ++c)
        w.levels[r * per_table + c] = float(0.01 * double(r) - 0.3 + (0.5 + 0.01 * double(r)) *
                                                                         (-1.0 + 2.0 * double(c) / double(per_table - 1)));
    const std::vector<LevelGrid> grids = detail::grids_of(w, true);
    ASSERT_EQ(grids.size(), n);
    EXPECT_TRUE(detail::grids_of(w, false).empty());  // unprepared products do not check every row's table
    const auto prepared = cpu_backend().prepare(w);
    for (std::size_t m : {1u, 3u, 16u, 40u}) {
      ASSERT_NO_FATAL_FAILURE(
          expect_qgemm_matches_reference(w, m, rng, std::to_string(bits) + " bits per row, m " + std::to_string(m)));
      std::vector<float> x(m * k), direct(m * n), from_prepared(m * n), reference(m * n);
      for (auto& v : x) v = std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng);
      qgemm(x.data(), m, w, nullptr, direct.data());
      cpu_backend().qgemm(x.data(), m, *prepared, nullptr, from_prepared.data());
      qgemm_ref(x.data(), m, w, nullptr, reference.data());
      for (std::size_t i = 0; i < reference.size(); ++i)
        ASSERT_NEAR(from_prepared[i], reference[i], 1e-4 * (1.0 + std::abs(reference[i]))) << bits << " " << m;
      if (m > 16 && bits == 8) {
        EXPECT_EQ(from_prepared, direct) << "8-bit panels decode from the tables";
      }
    }
    // Identity rows of X read back each row's levels as the prepared product computes them.
    std::vector<float> identity(16 * k, 0.0f), y(16 * n);
    for (std::size_t i = 0; i < 16; ++i) identity[i * k + i] = 1.0f;
    cpu_backend().qgemm(identity.data(), 16, *prepared, nullptr, y.data());
    std::size_t computed = 0;
    for (std::size_t r = 0; r < n; ++r)
      for (std::size_t i = 0; i < 16; ++i) {
        const float table = w.row_levels(r)[w.codes.at(r, i)];
        const float grid = grids[r].level(w.codes.at(r, i));
        ASSERT_EQ(y[i * n + r], detail::lut_compiled() ? grid : table) << bits << " bits, row " << r << " col " << i;
        computed += grid != table;
      }
    if (detail::lut_compiled()) {
      EXPECT_GT(computed, 0u) << "the grid and the tables agree: the test cannot tell them";
    }
    w.levels[(n - 1) * per_table + per_table / 2] += 0.25f * grids[n - 1].scale;  // a quarter step off
    EXPECT_TRUE(detail::grids_of(w, true).empty());
  }
}

TEST(Qgemm, RejectsInconsistentMatrices) {
  std::mt19937 rng(1);
  QuantizedMatrix w = random_matrix(4, 4, 2, rng, false);
  std::vector<float> x(4), y(4);
  w.levels.pop_back();
  EXPECT_THROW(qgemm(x.data(), 1, w, nullptr, y.data()), Error);
  w.levels.resize(3 * 4);  // neither one table nor one per row
  EXPECT_THROW(qgemm(x.data(), 1, w, nullptr, y.data()), Error);
  EXPECT_THROW(dequantize(w), Error);
  w = random_matrix(4, 4, 2, rng, false);
  w.codes.bytes.pop_back();
  EXPECT_THROW(qgemm(x.data(), 1, w, nullptr, y.data()), Error);
}

}  // namespace
}  // namespace nuq

namespace nuq {
namespace {

// More than 2^31 weights (65537 x 32768 two-bit codes, 512 MiB packed): the rows past the 2^31st
// weight must come out right, so every index on the way is 64-bit.
TEST(Qgemm, AddressesMatricesBeyondTwoToThe31Weights) {
  const std::size_t n = 65537, k = 32768;
  ASSERT_GT(n * k, std::size_t{1} << 31);
  QuantizedMatrix w;
  w.codes = {n, k, 2, std::vector<std::uint8_t>(n * packed_row_bytes(k, 2))};
  w.levels = {-1.5f, -0.5f, 0.5f, 1.5f};
  std::uint64_t state = 88172645463325252ull;  // xorshift: fast enough for half a gigabyte
  for (std::uint8_t& byte : w.codes.bytes) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    byte = static_cast<std::uint8_t>(state);
  }
  std::vector<float> x(k);
  for (std::size_t c = 0; c < k; ++c) x[c] = float((c * 7919) % 101) / 50.0f - 1.0f;
  std::vector<float> y(n), from_prepared(n);
  qgemm(x.data(), 1, w, nullptr, y.data());
  cpu_backend().qgemm(x.data(), 1, *cpu_backend().prepare(w), nullptr, from_prepared.data());
  for (std::size_t r : {std::size_t{0}, std::size_t{65535}, n - 1}) {
    double expected = 0.0;
    for (std::size_t c = 0; c < k; ++c) expected += double(x[c]) * double(w.levels[w.codes.at(r, c)]);
    EXPECT_NEAR(y[r], expected, 1e-3 * (1.0 + std::abs(expected))) << "row " << r;
    EXPECT_EQ(from_prepared[r], y[r]) << "row " << r << ", prepared";
  }
}

}  // namespace
}  // namespace nuq
