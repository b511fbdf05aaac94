// Exact mean squared error of any scalar quantizer applied to a zero-mean Laplacian source of
// any variance, in closed form (see laplace_closed_form.h for the integrals), split into the
// granular region [-x_max, x_max] and the overload region outside it.
#pragma once

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
