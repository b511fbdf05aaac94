#include "nuq/uniform.h"

#include <cmath>
#include <limits>
#include <vector>

#include "nuq/error.h"
#include "nuq/laplace.h"
#include "nuq/laplace_closed_form.h"

namespace nuq {

int bits_for_levels(std::size_t levels) {
  NUQ_REQUIRE(levels >= 2 && levels <= kMaxUniformLevels, "the number of levels must be in 2..",
              kMaxUniformLevels, ", got ", levels);
  int bits = 1;
  while ((std::size_t{1} << bits) < levels) ++bits;
  return bits;
}

double uniform_step(std::size_t levels, double xmax) {
  bits_for_levels(levels);
  NUQ_REQUIRE(std::isfinite(xmax) && xmax > 0.0, "uniform quantizer: x_max must be finite and "
              "positive, got ", xmax);
  return 2.0 * xmax / static_cast<double>(levels);
}

Codebook uniform_codebook(std::size_t levels, double xmax, Provenance provenance) {
  const int bits = bits_for_levels(levels);
  const double step = uniform_step(levels, xmax);
  std::vector<double> level_values(levels), thresholds(levels - 1);
  for (std::size_t k = 0; k < levels; ++k) level_values[k] = uniform_level(k, levels, step);
  for (std::size_t k = 0; k + 1 < levels; ++k) thresholds[k] = uniform_threshold(k, levels, step);
  provenance.xmax = xmax;
  // Read before the move: the order in which call arguments are evaluated is unspecified (clang's
  // left-to-right order moved the levels out first; UBSan caught it).
  const UniformGrid grid{level_values.front(), step};
  return Codebook(bits, std::move(thresholds), std::move(level_values), provenance, grid);
}

Distortion uniform_distortion(std::size_t levels, double xmax, double sigma) {
  const double step = uniform_step(levels, xmax);
  return laplace_distortion_of(
      levels, [&](std::size_t k) { return uniform_threshold(k, levels, step); },
      [&](std::size_t k) { return uniform_level(k, levels, step); }, xmax, checked_laplace_rate(sigma));
}

double midpoint_scale_step(const Codebook& codebook, double sigma) {
  const auto& t = codebook.thresholds();
  const auto& y = codebook.levels();
  double numerator = 0.0, denominator = 0.0;
  for (std::size_t k = 0; k < y.size(); ++k) {
    const double lo = k == 0 ? -std::numeric_limits<double>::infinity() : t[k - 1];
    const double hi = k + 1 == y.size() ? std::numeric_limits<double>::infinity() : t[k];
    const IntervalMoments m = laplace_moments(lo, hi, sigma);
    numerator += y[k] * m.first_moment;
    denominator += y[k] * y[k] * m.probability;
  }
  NUQ_REQUIRE(denominator > 0.0, "scale rule: the quantizer has no non-zero level with mass");
  return codebook.xmax() * numerator / denominator;
}

}  // namespace nuq

namespace nuq {

double uniform_support_step(std::size_t levels, double xmax) {
  const Codebook codebook = uniform_codebook(levels, xmax);
  const double lambda = closed_form::laplace_rate(1.0);
  const double step = codebook.uniform_grid()->step;
  const double outer_level = codebook.levels().back();
  const auto& t = codebook.thresholds();
  const auto& y = codebook.levels();
  double inner = 0.0;  // F: the cells between the two outermost ones
  for (std::size_t k = 1; k + 1 < y.size(); ++k)
    inner += y[k] * closed_form::interval_moments(t[k - 1], t[k], y[k], lambda).error_moment;
  const double outer_factor = outer_level * (1.0 / lambda - 0.5 * step);
  // With four levels the optimum (Delta = 1.087) sits close to where 1/sqrt2 - Delta/2 vanishes and
  // the logarithmic map is steep; the scale rule converges there in about ten steps.
  if (levels < 8 || !(outer_factor > 0.0) || !(inner < 0.0)) return midpoint_scale_step(codebook);
  // x_max = t + Delta, with t from the condition and Delta from the current iterate: keeping the
  // Delta term explicit (rather than solving x = N/(N-2) t) keeps the map contracting at N = 4.
  return step + std::log(outer_factor / -inner) / lambda;
}

}  // namespace nuq
