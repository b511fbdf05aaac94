// The five 8-bit float dtypes of FP8 checkpoints, read as float32 by the Python package: every one
// of the 256 codes of each against the formats' defining numbers (largest finite, smallest normal
// and subnormal, the NaN and infinity codes, signed zero), and the order of the codes (positive
// codes strictly increase in value, negative ones mirror them) so that no code is misplaced.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "nuq/error.h"
#include "nuq/io/widen.h"

namespace nuq::io {
namespace {

std::vector<float> all_codes(DType dtype) {
  std::vector<std::uint8_t> codes(256);
  for (int b = 0; b < 256; ++b) codes[b] = std::uint8_t(b);
  std::vector<float> values(256);
  float8_to_f32(dtype, codes.data(), codes.size(), values.data());
  return values;
}

struct Format {
  DType dtype;
  float largest, smallest_normal, smallest_subnormal;
  std::vector<int> nan_codes;
  bool has_infinity, has_negative_zero;
};

TEST(Float8, EveryCodeOfEveryFormat) {
  const std::vector<Format> formats = {
      {DType::F8_E4M3, 448.0f, 0x1p-6f, 0x1p-9f, {0x7F, 0xFF}, false, true},
      {DType::F8_E5M2, 57344.0f, 0x1p-14f, 0x1p-16f, {0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF}, true, true},
      {DType::F8_E4M3FNUZ, 240.0f, 0x1p-7f, 0x1p-10f, {0x80}, false, false},
      {DType::F8_E5M2FNUZ, 57344.0f, 0x1p-15f, 0x1p-17f, {0x80}, false, false},
  };
  for (const Format& f : formats) {
    SCOPED_TRACE(to_string(f.dtype));
    const std::vector<float> v = all_codes(f.dtype);
    int nans = 0;
    for (int b = 0; b < 256; ++b) nans += std::isnan(v[b]);
    EXPECT_EQ(nans, int(f.nan_codes.size()));
    for (int code : f.nan_codes) EXPECT_TRUE(std::isnan(v[code])) << code;
    EXPECT_EQ(v[0x00], 0.0f);
    EXPECT_FALSE(std::signbit(v[0x00]));
    if (f.has_negative_zero) {
      EXPECT_TRUE(v[0x80] == 0.0f && std::signbit(v[0x80]));
    }
    EXPECT_EQ(v[0x01], f.smallest_subnormal);
    const int mantissa_bits = f.dtype == DType::F8_E4M3 || f.dtype == DType::F8_E4M3FNUZ ? 3 : 2;
    EXPECT_EQ(v[1 << mantissa_bits], f.smallest_normal);
    EXPECT_EQ(v[(1 << mantissa_bits) - 1], f.smallest_normal - f.smallest_subnormal);  // the subnormals reach up to it
    float largest = 0.0f;
    bool infinity = false;
    for (int b = 1; b < 128; ++b) {
      if (std::isnan(v[b])) continue;
      if (std::isinf(v[b])) {
        infinity = true;
        continue;
      }
      EXPECT_GT(v[b], v[b - 1]) << "code " << b;  // positive codes in increasing order
      largest = std::max(largest, v[b]);
      if (!std::isnan(v[b | 0x80]) && !(b == 0 && !f.has_negative_zero)) {
        EXPECT_EQ(v[b | 0x80], -v[b]) << b;
      }
    }
    EXPECT_EQ(largest, f.largest);
    EXPECT_EQ(infinity, f.has_infinity);
    if (f.has_infinity) {
      EXPECT_EQ(v[0xFC], -std::numeric_limits<float>::infinity());
    }
  }
}

TEST(Float8, E8M0IsAnUnsignedPowerOfTwo) {
  const std::vector<float> v = all_codes(DType::F8_E8M0);
  for (int b = 0; b < 255; ++b) EXPECT_EQ(v[b], std::ldexp(1.0f, b - 127)) << b;  // 2^-127 is a float32 subnormal
  EXPECT_EQ(v[127], 1.0f);
  EXPECT_TRUE(std::isnan(v[255]));
  EXPECT_EQ(v[0], 0x1p-127f);
}

TEST(Float8, OtherDtypesAreRefused) {
  const std::uint8_t byte = 0;
  float out = 0.0f;
  for (DType dtype : {DType::U8, DType::BF16, DType::F4, DType::F6_E2M3})
    EXPECT_THROW(float8_to_f32(dtype, &byte, 1, &out), Error) << to_string(dtype);
  EXPECT_TRUE(is_float8(DType::F8_E5M2FNUZ));
  EXPECT_FALSE(is_floating(DType::F8_E4M3));  // kept in checkpoints, never quantized
}

}  // namespace
}  // namespace nuq::io
