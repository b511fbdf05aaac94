// SPTQ and MSPTQ against the paper's printed digits: Table 2, the MSPTQ iteration, the SQNR_th
// rows of Tables 3 and 5, the closed forms (15) and (25), and the optimality claims of Fig. 6.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "nuq/design.h"
#include "nuq/error.h"
#include "nuq/laplace.h"
#include "nuq/power_of_two.h"
#include "nuq/uniform.h"

namespace nuq {
namespace {

constexpr double kSqrt2 = 1.4142135623730951;

double round4(double x) { return std::round(x * 1e4) / 1e4; }

double sqnr_at(Method method, double xmax) {
  DesignSpec spec;
  spec.method = method;
  return laplace_sqnr_db(codebook_at_xmax(spec, xmax));
}

TEST(Sptq, Table2IterationsFromEveryInitialStep) {
  const double w_min = -7.063787, w_max = 4.8371024;
  const std::vector<std::pair<double, int>> columns = {
      {1.0, 40}, {w_max / 3.0, 39}, {-w_min / 3.0, 40}, {1.9605 / 3.0, 41}, {2.1748 / 3.0, 41}};
  for (const auto& [delta0, iterations] : columns) {
    const FixedPointTrace trace = sptq_iterate(delta0);
    EXPECT_EQ(trace.iterations(), iterations) << "Delta(0) = " << delta0;
    EXPECT_EQ(round4(trace.value()), 0.8504) << "Delta(0) = " << delta0;
    // The paper prints x_max = 3 x 0.8504 = 2.5512; the stop rule leaves Delta within ~1e-4.
    EXPECT_NEAR(3.0 * trace.value(), 2.5512, 2.5e-4);
    EXPECT_DOUBLE_EQ(trace.sequence.front(), delta0);
  }
}

TEST(Msptq, StartedFromTheSptqStepConvergesInSevenIterations) {
  const FixedPointTrace trace = msptq_iterate(sptq_iterate(1.0).value());
  EXPECT_EQ(trace.iterations(), 7);
  EXPECT_EQ(round4(trace.value()), 0.9021);
  EXPECT_NEAR(3.0 * trace.value(), 2.7063, 2.5e-4);
}

TEST(Sptq, Table3TheoreticalSqnr) {
  const std::vector<std::pair<double, double>> rows = {
      {4.8371024, 4.4438}, {7.063787, 1.6044}, {2.5512, 6.9790}, {1.9605, 6.5437}, {2.1748, 6.8086}};
  for (const auto& [xmax, sqnr] : rows) EXPECT_NEAR(sqnr_at(Method::Sptq, xmax), sqnr, 1e-4) << xmax;
}

TEST(Msptq, Table5TheoreticalSqnr) {
  const std::vector<std::pair<double, double>> rows = {
      {4.8371024, 5.0581}, {7.063787, 1.9158}, {2.5512, 7.4890}, {2.7063, 7.5165}};
  for (const auto& [xmax, sqnr] : rows) EXPECT_NEAR(sqnr_at(Method::Msptq, xmax), sqnr, 1e-4) << xmax;
}

TEST(PowerOfTwo, Table1ThresholdsAndLevels) {
  const Codebook sptq = power_of_two_codebook(Method::Sptq, 0.8);
  EXPECT_EQ(sptq.thresholds(), (std::vector<double>{-0.8, 0.0, 0.8}));
  EXPECT_EQ(sptq.levels(), (std::vector<double>{-1.6, -0.4, 0.4, 1.6}));
  EXPECT_DOUBLE_EQ(sptq.xmax(), 2.4000000000000004);
  const Codebook msptq = power_of_two_codebook(Method::Msptq, 0.8);
  EXPECT_EQ(msptq.thresholds(), (std::vector<double>{-1.0, 0.0, 1.0}));
  EXPECT_EQ(msptq.levels(), sptq.levels());
  EXPECT_THROW(power_of_two_codebook(Method::Uniform, 0.8), Error);
  EXPECT_THROW(power_of_two_codebook(Method::Sptq, 0.0), Error);
}

TEST(PowerOfTwo, PaperClosedFormsEqualTheGeneralExactDistortion) {
  for (double delta = 0.05; delta < 6.0; delta += 0.0731) {
    const double sptq = laplace_distortion(power_of_two_codebook(Method::Sptq, delta)).total();
    const double msptq = laplace_distortion(power_of_two_codebook(Method::Msptq, delta)).total();
    EXPECT_NEAR(sptq_distortion_eq15(delta), sptq, 1e-13) << delta;
    EXPECT_NEAR(msptq_distortion_eq25(delta), msptq, 1e-13) << delta;
  }
}

TEST(PowerOfTwo, IterativeRulesAreStationaryPointsOfTheClosedForms) {
  // At the fixed point of (18), dD/dDelta of (15) vanishes; likewise (28) for (25).
  auto derivative = [](double (*d)(double), double x) { return (d(x + 1e-6) - d(x - 1e-6)) / 2e-6; };
  const double delta = sptq_iterate(1.0, 1e-14).value();
  EXPECT_NEAR(sptq_step_eq18(delta), delta, 1e-13);
  EXPECT_NEAR(derivative(sptq_distortion_eq15, delta), 0.0, 1e-9);
  const double delta_mod = msptq_iterate(delta, 1e-14).value();
  EXPECT_NEAR(derivative(msptq_distortion_eq25, delta_mod), 0.0, 1e-9);
}

TEST(PowerOfTwo, NumericOptimaAgreeWithTheIterativeOnes) {
  // Fig. 6: the iterated steps are the minima of D found by direct minimisation.
  for (Method method : {Method::Sptq, Method::Msptq}) {
    DesignSpec spec;
    spec.method = method;
    spec.rule = XmaxRule::Numeric;
    const double numeric = design(spec).codebook.xmax();
    spec.rule = XmaxRule::Iterative;
    spec.epsilon = 1e-12;
    const double iterative = design(spec).codebook.xmax();
    EXPECT_NEAR(numeric, iterative, 1e-6) << to_string(method);
  }
  DesignSpec spec;
  spec.rule = XmaxRule::Numeric;
  spec.method = Method::Sptq;
  EXPECT_EQ(round4(design(spec).codebook.xmax()), 2.5512);
  spec.method = Method::Msptq;
  EXPECT_EQ(round4(design(spec).codebook.xmax()), 2.7063);
}

TEST(Sptq, SecondDerivativeIsEquation19AndPositive) {
  // Section 3: eq. (19) is the second derivative of eq. (15); it is smallest at
  // Delta_1 = (5 - sqrt 7)/sqrt 2 and positive there, so D^SPTQ is convex. Eq. (19) evaluates to
  // 0.2656 at Delta_1; the paper prints 0.263, a slip that does not change the conclusion.
  auto eq19 = [](double d) {
    return 0.5 * (1.0 + 3.0 * std::exp(-kSqrt2 * d) * ((d - 2.0 * kSqrt2) * (d - 2.0 * kSqrt2) - 3.0));
  };
  const double delta1 = (5.0 - std::sqrt(7.0)) / kSqrt2, h = 1e-4;
  auto second = [&](double x) {
    return (sptq_distortion_eq15(x + h) - 2.0 * sptq_distortion_eq15(x) + sptq_distortion_eq15(x - h)) / (h * h);
  };
  for (double x = 0.1; x < 8.0; x += 0.05) {
    EXPECT_NEAR(second(x), eq19(x), 1e-6) << x;
    EXPECT_GE(eq19(x), eq19(delta1)) << x;
  }
  EXPECT_NEAR(eq19(delta1), 0.2656, 1e-4);
  EXPECT_NEAR(eq19(delta1), 0.263, 3e-3);
}

TEST(Msptq, MidpointScaleRuleFindsTheSameOptimumAsEquation28) {
  // MSPTQ's threshold is the midpoint of its levels, so nuq's generic scale rule applies to it;
  // it was derived independently of eq. (28) and must land on the same Delta_mod.
  double xmax = 3.0;
  for (int i = 0; i < 200; ++i)
    xmax = midpoint_scale_step(power_of_two_codebook(Method::Msptq, xmax / 3.0));
  EXPECT_NEAR(xmax / 3.0, msptq_iterate(0.85, 1e-14).value(), 1e-10);
}

TEST(PowerOfTwo, IterationErrorsAreReported) {
  EXPECT_THROW(sptq_iterate(0.0), Error);
  EXPECT_THROW(sptq_iterate(-1.0), Error);
  EXPECT_THROW(sptq_iterate(1.0, 0.0), Error);
  EXPECT_THROW(iterate_until_stable([](double x) { return 2.0 * x; }, 1.0, 1e-4, 50, "doubling"), Error);
  EXPECT_THROW(iterate_until_stable([](double) { return std::nan(""); }, 1.0, 1e-4, 50, "nan"), Error);
  // A cycle (an iterate equal to an earlier one) can never converge: said at its first repeat, with
  // the smallest change in the cycle, not after max_iterations.
  int steps = 0;
  const auto three_cycle = [&](double x) { return ++steps, x == 1.0 ? 2.0 : x == 2.0 ? 2.5 : 1.0; };
  try {
    iterate_until_stable(three_cycle, 1.0, 0.1, 100000, "cycling");
    ADD_FAILURE() << "a cycle converged";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "cycling: no convergence to 0.1: iterate 3 repeats iterate 0 (1), so the iterates cycle for "
                           "ever, no change in the cycle smaller than 0.5; epsilon is below the precision this rule "
                           "reaches in double");
  }
  EXPECT_EQ(steps, 3);
  // Slow convergence is not a cycle: every iterate is new until the change falls below epsilon,
  // 0.001 * 0.999^(n-1) < 1e-9 first at n = 13810 (x0 and 13810 iterates).
  EXPECT_EQ(iterate_until_stable([](double x) { return 0.999 * x; }, 1.0, 1e-9, 100000, "slow").sequence.size(), 13811u);
}

}  // namespace
}  // namespace nuq
