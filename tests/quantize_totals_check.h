// The one comparison of a fast quantization pass's totals with the reference's, shared by the
// CPU backend's tests.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "nuq/quantize_table.h"

namespace nuq::test {

inline void expect_totals_near(const QuantizeTotals& a, const QuantizeTotals& b, const std::string& what) {
  // The SIMD paths sum blocks of 1,024 weights in float (AVX2: 16 partial sums of 64 terms each,
  // AVX-512: 32 of 32, or 64 where rows of 16 share a block): each term's square rounded once, at
  // most 63 additions into its partial sum and 5 joining the partial sums, each a rounding of at
  // most 2^-24 relative, under 4.2e-6 of the sum (a review constructed 4.17e-6 with rows of 16).
  EXPECT_NEAR(a.signal, b.signal, 4.2e-6 * b.signal) << what;
  EXPECT_NEAR(a.noise, b.noise, 4.2e-6 * b.noise) << what;
  EXPECT_EQ(a.max_error, b.max_error) << what;
  EXPECT_EQ(a.inside, b.inside) << what;
  EXPECT_EQ(a.nonfinite, b.nonfinite) << what;
  EXPECT_EQ(a.first_nonfinite, b.first_nonfinite) << what;
}

}  // namespace nuq::test
