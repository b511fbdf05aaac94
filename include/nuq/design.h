// Turning a quantizer description into a Codebook: the one entry point the CLI, the theory
// tables and the PTQ pipeline use. Method and bit width are separate fields of the description.
#pragma once

#include <cstddef>
#include <optional>
#include <vector>

#include "nuq/codebook.h"
#include "nuq/laplace.h"
#include "nuq/optimize.h"

namespace nuq {

struct DesignSpec {
  Method method = Method::Sptq;
  int bits = 2;
  // Number of levels; default 2^bits (3 for ternary). Uniform, mu-law and Lloyd-Max take any
  // N in 2..2^bits; SPTQ and MSPTQ are four-level designs.
  std::optional<std::size_t> levels;
  // Support threshold, in the units of the source (so x_max / sigma on the unit Laplacian).
  // Given: the design is made at it. Absent: `rule` (or the method's default) finds it.
  std::optional<double> xmax;
  std::optional<XmaxRule> rule;
  double alpha = 1.0;  // ternary: x_max = alpha * (xmax or the optimal 3/sqrt(2)), Table 6
  double mu = 255.0;   // mu-law compression
  // Initial value of the iterative rule: Delta(0) for SPTQ (default 1) and MSPTQ (default the
  // converged Delta of SPTQ, as in Algorithm 1), x_max(0) for uniform and ternary.
  std::optional<double> init;
  double sigma = 1.0;               // standard deviation of the Laplacian source
  double epsilon = kPaperEpsilon;  // stop criterion |x(i+1) - x(i)|, on the unit-variance iterate
};

struct DesignResult {
  Codebook codebook;
  Distortion distortion;  // exact, on Laplace(0, sigma^2)
  double sqnr_db = 0.0;   // SQNR_th
  // Iterates of the fixed-point rule in the units of the source, when one ran: Delta for
  // SPTQ/MSPTQ, x_max for uniform and ternary. Empty otherwise.
  FixedPointTrace trace;
};

std::size_t level_count(const DesignSpec& spec);

// The rule used when the spec gives neither x_max nor a rule: the paper's iteration for SPTQ and
// MSPTQ, the exact numerical optimum for uniform and mu-law, alpha * 3/sqrt(2) for ternary.
XmaxRule default_rule(const DesignSpec& spec);

DesignResult design(const DesignSpec& spec);

// A method nuq designs, by name: every Method but Custom (a codebook another writer recorded,
// which files carry but nothing designs). Throws nuq::Error listing the methods it designs.
Method parse_designed_method(const std::string& name);

// The spec's quantizer at a given support threshold (source units), whatever its rule says; a
// ternary spec's alpha scales it (x_max = alpha * xmax), as a given x_max in design().
Codebook codebook_at_xmax(const DesignSpec& spec, double xmax);

// The design's natural parameter is Delta for SPTQ and MSPTQ (x_max = 3 Delta) and x_max for the
// others: x_max = xmax_per_parameter(method) * parameter.
double xmax_per_parameter(Method method);

// D and SQNR_th over a range of the design's natural parameter: Delta for SPTQ and MSPTQ
// (x_max = 3 Delta, Fig. 6), x_max for the others (times alpha for ternary). `step` > 0; both
// ends included. Refused beyond kMaxLevelEvaluations (points times levels).
struct SweepPoint {
  double parameter;
  double xmax;
  Distortion distortion;
  double sqnr_db;
};
std::vector<SweepPoint> sweep(const DesignSpec& spec, double from, double to, double step);

// What a sweep or a mismatch curve may cost: points times the levels evaluated at each (a 16-bit
// design has 65,536). About 10-40 s of one core on the machines measured; a run asked for more is
// refused up front, rather than computing silently for minutes or hours.
inline constexpr double kMaxLevelEvaluations = double(1u << 28);
// Refuses, naming `what`, `points` evaluations of `levels` levels each beyond that budget.
void require_affordable(double points, double levels, const char* what);

}  // namespace nuq
