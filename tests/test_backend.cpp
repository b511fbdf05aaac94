// The CPU backend's weight pipeline: the quantization rule in the weights' units, the fast pass
// against the reference (codes bit for bit, totals to rounding), chunked statistics against
// Welford, per-row codebook groups, non-finite weights and empty inputs; tables compared bit for bit.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <utility>

#include "backend_cases.h"
#include "nuq/backend.h"
#include "nuq/error.h"
#include "nuq/packed.h"
#include "nuq/quantize_table.h"
#include "nuq/stats.h"
#include "quantize_totals_check.h"

namespace nuq {
namespace {

using test::expect_totals_near;
using test::Law;

TEST(QuantizeRule, ComparesEachWeightWithTheExactThresholdsInItsOwnUnits) {
  // code_of(w) is the number of thresholds t with double(w) >= mean + scale * t computed in
  // double: the rounding of the float thresholds loses nothing.
  const double mean = 0.013, scale = 0.071;
  for (const auto& [name, codebook, bits] : test::codebooks_of_every_width()) {
    const QuantizeTable table = make_quantize_table(codebook, bits, {Affine{mean, scale}});
    std::vector<float> w = test::draw(Law::Laplace, 4000, mean, 3 * scale, 11);
    // Weights exactly at, just below and just above thresholds.
    for (std::size_t k = 0; k < codebook.thresholds().size(); k += 1 + codebook.thresholds().size() / 50) {
      const float at = static_cast<float>(mean + scale * codebook.thresholds()[k]);
      w.insert(w.end(), {at, std::nextafter(at, -1e9f), std::nextafter(at, 1e9f)});
    }
    for (float x : w) {
      std::uint32_t expected = 0;
      for (double t : codebook.thresholds()) expected += double(x) >= mean + scale * t;
      ASSERT_EQ(code_of(x, table.rule(0)), expected) << name << " at w = " << x;
    }
  }
}

TEST(QuantizeRule, AgreesWithTheCodebookOnNormalisedWeightsAwayFromTies) {
  const double mean = -0.2, scale = 0.5;
  const test::NamedCodebook c = test::codebooks_of_every_width()[3];
  const QuantizeTable table = make_quantize_table(c.codebook, c.storage_bits, {Affine{mean, scale}});
  std::size_t differ = 0;
  const std::vector<float> w = test::draw(Law::Gauss, 100000, mean, 2.0, 3);
  for (float x : w) differ += code_of(x, table.rule(0)) != c.codebook.index_of((double(x) - mean) / scale);
  EXPECT_LE(differ, 2u);  // only a weight within rounding of a threshold may differ
}

TEST(QuantizeRule, SaturatesNonFiniteAndHandlesAConstantGroup) {
  const Codebook codebook = lloyd_max_codebook(4);
  const QuantizeTable table = make_quantize_table(codebook, 2, {Affine{0.5, 0.0}});  // a constant tensor
  const GroupRule rule = table.rule(0);
  EXPECT_EQ(code_of(0.5f, rule), codebook.index_of(0.0));
  EXPECT_EQ(code_of(-1e30f, rule), codebook.index_of(0.0));  // everything normalises to 0
  EXPECT_EQ(code_of(INFINITY, rule), 3u);
  EXPECT_EQ(code_of(-INFINITY, rule), 0u);
  EXPECT_EQ(code_of(NAN, rule), codebook.index_of(0.0));
  EXPECT_EQ(table.group_levels(0)[code_of(0.5f, rule)], 0.5f);  // stored exactly
  EXPECT_THROW(make_quantize_table(codebook, 2, {Affine{0.0, -1.0}}), Error);
  EXPECT_THROW(make_quantize_table(codebook, 1, {Affine{}}), Error);  // 4 levels do not fit 1 bit
}

// Fast pass vs reference: every width and search path, ragged shapes, per-row groups.
TEST(QuantizeFast, CodesBitIdenticalToTheReferenceAndTotalsToRounding) {
  const std::vector<std::pair<std::size_t, std::size_t>> shapes = {
      {0, 5}, {1, 1}, {1, 31}, {1, 32}, {1, 33}, {3, 17}, {7, 100}, {64, 784}, {1, (1u << 20) + 7}, {2, 40000}};
  for (const auto& [name, codebook, bits] : test::codebooks_of_every_width()) {
    for (const auto& [rows, cols] : shapes) {
      for (bool per_row : {false, true}) {
        const std::size_t count = rows * cols;
        const std::vector<float> w = test::draw(Law::Laplace, count, 0.01, 0.05, std::uint32_t(rows * 31 + cols));
        std::vector<Affine> groups(per_row ? std::max<std::size_t>(rows, 1) : 1, Affine{0.01, 0.05});
        for (std::size_t g = 0; g < groups.size(); ++g) groups[g].scale *= 1.0 + 0.1 * double(g % 5);
        if (per_row && rows == 0) continue;
        const QuantizeTable table = make_quantize_table(codebook, bits, groups);
        const std::size_t bytes = rows * packed_row_bytes(cols, bits);
        std::vector<std::uint8_t> ref(bytes, 0xAB), fast(bytes, 0xCD);
        const QuantizeTotals a = quantize_ref(w.data(), rows, cols, table, ref.data());
        const QuantizeTotals b = quantize_fast(w.data(), rows, cols, table, fast.data());
        const std::string what = name + " " + std::to_string(rows) + "x" + std::to_string(cols) +
                                 (per_row ? " per-row" : "");
        ASSERT_EQ(fast, ref) << what;
        expect_totals_near(b, a, what);
        if (count > 0) {
          EXPECT_GT(a.noise, 0.0) << what;
        }
      }
    }
  }
}

// The SIMD paths' float block sums hold for ordinary weights only: blocks whose squares underflow
// (weights under 1e-19), overflow (over 1e19), vanish (all zero, or every weight on a level) or
// mix magnitudes must still give the reference's totals.
TEST(QuantizeFast, BlocksOfEveryMagnitudeGiveTheReferencesTotals) {
  const std::size_t rows = 4, cols = 3 * 1024 + 48;  // three whole blocks a row and a part
  const std::vector<float> unit = test::draw(Law::Laplace, rows * cols, 0.0, 1.0, 41);
  for (const auto& [name, codebook, bits] : test::codebooks_of_every_width()) {
    for (double scale : {1e-36, 1e-30, 1e-22, 1e-12, 1.0, 1e12, 1e22, 1e30}) {
      const QuantizeTable table = make_quantize_table(codebook, bits, {Affine{0.0, scale}});
      std::vector<float> w(unit.size());
      for (std::size_t i = 0; i < w.size(); ++i) w[i] = float(double(unit[i]) * scale);
      std::fill(w.begin() + 1024, w.begin() + 2048, 0.0f);  // row 0's second block: zeros
      for (std::size_t c = 0; c < 1024; ++c)                // row 1's first: every weight on a level
        w[cols + c] = table.group_levels(0)[c % table.levels_count];
      w[2 * cols + 5] = float(1e-30 * scale);  // row 2: one weight far below the others
      w[3 * cols + 9] = float(std::min(1e30 * scale, 1e38));  // row 3: one far above
      for (std::size_t r = 0; r < rows; ++r) {  // each row's totals on their own
        std::vector<std::uint8_t> ref(packed_row_bytes(cols, bits), 0xAB), fast(ref.size(), 0xCD);
        const QuantizeTotals a = quantize_ref(w.data() + r * cols, 1, cols, table, ref.data());
        const QuantizeTotals b = quantize_fast(w.data() + r * cols, 1, cols, table, fast.data());
        char what[96];
        std::snprintf(what, sizeof what, "%s at scale %g, row %zu", name.c_str(), scale, r);
        ASSERT_EQ(fast, ref) << what;
        expect_totals_near(b, a, what);
        EXPECT_GT(a.signal, 0.0) << what;
      }
    }
  }
}

// A group per row of 16-1008 weights (groups of 128: --group-size): rows share blocks of float
// sums, so a block of tiny rows, a row holding NaN, and rows whose largest error beats the others'
// must each still give the reference's codes and totals.
TEST(QuantizeFast, ShortRowsOfTheirOwnGroupsGiveTheReferencesTotals) {
  // Row scales, a run of 16 rows each, repeating: mixed; all tiny (every block summed again).
  const std::vector<std::vector<double>> cycles = {{1.0, 1e-30, 1e-12, 3.0}, {1e-30, 2e-30}};
  for (const auto& [name, codebook, bits] : test::codebooks_of_every_width()) {
    for (const std::vector<double>& scales : cycles)
    for (std::size_t cols : {16, 128, 512, 1008}) {
      const std::size_t rows = 96;
      const std::vector<float> unit = test::draw(Law::Laplace, rows * cols, 0.0, 1.0, std::uint32_t(cols));
      std::vector<Affine> groups(rows);
      std::vector<float> w(rows * cols);
      for (std::size_t r = 0; r < rows; ++r) {
        const double scale = scales[r / 16 % scales.size()] * (1.0 + 0.01 * double(r));
        groups[r] = Affine{0.0, scale};
        for (std::size_t c = 0; c < cols; ++c) w[r * cols + c] = float(double(unit[r * cols + c]) * scale);
      }
      w[40 * cols + 3] = NAN;
      w[70 * cols + 1] *= 50.0f;  // the largest error, late
      const QuantizeTable table = make_quantize_table(codebook, bits, groups);
      std::vector<std::uint8_t> ref(rows * packed_row_bytes(cols, bits), 0xAB), fast(ref.size(), 0xCD);
      const QuantizeTotals a = quantize_ref(w.data(), rows, cols, table, ref.data());
      const QuantizeTotals b = quantize_fast(w.data(), rows, cols, table, fast.data());
      const std::string what = name + " in rows of " + std::to_string(cols) + (scales.size() == 2 ? ", all tiny" : "");
      ASSERT_EQ(fast, ref) << what;
      expect_totals_near(b, a, what);
      EXPECT_EQ(a.nonfinite, 1u) << what;
    }
  }
}

// Rows without columns, a table each (a [rows, 0] tensor per channel): nothing to quantize, on
// every path (the short rows' path once divided by the column count).
TEST(QuantizeFast, RowsWithoutColumnsGiveNoCodesAndNoTotals) {
  for (const auto& [name, codebook, bits] : test::codebooks_of_every_width()) {
    const std::size_t rows = 5;
    const QuantizeTable table = make_quantize_table(codebook, bits, std::vector<Affine>(rows, Affine{0.0, 1.0}));
    const float none = 0.0f;
    std::uint8_t untouched = 0xAB;
    const QuantizeTotals t = quantize_fast(&none, rows, 0, table, &untouched);
    EXPECT_EQ(t.signal, 0.0) << name;
    EXPECT_EQ(t.noise, 0.0) << name;
    EXPECT_EQ(t.inside, 0u) << name;
    EXPECT_EQ(t.nonfinite, 0u) << name;
    EXPECT_EQ(untouched, 0xAB) << name;
  }
}

TEST(QuantizeFast, NonFiniteWeightsSaturateAndAreCountedOnEveryPath) {
  for (const auto& [name, codebook, bits] : test::codebooks_of_every_width()) {
    std::vector<float> w = test::draw(Law::Gauss, 3 * 50, 0.0, 1.0, 5);
    w[7] = NAN;
    w[40] = INFINITY;
    w[41] = -INFINITY;
    w[149] = NAN;
    const QuantizeTable table = make_quantize_table(codebook, bits, {Affine{0.0, 1.0}});
    std::vector<std::uint8_t> ref(3 * packed_row_bytes(50, bits)), fast(ref.size());
    const QuantizeTotals a = quantize_ref(w.data(), 3, 50, table, ref.data());
    const QuantizeTotals b = quantize_fast(w.data(), 3, 50, table, fast.data());
    EXPECT_EQ(fast, ref) << name;
    EXPECT_EQ(a.nonfinite, 4u) << name;
    EXPECT_EQ(a.first_nonfinite, 7u) << name;
    expect_totals_near(b, a, name);
    EXPECT_TRUE(std::isfinite(a.signal) && std::isfinite(a.noise)) << name;
  }
}

TEST(QuantizeFast, DequantizedCodesAreTheGroupsLevels) {
  const test::NamedCodebook c = test::codebooks_of_every_width()[1];
  const std::size_t rows = 5, cols = 77;
  std::vector<Affine> groups;
  for (std::size_t r = 0; r < rows; ++r) groups.push_back({0.1 * double(r), 1.0 + double(r)});
  const QuantizeTable table = make_quantize_table(c.codebook, c.storage_bits, groups);
  const std::vector<float> w = test::draw(Law::Uniform, rows * cols, 0.0, 2.0, 9);
  std::vector<std::uint8_t> packed(rows * packed_row_bytes(cols, c.storage_bits));
  quantize_fast(w.data(), rows, cols, table, packed.data());
  std::vector<float> back(rows * cols);
  cpu_backend().dequantize(packed.data(), rows, cols, table, back.data());
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t col = 0; col < cols; ++col) {
      const float x = w[r * cols + col];
      const double normalised = (double(x) - groups[r].mean) / groups[r].scale;
      EXPECT_FLOAT_EQ(back[r * cols + col], float(groups[r].mean + groups[r].scale * c.codebook.quantize(normalised)));
    }
}

// same_bits decides whether a CUDA backend reuses the table it keeps on the device: every field
// that changes a code, a total or a value must count, and equal values of other bits must differ.
TEST(QuantizeTables, SameBitsSeesEveryFieldAndEveryBit) {
  const Codebook codebook = test::random_codebook(4, 2, 11);
  const QuantizeTable a = make_quantize_table(codebook, 2, {Affine{0.25, 2.0}});
  EXPECT_TRUE(same_bits(a, a));
  EXPECT_TRUE(same_bits(a, QuantizeTable(a)));
  const std::vector<std::pair<std::string, std::function<void(QuantizeTable&)>>> changes = {
      {"bits", [](QuantizeTable& t) { t.bits = 4; }},
      {"levels_count", [](QuantizeTable& t) { t.levels_count = 3; }},
      {"groups", [](QuantizeTable& t) { t.groups = 2; }},
      {"a threshold", [](QuantizeTable& t) { t.thresholds[2] = std::nextafter(t.thresholds[2], 1e9f); }},
      {"a level", [](QuantizeTable& t) { t.levels[3] = std::nextafter(t.levels[3], -1e9f); }},
      {"inside_lo", [](QuantizeTable& t) { t.params[0].inside_lo *= 0.5f; }},
      {"inside_hi", [](QuantizeTable& t) { t.params[0].inside_hi *= 0.5f; }},
      {"nan_code", [](QuantizeTable& t) { t.params[0].nan_code ^= 1; }},
      {"grid_origin", [](QuantizeTable& t) { t.params[0].grid_origin += 1.0f; }},
      {"grid_inv_step", [](QuantizeTable& t) { t.params[0].grid_inv_step += 1.0f; }},
      {"one more threshold", [](QuantizeTable& t) { t.thresholds.push_back(9.0f); }},
  };
  for (const auto& [what, change] : changes) {
    QuantizeTable b = a;
    change(b);
    EXPECT_FALSE(same_bits(a, b)) << what;
    EXPECT_FALSE(same_bits(b, a)) << what;
  }
  QuantizeTable zero = a, negative_zero = a;
  zero.levels[0] = 0.0f;
  negative_zero.levels[0] = -0.0f;
  EXPECT_FALSE(same_bits(zero, negative_zero));  // equal as numbers, not as bits
  QuantizeTable nan = a;
  nan.levels[0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(same_bits(nan, QuantizeTable(nan)));  // a NaN matches its own bits
}

TEST(WeightStatsFast, ChunkedStatisticsMatchWelford) {
  for (Law law : {Law::Laplace, Law::Gauss, Law::Uniform})
    for (std::size_t count : {std::size_t{1}, std::size_t{31}, std::size_t{4097}, (std::size_t{1} << 20) + 7}) {
      const std::vector<float> w = test::draw(law, count, 1000.0, 0.5, std::uint32_t(count));  // large mean: cancellation
      const WeightStats ref = stats_ref(w.data(), count, "w");
      const WeightStats fast = cpu_backend().stats(w.data(), count, "w", NonFinite::Reject);
      const std::string what = test::to_string(law) + " " + std::to_string(count);
      EXPECT_EQ(fast.count, ref.count) << what;
      EXPECT_NEAR(fast.mean, ref.mean, 1e-12 * std::abs(ref.mean)) << what;
      EXPECT_NEAR(fast.variance(), ref.variance(), 1e-9 * ref.variance() + 1e-300) << what;
      EXPECT_EQ(fast.min, ref.min) << what;
      EXPECT_EQ(fast.max, ref.max) << what;
    }
}

TEST(WeightStatsFast, NonFiniteIsAnErrorNamingTheFirstIndexOrIsSkipped) {
  std::vector<float> w = test::draw(Law::Gauss, 300000, 0.0, 1.0, 1);
  w[123457] = NAN;
  w[250000] = INFINITY;
  try {
    cpu_backend().stats(w.data(), w.size(), "layer.weight", NonFinite::Reject);
    FAIL() << "NaN accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer.weight: element 123457 is nan"), std::string::npos) << e.what();
  }
  const WeightStats s = cpu_backend().stats(w.data(), w.size(), "w", NonFinite::Skip);
  EXPECT_EQ(s.count, w.size() - 2);
  EXPECT_EQ(s.nonfinite, 2u);
  const WeightStats ref = stats_ref(w.data(), w.size(), "w", NonFinite::Skip);
  EXPECT_NEAR(s.mean, ref.mean, 1e-12);
  EXPECT_EQ(cpu_backend().stats(w.data(), 0, "none", NonFinite::Reject).count, 0u);
}

// A backend that only has the base class's row_stats (a call per row), around the CPU's stats.
class RowByRow final : public Backend {
 public:
  std::string name() const override { return "row by row"; }
  WeightStats stats(const float* v, std::size_t n, const std::string& name, NonFinite nf) override {
    return cpu_backend().stats(v, n, name, nf);
  }
  bool reads(WeightType) const override { return true; }
  WeightStats stats_as(const void* v, WeightType t, std::size_t n, const std::string& name, NonFinite nf) override {
    return cpu_backend().stats_as(v, t, n, name, nf);
  }
  QuantizeTotals quantize(const float*, std::size_t, std::size_t, const QuantizeTable&, std::uint8_t*) override { return {}; }
  void dequantize(const std::uint8_t*, std::size_t, std::size_t, const QuantizeTable&, float*) override {}
  void qgemm(const float*, std::size_t, const QuantizedMatrix&, const float*, float*) override {}
  std::unique_ptr<PreparedWeights> prepare(const QuantizedMatrix&) override { return nullptr; }
  void qgemm(const float*, std::size_t, const PreparedWeights&, const float*, float*) override {}
  void gemm(const float*, std::size_t, const float*, std::size_t, std::size_t, const float*, float*) override {}
};

void expect_same_bits(const WeightStats& a, const WeightStats& b, const std::string& what) {
  EXPECT_EQ(a.count, b.count) << what;
  EXPECT_EQ(a.nonfinite, b.nonfinite) << what;
  EXPECT_EQ(std::memcmp(&a.mean, &b.mean, sizeof(double)), 0) << what << ": " << a.mean << " vs " << b.mean;
  EXPECT_EQ(std::memcmp(&a.m2, &b.m2, sizeof(double)), 0) << what << ": " << a.m2 << " vs " << b.m2;
  EXPECT_EQ(a.min, b.min) << what;
  EXPECT_EQ(a.max, b.max) << what;
}

TEST(WeightStatsFast, RowStatisticsAreEachRowsOwnBitForBit) {
  // Groups of 128, rows of one chunk and of several, rows long enough to be spread over the cores
  // themselves; F32 and BF16 as they lie. Each row's statistics equal a call on that row alone,
  // from the CPU's batch and from the base class's call per row.
  RowByRow row_by_row;
  for (const auto& [rows, cols] : std::vector<std::pair<std::size_t, std::size_t>>{
           {1, 100}, {333, 128}, {17, 4096}, {9, 5000}, {3, 16 * 4096 + 5}}) {
    const std::vector<float> w = test::draw(Law::Laplace, rows * cols, 0.25, 0.5, std::uint32_t(rows + cols));
    std::vector<std::uint16_t> bf16(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) {
      std::uint32_t bits;
      std::memcpy(&bits, &w[i], 4);
      bf16[i] = std::uint16_t(bits >> 16);
    }
    for (const auto& [values, type] : {std::pair<const void*, WeightType>{w.data(), WeightType::F32},
                                       std::pair<const void*, WeightType>{bf16.data(), WeightType::BF16}}) {
      std::vector<WeightStats> batch(rows), base(rows);
      cpu_backend().row_stats(values, type, rows, cols, "w", NonFinite::Reject, batch.data());
      row_by_row.row_stats(values, type, rows, cols, "w", NonFinite::Reject, base.data());
      const auto* bytes = static_cast<const std::uint8_t*>(values);
      for (std::size_t r = 0; r < rows; ++r) {
        const std::string what = std::to_string(rows) + "x" + std::to_string(cols) + " row " + std::to_string(r) +
                                 (type == WeightType::F32 ? " F32" : " BF16");
        const WeightStats alone = cpu_backend().stats_as(bytes + r * cols * element_bytes(type), type, cols, "w",
                                                         NonFinite::Reject);
        expect_same_bits(batch[r], alone, what);
        expect_same_bits(base[r], alone, what + " (base class)");
      }
    }
  }
}

TEST(WeightStatsFast, RowStatisticsNameTheFirstRowThatFails) {
  std::vector<float> w = test::draw(Law::Gauss, 64 * 128, 0.0, 1.0, 5);
  w[40 * 128 + 7] = NAN;
  w[50 * 128] = INFINITY;
  std::vector<WeightStats> out(64);
  for (Backend* backend : {&cpu_backend(), static_cast<Backend*>(nullptr)}) {
    RowByRow row_by_row;
    Backend& b = backend ? *backend : row_by_row;
    try {
      b.row_stats(w.data(), WeightType::F32, 64, 128, "layer.weight", NonFinite::Reject, out.data());
      FAIL() << "NaN accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("layer.weight row 40: element 7 is nan"), std::string::npos) << e.what();
    }
    b.row_stats(w.data(), WeightType::F32, 64, 128, "w", NonFinite::Skip, out.data());
    EXPECT_EQ(out[40].nonfinite, 1u);
    EXPECT_EQ(out[50].nonfinite, 1u);
    EXPECT_EQ(out[41].count, 128u);
  }
}

TEST(QuantizeTable, ThresholdsAreTheNearestFloatsOnTheirSide) {
  // Each threshold is the smallest float >= mean + scale * t (computed in double), and the support
  // bounds the nearest floats inside [mean - scale * xmax, mean + scale * xmax]: checked against
  // std::nextafter on maps of every size, sign and scale, zero means included.
  const test::NamedCodebook c = test::codebooks_of_every_width()[3];
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> exponent(-40.0, 40.0), mantissa(-1.0, 1.0);
  // Zero means and tiny scales cross +-0 and the denormals; huge ones reach FLT_MAX and beyond.
  std::vector<Affine> maps = {{0.0, 1.0},     {-0.0, 1e-30},  {1e30, 1e30},    {-3.0, 1e-7},  {0.0, 1e-50},
                              {1e-45, 1e-46}, {-1e-45, 1e-46}, {3.4e38, 1e36}, {-3.4e38, 1e36}, {1e-40, 1e-41}};
  for (int i = 0; i < 2000; ++i)
    maps.push_back({i % 5 == 0 ? 0.0 : mantissa(rng) * std::pow(2.0, exponent(rng)),
                    std::abs(mantissa(rng)) * std::pow(2.0, exponent(rng))});
  const QuantizeTable table = make_quantize_table(c.codebook, c.storage_bits, maps);
  const std::vector<double>& t = c.codebook.thresholds();
  const auto smallest_at_or_above = [](double x) {
    float f = static_cast<float>(x);
    if (double(f) < x) f = std::nextafter(f, std::numeric_limits<float>::infinity());
    return f;
  };
  const auto largest_at_or_below = [](double x) {
    float f = static_cast<float>(x);
    if (double(f) > x) f = std::nextafter(f, -std::numeric_limits<float>::infinity());
    return f;
  };
  for (std::size_t g = 0; g < maps.size(); ++g) {
    const Affine& a = maps[g];
    for (std::size_t k = 0; k < t.size(); ++k)
      ASSERT_EQ(table.thresholds[g * t.size() + k], smallest_at_or_above(a.mean + a.scale * t[k]))
          << "map " << g << " (" << a.mean << ", " << a.scale << ") threshold " << k;
    const double reach = a.scale * c.codebook.xmax();
    ASSERT_EQ(table.params[g].inside_lo, smallest_at_or_above(a.mean - reach)) << "map " << g;
    ASSERT_EQ(table.params[g].inside_hi, largest_at_or_below(a.mean + reach)) << "map " << g;
  }
}

TEST(Backend, DeviceNamesParse) {
  EXPECT_EQ(parse_device("cpu"), Device::Cpu);
  EXPECT_EQ(parse_device("cuda"), Device::Cuda);
  EXPECT_EQ(parse_device("auto"), Device::Auto);
  EXPECT_THROW(parse_device("gpu"), Error);
  EXPECT_EQ(cpu_backend().name(), "cpu");
}

TEST(Backend, GemmIsTheFp32ProductPlusBias) {
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (auto [m, rows, cols] : std::vector<std::array<std::size_t, 3>>{{1, 10, 512}, {3, 97, 131}, {64, 33, 7}}) {
    std::vector<float> x(m * cols), w(rows * cols), bias(rows), y(m * rows, NAN);
    for (auto* v : {&x, &w, &bias})
      for (float& e : *v) e = value(rng);
    cpu_backend().gemm(x.data(), m, w.data(), rows, cols, bias.data(), y.data());
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t r = 0; r < rows; ++r) {
        double expected = bias[r];
        for (std::size_t c = 0; c < cols; ++c) expected += double(x[i * cols + c]) * double(w[r * cols + c]);
        ASSERT_NEAR(y[i * rows + r], expected, 1e-5 * std::sqrt(double(cols))) << m << "x" << rows << "x" << cols;
      }
  }
  std::vector<float> untouched(4, 7.0f);
  cpu_backend().gemm(nullptr, 0, nullptr, 4, 3, nullptr, untouched.data());  // an empty batch writes nothing
  EXPECT_EQ(untouched, std::vector<float>(4, 7.0f));
}

}  // namespace
}  // namespace nuq
