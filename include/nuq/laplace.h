// Exact mean squared error of any scalar quantizer applied to a zero-mean Laplacian source of
// any variance, in closed form (see laplace_closed_form.h for the integrals), split into the
// granular region [-x_max, x_max] and the overload region outside it.
#pragma once

#include <cstddef>
#include <limits>
#include <vector>

#include "nuq/codebook.h"
#include "nuq/laplace_closed_form.h"

namespace nuq {

struct Distortion {
  double granular = 0.0;
  double overload = 0.0;
  double total() const { return granular + overload; }
};

// D of the quantizer given by its full sorted thresholds and levels (any symmetry, midrise or
// midtread) on Laplace(0, sigma^2); `xmax` only decides how D is split into granular/overload.
Distortion laplace_distortion(const std::vector<double>& thresholds,
                              const std::vector<double>& levels, double xmax, double sigma);

// lambda = sqrt(2) / sigma of Laplace(0, sigma^2), sigma refused unless finite and positive.
double checked_laplace_rate(double sigma);

// The same for a quantizer whose levels a design generates: `threshold_at(k)` (k < levels - 1) and
// `level_at(k)` (k < levels), called in increasing k, once each, with lambda = checked_laplace_rate. A
// numerical search for x_max evaluates D at a hundred x_max; for 16-bit codes, building a
// codebook of 65,536 levels for each took half of the search's time in allocating its arrays.
// Same cells, same order, so the same D, bit for bit, as laplace_distortion of the arrays.
template <class ThresholdAt, class LevelAt>
Distortion laplace_distortion_of(std::size_t levels, ThresholdAt threshold_at, LevelAt level_at, double xmax,
                                 double lambda) {
  constexpr double kInfinity = std::numeric_limits<double>::infinity();
  Distortion d;
  double lo = -kInfinity;
  for (std::size_t k = 0; k < levels; ++k) {
    const double hi = k + 1 == levels ? kInfinity : threshold_at(k);
    const closed_form::CellDistortion cell = closed_form::cell_distortion(lo, hi, level_at(k), xmax, lambda);
    d.granular += cell.granular;
    d.overload += cell.overload;
    lo = hi;
  }
  return d;
}

// The same for a codebook; x_max is the codebook's support threshold.
Distortion laplace_distortion(const Codebook& codebook, double sigma = 1.0);

// SQNR = 10 log10(sigma^2 / D) in dB.
double sqnr_db(double distortion, double sigma = 1.0);

// SQNR_th of a codebook on Laplace(0, sigma^2).
double laplace_sqnr_db(const Codebook& codebook, double sigma = 1.0);

// Probability and first moment of Laplace(0, sigma^2) over [a, b] (a, b may be infinite).
IntervalMoments laplace_moments(double a, double b, double sigma);

// The probability that |X| <= xmax: the share of the source inside the granular region.
double laplace_within_support(double xmax, double sigma = 1.0);

// The density, for plots and for the numerical cross-checks in the tests.
double laplace_pdf(double x, double sigma = 1.0);

}  // namespace nuq
