// The reference of the GEMMs whose arithmetic is BF16 X and levels with FP32 accumulation (the
// mma kernel, DequantCublas): each product in double from the BF16-rounded operands, and a bound on
// how far any order of FP32 additions may fall from it.
#pragma once

#include <cmath>
#include <vector>

#include "nuq/mma_fragment.h"
#include "nuq/qgemm.h"

namespace nuq::test {

// y and sum |x w| per output in double on BF16-rounded X and levels, plus the bias.
struct Reference {
  std::vector<double> y, magnitude;
};
inline Reference bf16_reference(const std::vector<float>& x, std::size_t m, const QuantizedMatrix& w,
                                const std::vector<float>& bias) {
  const std::size_t n = w.codes.rows, k = w.codes.cols;
  Reference ref{std::vector<double>(m * n), std::vector<double>(m * n)};
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t r = 0; r < n; ++r) {
      double sum = bias.empty() ? 0.0 : bias[r], magnitude = 0.0;
      for (std::size_t c = 0; c < k; ++c) {
        const double product = double(mma::bf16_value(mma::bf16_round(x[i * k + c]))) *
                               double(mma::bf16_value(mma::bf16_round(w.row_levels(r)[w.codes.at(r, c)])));
        sum += product;
        magnitude += std::abs(product);
      }
      ref.y[i * n + r] = sum, ref.magnitude[i * n + r] = magnitude;
    }
  return ref;
}

// The products are exact in FP32; however the tensor cores (or cuBLAS's kernels) order and round
// the sums, each output is at most k additions, one per slice of k after (split-K cuts k into
// at most k slices; the mma plan's 65 at n = 40 on 132 multiprocessors) and the bias, each off
// by at most one FP32 unit (2^-23, allowing truncation rather than rounding) of a running sum no
// larger than sum |x w| + |bias|. Errors of a wrong layout are of the size of the outputs.
inline double bound(const Reference& ref, const std::vector<float>& bias, std::size_t e, std::size_t n, std::size_t k) {
  const double additions = 2.0 * double(k) + 1.0;  // k, at most k slices, the bias
  return 1.01 * additions * 0x1p-23 * (ref.magnitude[e] + (bias.empty() ? 0.0 : std::abs(double(bias[e % n]))));
}

}  // namespace nuq::test
