// The CPU statistics, quantization pass and fourth moment on random cases of every kind against
// their plain references: shapes around the SIMD paths' blocks (rows of 16-1008 sharing blocks, one block of
// 1,024, two, odd tails), F32/BF16/F16 weights read unaligned, one table or a table per row, every
// codebook width and codebooks with fewer levels than their width holds, and weights chosen to be
// hard: on thresholds and one float either side, on levels, zeros of both signs, subnormals, any
// exponent, runs too small for float squares, huge weights, NaN and ±inf. Codes must be identical
// byte for byte, counts and the largest error exact, sums within the float blocks' rounding; the
// statistics as Welford's, the stored types' bit for bit those of their floats, each row's as its own.
// (A differential fuzzer of the same cases ran 381,047 of them on AVX-512 and 156,794 on AVX2
// without a difference, 2026-12-04; this keeps a fixed sample of them in every build.)
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend_cases.h"
#include "nuq/error.h"
#include "nuq/io/widen.h"
#include "nuq/packed.h"
#include "nuq/quantize_table.h"
#include "nuq/stats.h"
#include "quantize_totals_check.h"

namespace nuq {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

class Draw {
 public:
  explicit Draw(std::uint64_t seed) : rng_(seed) {}
  double uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }
  std::size_t below(std::size_t n) { return std::size_t(rng_() % n); }
  double sign() { return rng_() & 1 ? 1.0 : -1.0; }
  double exponential() { return std::exponential_distribution<double>(1.0)(rng_); }

 private:
  std::mt19937_64 rng_;
};

// BF16 and F16 encodings by truncation (the tests need representable values, not rounding), read
// back through the library's widening, which the reference then sees as floats.
std::uint16_t bf16_bits(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, 4);
  return std::uint16_t(b >> 16);
}

std::uint16_t f16_bits(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, 4);
  const std::uint16_t sign = std::uint16_t((b >> 16) & 0x8000u);
  const int exponent = int((b >> 23) & 0xffu) - 127 + 15;
  const std::uint32_t mantissa = b & 0x7fffffu;
  if (std::isnan(f)) return sign | 0x7e00u;
  if (exponent >= 31) return sign | 0x7c00u;  // beyond F16's range: infinity
  if (exponent <= 0) return exponent < -10 ? sign : std::uint16_t(sign | ((mantissa | 0x800000u) >> (14 - exponent)));
  return std::uint16_t(sign | (exponent << 10) | (mantissa >> 13));
}

struct Weights {
  WeightType type = WeightType::F32;
  std::vector<float> values;        // as the reference sees them
  std::vector<std::uint8_t> bytes;  // as the file stores them, one byte in (unaligned)
  const void* stored() const { return bytes.data() + 1; }
};

// Makes every value representable in `type` and stores them.
void store(Weights& w) {
  const std::size_t element = element_bytes(w.type);
  w.bytes.assign(1 + w.values.size() * element, 0);
  std::uint8_t* out = w.bytes.data() + 1;
  for (std::size_t i = 0; i < w.values.size(); ++i) {
    if (w.type == WeightType::F32) {
      std::memcpy(out + 4 * i, &w.values[i], 4);
      continue;
    }
    const std::uint16_t h = w.type == WeightType::BF16 ? bf16_bits(w.values[i]) : f16_bits(w.values[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
  if (w.type != WeightType::F32)
    io::widen_to_f32(w.type == WeightType::BF16 ? io::DType::BF16 : io::DType::F16, out, w.values.size(),
                     w.values.data());
}

WeightType draw_type(Draw& d) {
  const double p = d.uniform();
  return p < 0.5 ? WeightType::F32 : p < 0.75 ? WeightType::BF16 : WeightType::F16;
}

std::size_t draw_cols(Draw& d) {
  const double p = d.uniform();
  if (p < 0.40) return 16 * (1 + d.below(63));  // rows that share blocks (16-1008)
  if (p < 0.60) return 1 + d.below(3000);
  if (p < 0.72) return 1 + d.below(40);
  if (p < 0.85) return 1000 + d.below(60);   // about one block
  if (p < 0.95) return 2030 + d.below(40);   // about two
  return 16370 + d.below(30);
}

// A scale anywhere the type holds, often where float squares underflow (under 2^-63 or so).
double draw_scale(Draw& d, WeightType type) {
  const double low = type == WeightType::F16 ? -5 : -37, high = type == WeightType::F16 ? 3.5 : 36;
  const double p = d.uniform();
  if (p < 0.35) return std::pow(10.0, low + (high - low) * d.uniform());
  if (p < 0.65) return std::pow(10.0, -2 + 3 * d.uniform());
  if (p < 0.85) return std::pow(2.0, -(45 + 25 * d.uniform()));
  return std::pow(10.0, type == WeightType::F16 ? 2 + 2 * d.uniform() : 15 + 22 * d.uniform());
}

float any_float(Draw& d) {  // any exponent, subnormals included
  const float v = float(std::ldexp(1.0 + d.uniform(), int(d.below(277)) - 149));
  return float(d.sign()) * (std::isfinite(v) ? v : std::numeric_limits<float>::max());
}

// Weights for `table`: mostly Laplacian about each row's map, with per-case shares of the hard ones.
std::vector<float> draw_weights(Draw& d, std::size_t rows, std::size_t cols, const std::vector<Affine>& maps,
                                const QuantizeTable& table) {
  const auto share = [&](double chance, double most) { return d.uniform() < chance ? most * d.uniform() : 0.0; };
  const double any = share(0.3, 0.3), subnormal = share(0.2, 0.2), zero = share(0.3, 0.5),
               on_threshold = share(0.4, 0.3), on_level = share(0.4, 0.5), nonfinite = share(0.25, 0.02),
               huge = share(0.1, 0.05), tiny_rows = d.uniform() < 0.2 ? 0.5 : 0.0;
  const std::size_t thresholds = table.levels_count - 1;
  std::vector<float> w(rows * cols);
  for (std::size_t r = 0; r < rows; ++r) {
    const std::size_t g = table.group_of_row(r);
    const float* t = table.thresholds.data() + g * thresholds;
    const float* levels = table.group_levels(g);
    const double scale = d.uniform() < tiny_rows ? std::ldexp(1.0, -int(40 + d.below(40))) : maps[g].scale;
    for (std::size_t c = 0; c < cols; ++c) {
      float v;
      double p = d.uniform();
      if ((p -= any) < 0) v = any_float(d);
      else if ((p -= subnormal) < 0) v = float(d.sign() * std::ldexp(double(d.below(1u << 23)), -149));
      else if ((p -= zero) < 0) v = float(d.sign() * 0.0);
      else if ((p -= on_threshold) < 0) {
        v = t[d.below(thresholds)];
        const std::size_t side = d.below(3);
        if (side) v = std::nextafter(v, side == 1 ? kInf : -kInf);
      } else if ((p -= on_level) < 0) v = levels[d.below(table.levels_count)];
      else if ((p -= nonfinite) < 0) v = std::array<float, 3>{NAN, kInf, -kInf}[d.below(3)];
      else if ((p -= huge) < 0) v = float(d.sign() * std::ldexp(1.0 + d.uniform(), 100 + int(d.below(28))));
      else v = float(maps[g].mean + d.sign() * d.exponential() * scale);
      w[r * cols + c] = v;
    }
  }
  return w;
}

// Every width, and codebooks with fewer levels than their width holds (the SIMD paths count
// thresholds, not bits).
std::vector<test::NamedCodebook> hard_codebooks() {
  std::vector<test::NamedCodebook> books = test::codebooks_of_every_width();
  books.push_back({"random-5-in-4-bits", test::random_codebook(5, 4, 3), 4});
  books.push_back({"random-16-in-8-bits", test::random_codebook(16, 8, 5), 8});
  books.push_back({"random-3-in-8-bits", test::random_codebook(3, 8, 9), 8});
  books.push_back({"random-2", test::random_codebook(2, 1, 17), 1});
  return books;
}

const char* name_of(WeightType type) {
  return type == WeightType::F32 ? "F32" : type == WeightType::BF16 ? "BF16" : "F16";
}

std::string describe(const std::string& book, WeightType type, std::size_t rows, std::size_t cols, bool per_row,
                     int index) {
  return "case " + std::to_string(index) + ": " + book + ", " + name_of(type) + ", " + std::to_string(rows) + " x " +
         std::to_string(cols) + (per_row ? ", a table per row" : ", one table");
}

TEST(RandomHardCases, CodesAndTotalsOfHardCasesMatchTheReference) {
  const std::vector<test::NamedCodebook> books = hard_codebooks();
  Draw d(20261204);
  for (int index = 0; index < 1500; ++index) {
    const test::NamedCodebook& book = books[d.below(books.size())];
    Weights w;
    w.type = draw_type(d);
    const std::size_t cols = draw_cols(d);
    const std::size_t most_rows = std::clamp<std::size_t>(60000 / cols, 1, 100);
    const std::size_t rows = 1 + d.below(d.uniform() < 0.5 ? std::min<std::size_t>(most_rows, 8) : most_rows);
    const bool per_row = d.uniform() < 0.6;
    std::vector<Affine> maps(per_row ? rows : 1);
    const double base = draw_scale(d, w.type);
    const bool own_scales = d.uniform() < 0.5;
    for (Affine& m : maps) {
      m.scale = own_scales ? draw_scale(d, w.type) : base * (0.5 + d.uniform());
      m.mean = d.uniform() < 0.5 ? 0.0 : m.scale * (4 * d.uniform() - 2);
    }
    const QuantizeTable table = make_quantize_table(book.codebook, book.storage_bits, maps);
    w.values = draw_weights(d, rows, cols, maps, table);
    store(w);
    const std::string what = describe(book.name, w.type, rows, cols, per_row, index);

    const std::size_t bytes = rows * packed_row_bytes(cols, table.bits);
    std::vector<std::uint8_t> expected(bytes), got(bytes + 64, 0xA5);  // 64 guard bytes after the codes
    const QuantizeTotals a = quantize_ref(w.values.data(), rows, cols, table, expected.data());
    const QuantizeTotals b = quantize_fast(w.stored(), w.type, rows, cols, table, got.data());
    ASSERT_TRUE(std::equal(expected.begin(), expected.end(), got.begin())) << what;
    ASSERT_TRUE(std::all_of(got.begin() + std::ptrdiff_t(bytes), got.end(), [](std::uint8_t v) { return v == 0xA5; }))
        << what << ": written past the codes";
    test::expect_totals_near(b, a, what);
    ASSERT_FALSE(::testing::Test::HasFailure()) << what;  // the first case that fails, not 1,500
  }
}

TEST(RandomHardCases, FourthMomentOfEveryTypeAndScaleMatchesDouble) {
  Draw d(4);
  for (int index = 0; index < 1500; ++index) {
    Weights w;
    w.type = draw_type(d);
    const std::size_t count = d.uniform() < 0.5 ? d.below(300) : d.below(70000);
    const double scale = w.type == WeightType::F16 ? std::pow(10.0, -3 + 5 * d.uniform())
                                                   : std::pow(10.0, -30 + 60 * d.uniform());
    const double nonfinite = d.uniform() < 0.2 ? 0.01 : 0.0, far = d.uniform() < 0.2 ? 0.01 : 0.0;
    w.values.resize(count);
    w.values.push_back(float(scale * (4 * d.uniform() - 2)));  // the mean, made representable with them
    for (std::size_t i = 0; i < count; ++i) {
      const double p = d.uniform(), mean = double(w.values.back());
      w.values[i] = p < nonfinite           ? (d.below(2) ? NAN : -kInf)
                    : p < nonfinite + far   ? float(mean + scale * std::ldexp(1.0, int(d.below(30))))
                                            : float(mean + d.sign() * d.exponential() * scale);
    }
    store(w);
    const double mean = double(w.values.back());
    double exact = 0.0;
    for (std::size_t i = 0; i < count; ++i)
      if (std::isfinite(w.values[i])) {
        const double z = (double(w.values[i]) - mean) / scale;
        exact += z * z * z * z;
      }
    const double got = fourth_moment(w.stored(), w.type, count, mean, scale);
    EXPECT_NEAR(got, exact, 1e-5 * exact) << "case " << index << ": " << name_of(w.type) << ", " << count
                                           << " weights at scale " << scale;
  }
}

// A mean that float cannot hold, far from 0 in sigmas (10^2 to 10^5): the moment is taken about
// that mean, not about its float rounding (which put a tensor's kurtosis 10^-4 off at 10^4 sigma).
TEST(RandomHardCases, FourthMomentAboutAMeanFarFromZeroMatchesDouble) {
  Draw d(5);
  for (int index = 0; index < 200; ++index) {
    const double scale = std::pow(10.0, -20 + 40 * d.uniform());
    const double mean = d.sign() * scale * std::pow(10.0, 2 + 3 * d.uniform()) * (1.0 + 1.0 / 3.0);
    std::vector<float> w(1 + d.below(5000));
    for (float& x : w) x = float(mean + d.sign() * d.exponential() * scale);
    double exact = 0.0;
    for (float x : w) {
      const double z = (double(x) - mean) / scale;
      exact += z * z * z * z;
    }
    const double got = fourth_moment(w.data(), WeightType::F32, w.size(), mean, scale);
    ASSERT_NEAR(got, exact, 1e-5 * exact) << "case " << index << ": " << w.size() << " weights at " << mean / scale
                                          << " sigma from 0";
  }
}

TEST(RandomHardCases, StatisticsOfHardCasesMatchWelfordAndEachRowIsItsOwn) {
  Draw d(7);
  for (int index = 0; index < 600; ++index) {
    Weights w;
    w.type = draw_type(d);
    const std::size_t cols = draw_cols(d), rows = 1 + d.below(std::clamp<std::size_t>(60000 / cols, 1, 40));
    const double scale = draw_scale(d, w.type);
    const double mean = d.uniform() < 0.3 ? scale * std::pow(10.0, 4 * d.uniform()) : 0.0;  // cancellation
    const double any = d.uniform() < 0.2 ? 0.05 : 0.0, nonfinite = d.uniform() < 0.3 ? 0.002 : 0.0;
    w.values.resize(rows * cols);
    for (float& v : w.values) {
      const double p = d.uniform();
      v = p < any               ? any_float(d)
          : p < any + nonfinite ? std::array<float, 3>{NAN, kInf, -kInf}[d.below(3)]
                                : float(mean + d.sign() * d.exponential() * scale);
    }
    store(w);
    const std::size_t count = w.values.size();
    const std::string what = "case " + std::to_string(index) + ": " + name_of(w.type) + ", " + std::to_string(rows) +
                             " x " + std::to_string(cols);

    const auto first_bad = std::find_if(w.values.begin(), w.values.end(), [](float v) { return !std::isfinite(v); });
    if (first_bad != w.values.end()) {  // an error naming the first, unless asked to skip
      const std::string expected = "w: element " + std::to_string(first_bad - w.values.begin()) + " is ";
      try {
        WeightStats s;
        accumulate(s, w.stored(), w.type, count, "w");
        ADD_FAILURE() << what << ": a non-finite weight accepted";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << what << ": " << e.what();
      }
    }
    const WeightStats ref = stats_ref(w.values.data(), count, "w", NonFinite::Skip);
    WeightStats as_floats, as_stored;
    accumulate(as_floats, w.values.data(), count, "w", NonFinite::Skip);
    accumulate(as_stored, w.stored(), w.type, count, "w", NonFinite::Skip);
    ASSERT_EQ(as_floats.count, ref.count) << what;
    ASSERT_EQ(as_floats.nonfinite, ref.nonfinite) << what;
    ASSERT_EQ(as_floats.min, ref.min) << what;
    ASSERT_EQ(as_floats.max, ref.max) << what;
    ASSERT_NEAR(as_floats.mean, ref.mean, 1e-12 * (std::abs(ref.mean) + ref.stddev())) << what;
    ASSERT_NEAR(as_floats.m2, ref.m2, 1e-9 * ref.m2) << what;
    ASSERT_EQ(std::memcmp(&as_stored.mean, &as_floats.mean, sizeof(double)), 0) << what << ": stored vs floats";
    ASSERT_EQ(std::memcmp(&as_stored.m2, &as_floats.m2, sizeof(double)), 0) << what << ": stored vs floats";

    std::vector<WeightStats> row(rows);
    row_stats(w.stored(), w.type, rows, cols, row.data(), "w", NonFinite::Skip);
    for (std::size_t r = 0; r < rows; ++r) {
      WeightStats alone;
      accumulate(alone, w.values.data() + r * cols, cols, "w", NonFinite::Skip);
      ASSERT_EQ(row[r].count, alone.count) << what << ", row " << r;
      ASSERT_EQ(row[r].nonfinite, alone.nonfinite) << what << ", row " << r;
      ASSERT_EQ(std::memcmp(&row[r].mean, &alone.mean, sizeof(double)), 0) << what << ", row " << r;
      ASSERT_EQ(std::memcmp(&row[r].m2, &alone.m2, sizeof(double)), 0) << what << ", row " << r;
      ASSERT_EQ(row[r].min, alone.min) << what << ", row " << r;
      ASSERT_EQ(row[r].max, alone.max) << what << ", row " << r;
    }
  }
}

// A table of many groups (eight a register where AVX-512 builds it) holds, bit for bit, what each
// group's table alone holds: maps of every magnitude, constant groups, levels beyond float's range.
TEST(RandomHardCases, TablesOfManyGroupsHoldEachGroupsOwn) {
  const std::vector<test::NamedCodebook> books = hard_codebooks();
  Draw d(11);
  for (int index = 0; index < 400; ++index) {
    const test::NamedCodebook& book = books[d.below(books.size())];
    std::vector<Affine> maps(1 + d.below(book.storage_bits > 8 ? 20 : 100));
    for (Affine& m : maps) {
      const double p = d.uniform();  // constant, any exponent double holds, or ordinary
      m.scale = p < 0.05 ? 0.0 : p < 0.5 ? std::ldexp(1.0 + d.uniform(), int(d.below(2000)) - 1000)
                                         : std::pow(10.0, 6 * d.uniform() - 4);
      m.mean = d.uniform() < 0.3 ? 0.0 : d.sign() * std::pow(10.0, 80 * d.uniform() - 40);
    }
    const QuantizeTable all = make_quantize_table(book.codebook, book.storage_bits, maps);
    for (std::size_t g = 0; g < maps.size(); ++g) {
      const QuantizeTable one = make_quantize_table(book.codebook, book.storage_bits, {maps[g]});
      const std::size_t between = all.levels_count - 1, per_group = std::size_t{1} << all.bits;
      const std::string what = "case " + std::to_string(index) + " (" + book.name + "), group " + std::to_string(g) +
                               " of " + std::to_string(maps.size());
      ASSERT_EQ(std::memcmp(all.thresholds.data() + g * between, one.thresholds.data(), between * sizeof(float)), 0)
          << what << ": thresholds";
      ASSERT_EQ(std::memcmp(all.group_levels(g), one.group_levels(0), per_group * sizeof(float)), 0) << what << ": levels";
      ASSERT_EQ(std::memcmp(&all.params[g], &one.params[0], sizeof(GroupParams)), 0) << what << ": support and grid";
    }
  }
}

}  // namespace
}  // namespace nuq
