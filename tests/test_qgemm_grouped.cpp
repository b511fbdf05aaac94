// Grouped tensors' products on the CPU (qgemm_grouped): each run of G weights along a row has its
// own scale, and every weight is group_level(mean, its scale, the normalised level of its code).
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <tuple>

#include "nuq/error.h"
#include "nuq/grouped.h"
#include "nuq/ptq.h"
#include "nuq/quantized_file.h"
#include "qgemm_cases.h"

#include "../host/qgemm_lut.h"

namespace nuq {
namespace {

// An [n, k] tensor in groups of `group` at `bits` bits: random codes, scales in [0.01, 3] and
// normalised levels in [-2, 2].
QuantizedTensor random_grouped(std::size_t n, std::size_t k, std::size_t group, int bits, double mean,
                               std::mt19937& rng) {
  std::uniform_real_distribution<float> level(-2.0f, 2.0f), scale(0.01f, 3.0f);
  QuantizedTensor t;
  t.shape = {std::int64_t(n), std::int64_t(k)};
  t.group_size = group;
  t.mean = mean;
  t.matrix = test::random_matrix(n * k / group, group, bits, rng, false);
  t.matrix.levels.clear();
  for (std::size_t g = 0; g < n * k / group; ++g) t.scales.push_back(scale(rng));
  for (std::size_t c = 0; c < (std::size_t{1} << bits); ++c) t.normalised_levels.push_back(level(rng));
  return t;
}

// Weight (r, c) of a grouped tensor, as every reader computes it.
float weight(const QuantizedTensor& t, std::size_t r, std::size_t c) {
  const std::size_t k = std::size_t(t.shape[1]), g = (r * k + c) / t.group_size;
  return group_level(t.mean, t.scales[g], t.normalised_levels[t.matrix.codes.at(g, (r * k + c) % t.group_size)]);
}

// y against x * W^T + bias summed in double from the restored weights: within FP32 rounding of the
// sum of |x * w| (what any order of float sums can be off by), and non-finite exactly where the
// reference is, with the same sign.
void expect_product(const QuantizedTensor& t, const std::vector<float>& x, std::size_t m,
                    const std::vector<float>& bias, const std::vector<float>& y, const std::string& where) {
  const std::size_t n = std::size_t(t.shape[0]), k = std::size_t(t.shape[1]);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t r = 0; r < n; ++r) {
      double sum = bias[r], magnitude = std::abs(bias[r]);
      for (std::size_t c = 0; c < k; ++c) {
        sum += double(x[i * k + c]) * double(weight(t, r, c));
        magnitude += std::abs(double(x[i * k + c]) * double(weight(t, r, c)));
      }
      const float got = y[i * n + r];
      if (!std::isfinite(sum)) {
        ASSERT_EQ(std::isnan(got), std::isnan(sum)) << where << ", row " << i << ", output " << r << ": " << got;
        if (!std::isnan(sum)) {
          ASSERT_EQ(got, float(sum)) << where << ", row " << i << ", output " << r;
        }
        continue;
      }
      ASSERT_NEAR(got, sum, 1e-6 * magnitude + 1e-30) << where << ", row " << i << ", output " << r;
    }
}

// Every weight is group_level's exactly when restored (decoded sixteen at a time or one by one:
// groups of 8 have no run of sixteen, of 24 one and a tail), and every path of the product reads
// them back from one-hot rows of X. The paths that decode weights (m <= 16 row by row for groups
// that are not runs of sixteen, panels above) read them exactly. Those that take a weight apart,
// mean + scale * level in float (the look-up at 1-4 bits and m <= lut_max_batch; groups of runs of
// sixteen at m <= 16), are within two roundings of the level's parts.
TEST(QgemmGrouped, DecodesEveryGroupAsGroupLevelAndMultipliesOnEveryPath) {
  std::mt19937 rng(37);
  for (int bits : {1, 2, 4, 8})
    for (std::size_t group : {8u, 24u, 128u}) {
      const std::size_t n = 5, k = 3 * group;
      // 0.37 is not a float: a decoder must round the sum in double, then to float.
      const QuantizedTensor t = random_grouped(n, k, group, bits, 0.37, rng);
      const std::string where = std::to_string(bits) + " bits, groups of " + std::to_string(group);
      const std::vector<float> restored = dequantize(t);
      for (std::size_t i = 0; i < n * k; ++i) ASSERT_EQ(restored[i], weight(t, i / k, i % k)) << where << " at " << i;
      std::vector<float> identity(k * k, 0.0f);
      for (std::size_t i = 0; i < k; ++i) identity[i * k + i] = 1.0f;
      const std::size_t group_bytes = packed_row_bytes(group, bits);
      for (std::size_t m : {std::size_t{1}, std::size_t{16}, k}) {  // a column, the first 16, every one
        std::vector<float> y(m * n);
        qgemm_grouped(identity.data(), m, t, nullptr, y.data());
        const bool looked_up =
            detail::lut_compiled() && bits <= 4 && group_bytes % 4 == 0 && m <= detail::lut_max_batch(bits);
        const bool taken_apart = looked_up || (m <= 16 && group % 16 == 0);
        for (std::size_t i = 0; i < m; ++i)
          for (std::size_t r = 0; r < n; ++r) {
            const float expected = weight(t, r, i);
            if (!taken_apart) {
              ASSERT_EQ(y[i * n + r], expected) << where << ", m " << m;
              continue;
            }
            const std::size_t g = (r * k + i) / group;
            const double part = double(t.scales[g]) * t.normalised_levels[t.matrix.codes.at(g, (r * k + i) % group)];
            ASSERT_NEAR(y[i * n + r], expected, 2 * FLT_EPSILON * (std::abs(t.mean) + std::abs(part)))
                << where << ", m " << m << " (mean + scale * level)";
          }
      }
      std::uniform_real_distribution<float> value(-1.0f, 1.0f);
      for (std::size_t m : {std::size_t{3}, std::size_t{40}}) {
        std::vector<float> x(m * k), bias(n), y(m * n);
        for (auto& v : x) v = value(rng);
        for (auto& v : bias) v = value(rng);
        qgemm_grouped(x.data(), m, t, bias.data(), y.data());
        expect_product(t, x, m, bias, y, where + ", m " + std::to_string(m));
      }
    }
}

// The look-up takes 1-, 2- and 4-bit groups of whole 32-bit words up to lut_max_batch rows of
// finite X, and multiplies them right wherever a group's words fall: several groups in a 64-byte
// group of words, groups across one (40 bytes) and across a chunk of two (100 bytes at 4 bits),
// groups of two whole 64-byte groups, rows ending before a 64-byte group does, row counts past a
// block of 16, slices of eight rows of X, and both sides of the threading threshold. The rest
// (groups of 6 bytes, 8 bits, more rows, an infinite x) it leaves to the decoding paths, as it
// leaves everything in a build without AVX-512 (the sanitizer build). A tensor prepared once
// (PreparedGrouped: its words laid out in the order the look-up reads them) gives the same
// products bit for bit.
TEST(QgemmGrouped, LookUpTakesGroupsOfWholeWordsWhereverTheyFall) {
  std::mt19937 rng(41);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  struct Case {
    int bits;
    std::size_t group, n, groups_per_row;
    bool taken;
  };
  for (const Case& c : {Case{2, 16, 37, 3, true}, Case{2, 128, 20, 5, true}, Case{2, 160, 17, 3, true},
                        Case{1, 1024, 5, 2, true}, Case{1, 96, 33, 1, true}, Case{4, 8, 9, 7, true},
                        Case{4, 200, 3, 3, true}, Case{2, 128, 300, 8, true}, Case{2, 24, 6, 4, false},
                        Case{8, 16, 6, 4, false}})
    for (double mean : {0.0, -0.21})
      for (std::size_t m : {std::size_t{1}, std::size_t{3}, std::size_t{8}, std::size_t{9}, std::size_t{17}}) {
        const std::size_t k = c.group * c.groups_per_row;
        const QuantizedTensor t = random_grouped(c.n, k, c.group, c.bits, mean, rng);
        std::vector<float> x(m * k), bias(c.n), y(m * c.n, -7.0f);
        for (auto& v : x) v = value(rng);
        for (auto& v : bias) v = value(rng);
        const std::string where = std::to_string(c.bits) + " bits, groups of " + std::to_string(c.group) + ", " +
                                  std::to_string(c.n) + " x " + std::to_string(k) + ", mean " +
                                  std::to_string(mean) + ", m " + std::to_string(m);
        const bool taken = detail::lut_compiled() && c.taken && m <= detail::lut_max_batch(c.bits);
        ASSERT_EQ(detail::qgemm_lut_grouped(x.data(), m, c.n, k, t, nullptr, bias.data(), y.data()), taken) << where;
        ASSERT_EQ(cpu_layout_used(t, m), taken) << where;
        if (taken)
          expect_product(t, x, m, bias, y, where + " (look-up)");
        else
          ASSERT_TRUE(std::all_of(y.begin(), y.end(), [](float v) { return v == -7.0f; })) << where;
        std::vector<float> public_y(m * c.n);
        qgemm_grouped(x.data(), m, t, bias.data(), public_y.data());
        expect_product(t, x, m, bias, public_y, where);
        // Laid out once, the same words in the same order: the same product, bit for bit.
        const PreparedGrouped prepared(t);
        ASSERT_EQ(&prepared.tensor(), &t);
        ASSERT_EQ(prepared.layout_bytes() > 0, detail::lut_compiled() && c.taken) << where;
        if (prepared.layout_bytes()) {
          ASSERT_GE(prepared.layout_bytes(), t.matrix.codes.bytes.size()) << where;
        }
        std::vector<float> prepared_y(m * c.n, NAN);
        qgemm_grouped(x.data(), m, prepared, bias.data(), prepared_y.data());
        ASSERT_EQ(prepared_y, public_y) << where << " (prepared)";
        if (!taken || m != 1) continue;
        // One infinite x: the look-up would meet it twice (in the mean's part and the levels') and
        // could give inf - inf; the decoders give what the restored weights give.
        x[k / 2] = -std::numeric_limits<float>::infinity();
        ASSERT_FALSE(detail::qgemm_lut_grouped(x.data(), m, c.n, k, t, nullptr, bias.data(), y.data())) << where;
        qgemm_grouped(x.data(), m, t, bias.data(), public_y.data());
        expect_product(t, x, m, bias, public_y, where + ", an infinite x");
        qgemm_grouped(x.data(), m, prepared, bias.data(), prepared_y.data());
        ASSERT_TRUE(std::equal(prepared_y.begin(), prepared_y.end(), public_y.begin(),
                               [](float a, float b) { return a == b || (std::isnan(a) && std::isnan(b)); }))
            << where << ", an infinite x (prepared)";
      }
  // A tensor that does not hold together is refused when it is prepared, not when it is used.
  QuantizedTensor broken = random_grouped(4, 64, 32, 2, 0.0, rng);
  broken.scales.pop_back();
  EXPECT_THROW(PreparedGrouped{broken}, Error);
}

// Up to 16 rows of X, groups that are whole runs of sixteen codes meet X in registers, each run's
// normalised levels times its group's scale: at every width, from a register (1-4 bits), gathered
// (8 bits) or computed on a uniform grid (8 bits whose levels are one), for groups of one, two,
// three and eight runs (so that one row of X takes four accumulators and a remainder), with
// slices of eight rows of X and both sides of the threading threshold.
TEST(QgemmGrouped, GroupsOfWholeRunsOfSixteenMatchTheRestoredWeights) {
  std::mt19937 rng(43);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (int bits : {1, 2, 4, 8})
    for (bool grid : {false, true})
      for (std::size_t group : {16u, 32u, 48u, 128u})
        for (std::size_t n : {std::size_t{7}, std::size_t{2100}}) {
          if (grid && bits != 8) continue;
          const std::size_t k = 2 * group;
          QuantizedTensor t = random_grouped(n, k, group, bits, 0.05, rng);
          if (grid)  // -1.275, -1.265, ..., 1.275: on a grid of 0.01, as level_grid finds it
            for (std::size_t c = 0; c < 256; ++c) t.normalised_levels[c] = 0.01f * (float(c) - 127.5f);
          for (std::size_t m : {std::size_t{1}, std::size_t{2}, std::size_t{5}, std::size_t{9}, std::size_t{16}}) {
            std::vector<float> x(m * k), bias(n), y(m * n);
            for (auto& v : x) v = value(rng);
            for (auto& v : bias) v = value(rng);
            qgemm_grouped(x.data(), m, t, bias.data(), y.data());
            expect_product(t, x, m, bias, y,
                           std::to_string(bits) + " bits" + (grid ? " on a grid" : "") + ", groups of " +
                               std::to_string(group) + ", " + std::to_string(n) + " rows, m " + std::to_string(m));
          }
        }
}

}  // namespace
}  // namespace nuq
