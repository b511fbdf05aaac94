// The closed-form pieces of every Laplacian integral nuq needs, shared by the host design math
// and the CUDA kernels (hence NUQ_HOST_DEVICE; this header includes no CUDA header itself).
//
// Source: zero-mean Laplacian with standard deviation sigma, p(x) = (lambda/2) exp(-lambda |x|),
// lambda = sqrt(2)/sigma. For one interval [a, b] and one representation level y we need
//   probability     P  = int_a^b p(x) dx
//   first moment    M1 = int_a^b x p(x) dx
//   squared error   SE = int_a^b (x - y)^2 p(x) dx
// All three have elementary antiderivatives. Evaluating F(b) - F(a) directly cancels badly for
// the narrow cells of a 16-bit quantizer (terms of order 1 whose difference is 1e-12), so each
// integral is written relative to the left end a of a segment on the non-negative half-line:
// with t = x - a, s = lambda (b - a) and E_k(s) = int_0^s u^k e^{-u} du (the lower incomplete
// gamma function gamma(k+1, s)),
//   P  = 1/2 e^{-lambda a} E_0
//   M1 = 1/2 e^{-lambda a} (a E_0 + E_1 / lambda)
//   SE = 1/2 e^{-lambda a} ((a-y)^2 E_0 + 2 (a-y) E_1 / lambda + E_2 / lambda^2)
//   EM = int_a^b (x - y) p(x) dx = 1/2 e^{-lambda a} ((a-y) E_0 + E_1 / lambda)
// E_k is evaluated by its elementary closed form, or by its power series when s < 1 (where the
// closed form would cancel); both are exact to rounding. Negative intervals use the symmetry
// p(-x) = p(x). The derivation is written out in docs/design-math.md.
#pragma once

#include <cmath>

#include "nuq/host_device.h"

namespace nuq {

struct IntervalMoments {
  double probability = 0.0;
  double first_moment = 0.0;
  double squared_error = 0.0;
  double error_moment = 0.0;  // int_a^b (x - y) p(x) dx, without the cancellation of M1 - y P
};

namespace closed_form {

// E_k(s) = gamma(k+1, s) for k = 0, 1, 2; s may be +infinity.
struct IncompleteGammas {
  double e0, e1, e2;
};

NUQ_HOST_DEVICE inline IncompleteGammas incomplete_gammas(double s) {
  if (!(s < HUGE_VAL)) return {1.0, 1.0, 2.0};  // s = +infinity: the complete gammas 0!, 1!, 2!
  if (s < 1.0) {
    // gamma(k+1, s) = sum_n (-1)^n s^(n+k+1) / (n! (n+k+1)). The terms fall at least as fast as
    // s^n / n!, so 22 terms reach 1/22! < 1e-21 relative; narrow cells (small s) stop far earlier.
    double e0 = 0.0, e1 = 0.0, e2 = 0.0;
    double power_over_factorial = s;  // (-1)^n s^(n+1) / n!
    for (int n = 0; n < 22; ++n) {
      e0 += power_over_factorial / (n + 1);
      e1 += power_over_factorial * s / (n + 2);
      e2 += power_over_factorial * s * s / (n + 3);
      power_over_factorial *= -s / (n + 1);
      if (fabs(power_over_factorial) < 1e-18 * s) break;
    }
    return {e0, e1, e2};
  }
  const double tail = exp(-s);
  return {-expm1(-s), 1.0 - tail * (1.0 + s), 2.0 - tail * (s * s + 2.0 * s + 2.0)};
}

// Moments over [a, b] with 0 <= a <= b <= +infinity.
NUQ_HOST_DEVICE inline IntervalMoments half_line_moments(double a, double b, double level,
                                                          double lambda) {
  IntervalMoments m;
  if (!(b > a)) return m;
  const IncompleteGammas e = incomplete_gammas(lambda * (b - a));
  const double half_weight = 0.5 * exp(-lambda * a);
  const double offset = a - level;
  m.probability = half_weight * e.e0;
  m.first_moment = half_weight * (a * e.e0 + e.e1 / lambda);
  m.squared_error =
      half_weight * (offset * offset * e.e0 + 2.0 * offset * e.e1 / lambda + e.e2 / (lambda * lambda));
  m.error_moment = half_weight * (offset * e.e0 + e.e1 / lambda);
  return m;
}

// Moments over any [a, b], -infinity <= a <= b <= +infinity, for representation level `level`.
NUQ_HOST_DEVICE inline IntervalMoments interval_moments(double a, double b, double level,
                                                         double lambda) {
  IntervalMoments total;
  if (a < 0.0) {
    // int_a^min(b,0) f(x) p(x) dx = int_max(-b,0)^-a f(-u) p(u) du: mirror the level and the moment.
    const IntervalMoments mirrored = half_line_moments(fmax(-b, 0.0), -a, -level, lambda);
    total.probability += mirrored.probability;
    total.first_moment -= mirrored.first_moment;
    total.squared_error += mirrored.squared_error;
    total.error_moment -= mirrored.error_moment;
  }
  if (b > 0.0) {
    const IntervalMoments positive = half_line_moments(fmax(a, 0.0), b, level, lambda);
    total.probability += positive.probability;
    total.first_moment += positive.first_moment;
    total.squared_error += positive.squared_error;
    total.error_moment += positive.error_moment;
  }
  return total;
}

NUQ_HOST_DEVICE inline double laplace_rate(double sigma) { return 1.4142135623730951 / sigma; }

// Squared error of one quantizer cell [lo, hi] with level `level`, split at -xmax and xmax into
// the granular part (inside [-xmax, xmax]) and the overload part (outside).
struct CellDistortion {
  double granular = 0.0;
  double overload = 0.0;
};

NUQ_HOST_DEVICE inline CellDistortion cell_distortion(double lo, double hi, double level,
                                                      double xmax, double lambda) {
  CellDistortion d;
  const double granular_lo = fmax(lo, -xmax), granular_hi = fmin(hi, xmax);
  if (granular_lo < granular_hi)
    d.granular = interval_moments(granular_lo, granular_hi, level, lambda).squared_error;
  if (lo < -xmax) d.overload += interval_moments(lo, fmin(hi, -xmax), level, lambda).squared_error;
  if (hi > xmax) d.overload += interval_moments(fmax(lo, xmax), hi, level, lambda).squared_error;
  return d;
}

}  // namespace closed_form
}  // namespace nuq
