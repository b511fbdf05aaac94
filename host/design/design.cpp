#include "nuq/design.h"

#include <cmath>
#include <cstdio>
#include <sstream>

#include "nuq/error.h"
#include "nuq/lloyd_max.h"
#include "nuq/mulaw.h"
#include "nuq/power_of_two.h"
#include "nuq/uniform.h"

namespace nuq {
namespace {

constexpr double kSqrt2 = 1.4142135623730951;
// The optimal support threshold of the ternary quantizer for the unit Laplacian, Jayant [20].
constexpr double kTernaryXmax = 3.0 / kSqrt2;
// Grid of the numerical search for x_max on the unit Laplacian: the optimum of a 16-bit uniform
// quantizer lies near 15, that of any two-bit design near 2; the search goes on past 64 (up to
// kMaxStandardDeviations) only for an optimum beyond it (mu-law with a large mu).
constexpr double kXmaxSearchLow = 1e-3, kXmaxSearchHigh = 64.0;
constexpr int kMaxIterations = 100000;
constexpr double kMaxSweepPoints = 1e6;
// The bounds of a support (or start) in standard deviations are kMin/kMaxStandardDeviations (codebook.h).
// mu-law's compression: below this it is a uniform quantizer in all but rounding (log1p(mu) / mu
// loses its digits).
constexpr double kMinMu = 1e-6;

// x_max (or alpha * x_max) in standard deviations, within what makes sense: `stated` says what is
// measured ("alpha * x_max = "), `of_sigma` the sigma it was measured by.
void require_standard_deviations(double deviations, const std::string& stated, const std::string& of_sigma = "") {
  NUQ_REQUIRE(deviations <= kMaxStandardDeviations, "design: ", stated, deviations, " standard deviations",
              of_sigma, "; at most ", kMaxStandardDeviations, " make sense");
  NUQ_REQUIRE(deviations >= kMinStandardDeviations, "design: ", stated, deviations, " standard deviations",
              of_sigma, "; at least ", kMinStandardDeviations, " make sense");
}

bool is_power_of_two(Method m) { return m == Method::Sptq || m == Method::Msptq; }

void require_positive(double value, const char* what) {
  NUQ_REQUIRE(std::isfinite(value) && value > 0.0, "design: ", what,
              " must be finite and positive, got ", value);
}

// The spec's quantizer on the unit-variance Laplacian at support threshold `xmax`.
Codebook unit_codebook(const DesignSpec& spec, double xmax, XmaxRule rule, int iterations) {
  Provenance provenance;
  provenance.method = spec.method;
  provenance.rule = rule;
  provenance.iterations = iterations;
  switch (spec.method) {
    case Method::Uniform:
      return uniform_codebook(level_count(spec), xmax, provenance);
    case Method::Ternary:
      provenance.alpha = spec.alpha;
      return uniform_codebook(level_count(spec), xmax, provenance);
    case Method::Sptq:
    case Method::Msptq:
      return power_of_two_codebook(spec.method, xmax / 3.0, rule, iterations);
    case Method::MuLaw:
      return mulaw_codebook(level_count(spec), xmax, spec.mu, provenance);
    case Method::LloydMax:
    case Method::Custom:
      break;
  }
  NUQ_REQUIRE(spec.method != Method::LloydMax,
              "design: lloyd-max places every threshold and level itself (the Lloyd iteration); a given x_max "
              "(--xmax, --support) does not apply to it");
  throw Error("design: method custom names a codebook whose levels another writer recorded in a file; nuq designs "
              "uniform, sptq, msptq, ternary, mulaw and lloyd-max");
}

// What the numerical search minimises. The uniform and mu-law quantizers are generated cell by cell
// rather than built as codebooks (bit for bit the same D, at a quarter to a half of the time for
// 16 bits).
double unit_distortion(const DesignSpec& spec, double xmax) {
  switch (spec.method) {
    case Method::Uniform:
    case Method::Ternary:
      return uniform_distortion(level_count(spec), xmax).total();
    case Method::MuLaw:
      return mulaw_distortion(level_count(spec), xmax, spec.mu).total();
    default:
      return laplace_distortion(unit_codebook(spec, xmax, XmaxRule::Given, 0), 1.0).total();
  }
}

struct UnitDesign {
  double xmax = 0.0;  // unit-variance support threshold
  FixedPointTrace trace;
};

UnitDesign iterate_unit_design(const DesignSpec& spec) {
  const double sigma = spec.sigma;
  switch (spec.method) {
    case Method::Sptq: {
      FixedPointTrace trace = sptq_iterate(spec.init ? *spec.init / sigma : 1.0, spec.epsilon);
      return {3.0 * trace.value(), trace};
    }
    case Method::Msptq: {
      // Algorithm 1 starts MSPTQ from the converged SPTQ step.
      const double start = spec.init ? *spec.init / sigma : sptq_iterate(1.0, spec.epsilon).value();
      FixedPointTrace trace = msptq_iterate(start, spec.epsilon);
      return {3.0 * trace.value(), trace};
    }
    case Method::Uniform:
    case Method::Ternary: {
      const std::size_t levels = level_count(spec);
      const double start = spec.init ? *spec.init / sigma : 1.0 + std::log(static_cast<double>(levels));
      require_positive(start, "the initial x_max");
      FixedPointTrace trace = iterate_until_stable(
          [&](double xmax) { return uniform_support_step(levels, xmax); }, start, spec.epsilon,
          kMaxIterations, "uniform support rule");
      return {trace.value(), trace};
    }
    default:
      throw Error("design: method " + to_string(spec.method) +
                  " has no iterative rule; give x_max or use the numeric rule");
  }
}

// A support threshold or starting value in the source's units, `what` naming it.
void require_support(double value, double sigma, const char* what) {
  require_positive(value, what);
  std::ostringstream stated, of_sigma;
  stated << what << " = " << value << " is ";
  of_sigma << " (sigma = " << sigma << ")";
  require_standard_deviations(value / sigma, stated.str(), of_sigma.str());
}

void validate(const DesignSpec& spec) {
  require_positive(spec.sigma, "sigma");
  NUQ_REQUIRE(spec.sigma >= kMinSigma && spec.sigma <= kMaxSigma, "design: sigma = ", spec.sigma, " is outside [",
              kMinSigma, ", ", kMaxSigma, "] (its variance and distortion would not fit in a double)");
  require_positive(spec.epsilon, "epsilon");
  // Algorithm 1 sets its epsilon to 1 and steps while it is >= the stop criterion: above 1 it would
  // return its start untouched, which no rule's design is.
  NUQ_REQUIRE(spec.epsilon <= 1.0, "design: epsilon = ", spec.epsilon, " is above 1, where Algorithm 1 (its "
              "epsilon starts at 1) stops before its first step");
  // Each method's own parameter is checked only for that method: the others ignore it.
  if (spec.method == Method::Ternary) require_positive(spec.alpha, "alpha");
  else NUQ_REQUIRE(spec.alpha == 1.0, "design: alpha scales the ternary quantizer only, not ", to_string(spec.method));
  if (spec.method == Method::MuLaw) {
    require_positive(spec.mu, "mu");
    NUQ_REQUIRE(spec.mu >= kMinMu, "design: mu = ", spec.mu, "; at least ", kMinMu,
                " (below, mu-law is the uniform quantizer: --method uniform)");
  }
  else NUQ_REQUIRE(spec.mu == DesignSpec{}.mu, "design: mu belongs to the mulaw quantizer, not ", to_string(spec.method));
  if (spec.xmax) require_support(*spec.xmax, spec.sigma, "x_max");
  if (spec.init) require_support(*spec.init, spec.sigma, "the initial value");
  level_count(spec);  // validates bits and levels for the method
  NUQ_REQUIRE(!(spec.xmax && spec.rule && *spec.rule != XmaxRule::Given),
              "design: give either x_max or an optimizer (", to_string(*spec.rule), "), not both");
}

}  // namespace

Method parse_designed_method(const std::string& name) {
  std::string choices;
  for (int m = 0; m < int(Method::Custom); ++m) {  // every method before Custom (codebook.h)
    const Method method = Method(m);
    if (name == to_string(method)) return method;
    choices += (choices.empty() ? "" : ", ") + to_string(method);
  }
  throw Error("unknown method '" + name + "' (choose one of: " + choices + ")" +
              (name == to_string(Method::Custom) ? "; custom names a codebook another writer recorded, which nothing "
                                                   "designs (Codebook.from_json reads one)"
                                                 : ""));
}

std::size_t level_count(const DesignSpec& spec) {
  NUQ_REQUIRE(spec.bits >= 1 && spec.bits <= 16, "design: bits must be in 1..16, got ", spec.bits);
  const std::size_t capacity = std::size_t{1} << spec.bits;
  std::size_t fixed = 0;  // the only level count a fixed-size design has
  if (is_power_of_two(spec.method)) fixed = 4;
  if (spec.method == Method::Ternary) fixed = 3;
  if (fixed) {
    // Levels first: `nuq design -N 8` derives bits = 3 from them, and the user gave levels. Given
    // at all, even as the design's own count, they are refused, as --mu and --alpha are for a
    // method they do not belong to: a count that changes nothing is an option misread.
    NUQ_REQUIRE(!spec.levels, "design: ", to_string(spec.method), " has ", fixed, " levels of its own, got levels = ",
                spec.levels.value_or(0), " (levels apply to uniform, mulaw and lloyd-max only)");
    NUQ_REQUIRE(spec.bits == 2, "design: ", to_string(spec.method), " is a two-bit design, got bits = ",
                spec.bits);
    return fixed;
  }
  const std::size_t levels = spec.levels.value_or(capacity);
  NUQ_REQUIRE(levels >= 2 && levels <= capacity, "design: ", levels, " levels do not fit in ",
              spec.bits, " bits (2..", capacity, ")");
  return levels;
}

XmaxRule default_rule(const DesignSpec& spec) {
  if (spec.xmax) return XmaxRule::Given;
  switch (spec.method) {
    case Method::Sptq:
    case Method::Msptq:
      return XmaxRule::Iterative;
    case Method::Ternary:
      return XmaxRule::Given;
    case Method::LloydMax:
      return XmaxRule::Lloyd;
    default:
      return XmaxRule::Numeric;
  }
}

DesignResult design(const DesignSpec& spec) {
  validate(spec);
  NUQ_REQUIRE(!spec.xmax || spec.method != Method::LloydMax,
              "design: lloyd-max places every threshold and level itself (the Lloyd iteration); a given x_max "
              "does not apply to it");
  const XmaxRule rule = spec.rule.value_or(default_rule(spec));
  NUQ_REQUIRE(spec.alpha == 1.0 || rule == XmaxRule::Given,
              "design: alpha scales a given x_max; it cannot be combined with an optimizer");
  NUQ_REQUIRE(rule != XmaxRule::Lloyd || spec.method == Method::LloydMax,
              "design: the lloyd rule belongs to the lloyd-max method");
  NUQ_REQUIRE(rule == XmaxRule::Lloyd || spec.method != Method::LloydMax,
              "design: lloyd-max places every threshold and level itself (the Lloyd iteration); the ",
              to_string(rule), " rule does not apply to it");
  FixedPointTrace trace;
  Codebook unit = [&] {
    switch (rule) {
      case XmaxRule::Given: {
        NUQ_REQUIRE(spec.xmax || spec.method == Method::Ternary, "design: ", to_string(spec.method),
                    " with a given support needs x_max");
        const double xmax = spec.xmax ? *spec.xmax / spec.sigma : kTernaryXmax;
        require_standard_deviations(spec.alpha * xmax, "alpha * x_max = ");
        return unit_codebook(spec, spec.alpha * xmax, rule, 0);
      }
      case XmaxRule::Iterative: {
        UnitDesign unit_design = iterate_unit_design(spec);
        trace = unit_design.trace;
        return unit_codebook(spec, unit_design.xmax, rule, trace.iterations());
      }
      case XmaxRule::Numeric: {
        std::ostringstream what;  // mu as given: 1e+300 is not "1000000...000"
        what << "design: " << to_string(spec.method) << " at " << spec.bits << " bits";
        if (spec.method == Method::MuLaw) what << ", mu = " << spec.mu;
        what << ", D over x_max in standard deviations";
        const ScalarMinimum best = minimize_scalar([&](double x) { return unit_distortion(spec, x); },
                                                   kXmaxSearchLow, kXmaxSearchHigh, kMaxStandardDeviations, what.str());
        return unit_codebook(spec, best.argmin, rule, 0);
      }
      case XmaxRule::Lloyd:
        break;
    }
    return lloyd_max_codebook(level_count(spec));
  }();
  for (double& value : trace.sequence) value *= spec.sigma;
  Codebook codebook = spec.sigma == 1.0 ? unit : unit.scaled(spec.sigma);
  const Distortion distortion = laplace_distortion(codebook, spec.sigma);
  return {codebook, distortion, sqnr_db(distortion.total(), spec.sigma), trace};
}

Codebook codebook_at_xmax(const DesignSpec& spec, double xmax) {
  validate(spec);
  require_support(xmax, spec.sigma, "x_max");
  // alpha scales the given x_max here as design() scales it (Table 6 (b)); it is 1 for every
  // method but ternary, whose provenance records it.
  const double unit_xmax = spec.alpha * xmax / spec.sigma;
  require_standard_deviations(unit_xmax, "alpha * x_max = ");
  const Codebook unit = unit_codebook(spec, unit_xmax, XmaxRule::Given, 0);
  return spec.sigma == 1.0 ? unit : unit.scaled(spec.sigma);
}

double xmax_per_parameter(Method method) { return is_power_of_two(method) ? 3.0 : 1.0; }

void require_affordable(double points, double levels, const char* what) {
  const double work = points * levels;
  if (work <= kMaxLevelEvaluations) return;
  char text[200];
  std::snprintf(text, sizeof text, "%.0f points times %.0f levels is %.2g evaluations of a level, over the %.2g",
                points, levels, work, kMaxLevelEvaluations);
  throw Error(std::string(what) + ": " + text + " one run takes (seconds; this would compute for minutes or hours): "
              "take a larger step, a narrower range or fewer bits");
}

std::vector<SweepPoint> sweep(const DesignSpec& spec, double from, double to, double step) {
  require_positive(from, "the sweep start");
  require_positive(step, "the sweep step");
  NUQ_REQUIRE(std::isfinite(to), "design: the sweep end must be finite, got ", to);
  NUQ_REQUIRE(to >= from, "design: the sweep end must be >= its start");
  NUQ_REQUIRE((to - from) / step < kMaxSweepPoints, "design: the sweep asks for more than ",
              kMaxSweepPoints, " points");
  const auto count = static_cast<long>(std::floor((to - from) / step + 1e-9)) + 1;
  NUQ_REQUIRE(spec.method != Method::LloydMax, "design: lloyd-max places every threshold and level itself (the Lloyd "
              "iteration), so it has no x_max to sweep; sweep uniform, sptq, msptq, ternary or mulaw");
  validate(spec);
  require_affordable(double(count), double(level_count(spec)), "design: the sweep");
  std::vector<SweepPoint> points;
  for (long i = 0; i < count; ++i) {
    const double parameter = from + static_cast<double>(i) * step;
    const Codebook codebook = codebook_at_xmax(spec, xmax_per_parameter(spec.method) * parameter);
    const Distortion d = laplace_distortion(codebook, spec.sigma);
    points.push_back({parameter, codebook.xmax(), d, sqnr_db(d.total(), spec.sigma)});
  }
  return points;
}

}  // namespace nuq
