// Independent references for the closed forms: adaptive numerical integration with Boost.Math
// (Gauss-Kronrod on finite pieces, exp-sinh on the tails), split at every kink of the integrand.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <boost/math/quadrature/exp_sinh.hpp>
#include <boost/math/quadrature/gauss_kronrod.hpp>

#include "nuq/laplace.h"

namespace nuq::test {

// int_a^b f(x) p(x) dx for the Laplacian density p of standard deviation sigma.
template <typename F>
double integrate_against_laplace(F f, double a, double b, double sigma) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  auto integrand = [&](double x) { return f(x) * laplace_pdf(x, sigma); };
  std::vector<double> cuts{a};
  if (a < 0.0 && b > 0.0) cuts.push_back(0.0);  // the density has a kink at 0
  cuts.push_back(b);
  double total = 0.0;
  for (std::size_t i = 0; i + 1 < cuts.size(); ++i) {
    const double lo = cuts[i], hi = cuts[i + 1];
    if (lo == -kInf) {
      boost::math::quadrature::exp_sinh<double> tail;
      total += tail.integrate([&](double u) { return integrand(hi - u); }, 0.0, kInf);
    } else if (hi == kInf) {
      boost::math::quadrature::exp_sinh<double> tail;
      total += tail.integrate([&](double u) { return integrand(lo + u); }, 0.0, kInf);
    } else {
      total += boost::math::quadrature::gauss_kronrod<double, 61>::integrate(integrand, lo, hi, 8, 1e-13);
    }
  }
  return total;
}

// D of a quantizer by numerical integration, split into granular and overload like the closed form.
inline Distortion numeric_distortion(const std::vector<double>& t, const std::vector<double>& y,
                                     double xmax, double sigma) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  Distortion d;
  for (std::size_t k = 0; k < y.size(); ++k) {
    const double lo = k == 0 ? -kInf : t[k - 1];
    const double hi = k + 1 == y.size() ? kInf : t[k];
    auto squared_error = [&](double x) { return (x - y[k]) * (x - y[k]); };
    const double g_lo = std::max(lo, -xmax), g_hi = std::min(hi, xmax);
    if (g_lo < g_hi) d.granular += integrate_against_laplace(squared_error, g_lo, g_hi, sigma);
    if (lo < -xmax) d.overload += integrate_against_laplace(squared_error, lo, std::min(hi, -xmax), sigma);
    if (hi > xmax) d.overload += integrate_against_laplace(squared_error, std::max(lo, xmax), hi, sigma);
  }
  return d;
}

}  // namespace nuq::test
