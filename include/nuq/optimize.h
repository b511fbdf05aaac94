// One-dimensional optimisation, the two ways the papers find a quantizer's optimum:
// a fixed-point iteration of a stationarity condition (Algorithm 1), and direct numerical
// minimisation of the exact distortion (the "numerical optimization" of Fig. 6).
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace nuq {

// The papers' stop criterion: two successive iterates differ by less than 1e-4 (Algorithm 1).
constexpr double kPaperEpsilon = 1e-4;

// x(0), x(1), ..., x(n): every iterate, so that a caller can print the convergence (Fig. 5).
struct FixedPointTrace {
  std::vector<double> sequence;
  int iterations() const { return static_cast<int>(sequence.size()) - 1; }
  double value() const { return sequence.back(); }
};

// Algorithm 1's loop: x(i+1) = step(x(i)) until |x(i+1) - x(i)| < epsilon. The iteration count
// is the number of updates, as the paper counts them (Table 2). Throws nuq::Error when an iterate
// is not finite or `max_iterations` pass without convergence; `what` names the rule in the message.
FixedPointTrace iterate_until_stable(const std::function<double(double)>& step, double x0,
                                     double epsilon, int max_iterations, const std::string& what);

struct ScalarMinimum {
  double argmin = 0.0;
  double value = 0.0;
};

// The minimum of f on [lo, limit]: a geometric grid over [lo, hi] finds the basin (continued in the
// same steps past hi, up to limit, while f still falls at its end), then Brent's method
// (Boost.Math) polishes it to about 1e-8 relative in x. The grid makes the search safe for
// functions that are not unimodal over the whole interval. Throws Error, naming `what`, when the
// minimum is not inside (at lo, or beyond limit) or f is flat to rounding (1e-12 relative).
ScalarMinimum minimize_scalar(const std::function<double(double)>& f, double lo, double hi, double limit,
                              const std::string& what, int grid_points = 96);

}  // namespace nuq
