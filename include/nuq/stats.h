// Statistics of a weight set: count, mean, standard deviation, extremes, accumulated in double
// (Welford's update in the reference, Chan's combination of chunks and tensors) so that 10^9
// weights keep their digits. NaN or infinity is an error naming the tensor and the index, unless
// the caller asks to skip them (NonFinite::Skip; they are then counted, not averaged).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "nuq/weight_type.h"

namespace nuq {

// What a non-finite weight (NaN, ±Inf) means: an error (the default everywhere), or values the
// caller handles on purpose (statistics skip and count them; quantization saturates them).
enum class NonFinite { Reject, Skip };

struct WeightStats {
  std::size_t count = 0;      // finite values taken in
  std::size_t nonfinite = 0;  // skipped (NonFinite::Skip only)
  double mean = 0.0;
  double m2 = 0.0;  // sum of squared deviations from the mean
  double min = 0.0;
  double max = 0.0;
  double variance() const { return count ? m2 / double(count) : 0.0; }  // population variance
  double stddev() const;
  // The root of the mean square, sqrt(variance + mean^2): the scale of the weights about zero, which
  // is what a codebook meets when they are not normalised, and the signal power of SQNR (eq. (31)).
  double rms() const;
};

// Adds `values` (named `name` in errors) to `stats`: chunks of weights in parallel, each chunk's
// mean then its squared deviations, chunks joined with Chan's formula.
void accumulate(WeightStats& stats, const float* values, std::size_t count, const std::string& name,
                NonFinite nonfinite = NonFinite::Reject);
void accumulate(WeightStats& stats, const std::vector<float>& values, const std::string& name,
                NonFinite nonfinite = NonFinite::Reject);
// The same for `count` weights of `type` as they lie (BF16, F16 widened as they are read): the
// same statistics, bit for bit, as for their floats.
void accumulate(WeightStats& stats, const void* values, WeightType type, std::size_t count, const std::string& name,
                NonFinite nonfinite = NonFinite::Reject);
// The statistics of each of `rows` consecutive rows of `cols` weights of `type` (per-channel
// maps; groups along a row): out[r] is, bit for bit, what `accumulate` gives for row r alone into
// empty statistics. Short rows are spread over the cores, each on one thread; long ones (over 16
// chunks of 4,096) are taken in turn, each spread over the cores. An error names the first row
// that fails, as "<name> row <r>".
void row_stats(const void* values, WeightType type, std::size_t rows, std::size_t cols, WeightStats* out,
               const std::string& name, NonFinite nonfinite = NonFinite::Reject);
// The reference: Welford's update one weight at a time, what the fast paths are tested against.
WeightStats stats_ref(const float* values, std::size_t count, const std::string& name,
                      NonFinite nonfinite = NonFinite::Reject);
WeightStats combine(const WeightStats& a, const WeightStats& b);
// Whether statistics have a spread to normalise by and take a fourth moment at.
bool has_spread(const WeightStats& s);
// Refuses, naming `where`, a tensor every weight of which is NaN or infinite (its statistics with
// NonFinite::Skip are of nothing: there is nothing to map it by, and a tensor of NaN is a broken
// one, not weights to quantize). An empty tensor is not refused.
void require_finite_weights(const WeightStats& stats, const std::string& where);

// The sum of ((w - mean) / scale)^4 over the finite weights among `count` of `type` (for the
// excess kurtosis, a diagnostic: float sums within blocks of 1,024 weights, double across them, so
// the same weights as float and as BF16 agree to rounding, not bit for bit). With `scale` the
// weights' standard deviation the terms stay near 1 at any magnitude: unscaled, fourth powers
// leave FP32's range for deviations under 1e-10 or over 1e9. A block that still overflows, or a
// scale whose inverse FP32 cannot hold, is summed in double.
double fourth_moment(const void* values, WeightType type, std::size_t count, double mean, double scale);

}  // namespace nuq
