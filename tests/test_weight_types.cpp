// The CPU's statistics, quantization pass and fourth moment read BF16 and F16 weights as they lie
// (widening each in registers): the statistics, codes and totals must be those of the same passes
// over the widened floats, bit for bit, on every path (vector bodies, tails, chunks with NaN and
// Inf, per-row tables); the fourth moment (a diagnostic) to rounding.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <cstring>
#include <random>
#include <vector>

#include "backend_cases.h"
#include "nuq/backend.h"
#include "nuq/error.h"
#include "nuq/io/widen.h"
#include "nuq/packed.h"
#include "nuq/quantize_table.h"
#include "nuq/stats.h"

namespace nuq {
namespace {

// `count` 16-bit weights of `type` about 0.01 with spread 0.05 (Laplacian), some NaN and Inf when
// asked, and their floats.
struct Sixteen {
  std::vector<std::uint16_t> stored;
  std::vector<float> widened;
};

Sixteen draw16(WeightType type, std::size_t count, bool nonfinite, std::uint32_t seed) {
  const std::vector<float> w = test::draw(test::Law::Laplace, count, 0.01, 0.05, seed);
  Sixteen s;
  for (float v : w) {
    std::uint32_t bits;
    std::memcpy(&bits, &v, 4);
    if (type == WeightType::BF16) {
      s.stored.push_back(std::uint16_t(bits >> 16));  // truncated
    } else {  // IEEE half by hand: |v| < 2 here, so normal or subnormal, truncated mantissa
      const std::uint16_t sign = std::uint16_t((bits >> 16) & 0x8000u);
      const int exponent = int((bits >> 23) & 0xFF) - 127 + 15;
      const std::uint32_t mantissa = bits & 0x7FFFFFu;
      std::uint16_t h = sign;
      if (exponent > 0) h |= std::uint16_t((exponent << 10) | (mantissa >> 13));
      else if (exponent > -10) h |= std::uint16_t((mantissa | 0x800000u) >> (14 - exponent));
      s.stored.push_back(h);
    }
  }
  if (nonfinite && count > 100) {
    const std::uint16_t nan = type == WeightType::BF16 ? 0x7FC0 : 0x7E00, inf = type == WeightType::BF16 ? 0x7F80 : 0x7C00;
    s.stored[3] = nan;
    s.stored[count / 2] = inf;
    s.stored[count - 1] = std::uint16_t(inf | 0x8000);
  }
  s.widened.resize(count);
  io::widen_to_f32(type == WeightType::BF16 ? io::DType::BF16 : io::DType::F16, s.stored.data(), count,
                   s.widened.data());
  return s;
}

void expect_same(const WeightStats& a, const WeightStats& b, const std::string& what) {
  EXPECT_EQ(a.count, b.count) << what;
  EXPECT_EQ(a.nonfinite, b.nonfinite) << what;
  EXPECT_EQ(a.mean, b.mean) << what;
  EXPECT_EQ(a.m2, b.m2) << what;
  EXPECT_EQ(a.min, b.min) << what;
  EXPECT_EQ(a.max, b.max) << what;
}

TEST(WeightTypes, SixteenBitStatisticsAreThoseOfTheirFloats) {
  for (WeightType type : {WeightType::BF16, WeightType::F16}) {
    // Tails of the vector loop, one chunk, chunk edges, and more chunks than the serial path takes.
    for (std::size_t count : {1u, 15u, 17u, 4095u, 4096u, 4097u, 70001u}) {
      for (bool nonfinite : {false, true}) {
        const Sixteen s = draw16(type, count, nonfinite, std::uint32_t(count));
        const std::string what = std::string(type == WeightType::BF16 ? "bf16 " : "f16 ") + std::to_string(count) +
                                 (nonfinite ? " with NaN/Inf" : "");
        WeightStats typed, floats;
        accumulate(typed, s.stored.data(), type, count, "w", NonFinite::Skip);
        accumulate(floats, s.widened.data(), count, "w", NonFinite::Skip);
        expect_same(typed, floats, what);
        if (count > 1) {
          EXPECT_GT(typed.m2, 0.0) << what;
        }
        if (nonfinite && count > 100) {
          EXPECT_EQ(typed.nonfinite, 3u) << what;
          EXPECT_THROW(accumulate(typed, s.stored.data(), type, count, "w", NonFinite::Reject), Error) << what;
        }
        // A diagnostic, summed in float within blocks in whatever order the compiler vectorises.
        const double sigma = typed.stddev() > 0.0 ? typed.stddev() : 1.0;
        const double fourth = fourth_moment(s.widened.data(), WeightType::F32, count, typed.mean, sigma);
        EXPECT_NEAR(fourth_moment(s.stored.data(), type, count, typed.mean, sigma), fourth, 1e-5 * fourth) << what;
        if (count > 1) {
          EXPECT_GT(fourth, 0.0) << what;
        }
      }
    }
  }
}

TEST(WeightTypes, SixteenBitQuantizationIsThatOfTheirFloats) {
  for (WeightType type : {WeightType::BF16, WeightType::F16}) {
    for (const auto& [name, codebook, bits] : test::codebooks_of_every_width()) {
      for (const auto& [rows, cols] : std::vector<std::pair<std::size_t, std::size_t>>{{1, 31}, {3, 100}, {5, 2085}, {2, 40000}}) {
        for (bool per_row : {false, true}) {
          const Sixteen s = draw16(type, rows * cols, per_row, std::uint32_t(rows * 7 + cols));
          std::vector<Affine> groups(per_row ? rows : 1, Affine{0.01, 0.05});
          for (std::size_t g = 0; g < groups.size(); ++g) groups[g].scale *= 1.0 + 0.2 * double(g);
          const QuantizeTable table = make_quantize_table(codebook, bits, groups);
          const std::size_t bytes = rows * packed_row_bytes(cols, bits);
          std::vector<std::uint8_t> typed(bytes, 0xAB), floats(bytes, 0xCD);
          const QuantizeTotals a = quantize_fast(s.stored.data(), type, rows, cols, table, typed.data());
          const QuantizeTotals b = quantize_fast(s.widened.data(), rows, cols, table, floats.data());
          const std::string what = name + " " + std::to_string(rows) + "x" + std::to_string(cols) +
                                   (type == WeightType::BF16 ? " bf16" : " f16") + (per_row ? " per-row" : "");
          ASSERT_EQ(typed, floats) << what;
          EXPECT_EQ(a.signal, b.signal) << what;
          EXPECT_EQ(a.noise, b.noise) << what;
          EXPECT_EQ(a.max_error, b.max_error) << what;
          EXPECT_EQ(a.inside, b.inside) << what;
          EXPECT_EQ(a.nonfinite, b.nonfinite) << what;
          EXPECT_EQ(a.first_nonfinite, b.first_nonfinite) << what;
          // Through the backend too: the CPU reads both dtypes.
          ASSERT_TRUE(cpu_backend().reads(type));
          std::vector<std::uint8_t> via(bytes);
          cpu_backend().quantize_as(s.stored.data(), type, rows, cols, table, via.data());
          EXPECT_EQ(via, floats) << what;
        }
      }
    }
  }
}

// F32 -> BF16/F16 (narrow_from_f32) against the exact widening: every 16-bit pattern comes back
// as itself, each midpoint between neighbours goes to the even one and the floats either side of
// it to the nearer one, and what rounds past the largest finite value is infinity, reported.
TEST(WeightTypes, NarrowingGivesTheNearestSixteenBitValueTiesToEven) {
  for (const io::DType dtype : {io::DType::BF16, io::DType::F16}) {
    const char* name = dtype == io::DType::BF16 ? "BF16" : "F16";
    const auto widen = [&](std::uint16_t h) {
      float f;
      io::widen_to_f32(dtype, &h, 1, &f);
      return f;
    };
    const auto narrow = [&](float f) {
      std::uint16_t h;
      io::narrow_from_f32(dtype, &f, 1, &h);
      return h;
    };
    const std::uint16_t infinity = dtype == io::DType::BF16 ? 0x7F80 : 0x7C00;
    for (std::uint32_t h = 0; h <= 0xFFFF; ++h) {
      const float f = widen(std::uint16_t(h));
      if (std::isnan(f)) {
        EXPECT_TRUE(std::isnan(widen(narrow(f)))) << name << " " << h;
        continue;
      }
      ASSERT_EQ(narrow(f), h) << name << " " << h;
      const std::uint16_t next = std::uint16_t(h + 1);  // the neighbour away from zero
      if ((h & 0x7FFF) >= infinity) continue;
      const float beyond = (next & 0x7FFF) == infinity ? widen(std::uint16_t(h - 1)) : widen(next);
      // Between f and its neighbour away from zero (past the largest finite value, as far again).
      const double far = (next & 0x7FFF) == infinity ? 2.0 * double(f) - double(beyond) : double(beyond);
      const float midpoint = float((double(f) + far) / 2.0);  // exact: one more significant bit
      ASSERT_EQ(double(midpoint), (double(f) + far) / 2.0) << name << " " << h;
      const std::uint16_t even = (h & 1) ? next : std::uint16_t(h);
      EXPECT_EQ(narrow(midpoint), even) << name << " midpoint after " << h;
      const float toward = std::nextafter(midpoint, 0.0f), away = std::nextafter(midpoint, midpoint * 2.0f);
      EXPECT_EQ(narrow(toward), h) << name << " just below the midpoint after " << h;
      EXPECT_EQ(narrow(away), next) << name << " just above the midpoint after " << h;
    }
    // Overflow is told: the index of the first finite value that became infinite.
    const std::vector<float> values = {1.0f, std::numeric_limits<float>::infinity(), 2.0f,
                                       dtype == io::DType::BF16 ? std::numeric_limits<float>::max() : 65520.0f, -1e30f};
    std::vector<std::uint16_t> out(values.size());
    EXPECT_EQ(io::narrow_from_f32(dtype, values.data(), values.size(), out.data()), 3u) << name;
    EXPECT_EQ(out[3], infinity) << name;
    EXPECT_EQ(io::narrow_from_f32(dtype, values.data(), 3, out.data()), 3u) << name;  // an infinity stays one
  }
  EXPECT_THROW(io::narrow_from_f32(io::DType::I32, nullptr, 0, nullptr), Error);
}

}  // namespace
}  // namespace nuq
