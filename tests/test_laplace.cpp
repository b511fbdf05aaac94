// The closed-form Laplacian distortion against adaptive numerical integration, and its
// behaviour on the inputs that break naive formulas (narrow cells, tails, bad sigma).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "numeric_reference.h"
#include "nuq/error.h"
#include "nuq/laplace.h"
#include "nuq/mulaw.h"
#include "nuq/uniform.h"

namespace nuq {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

struct RandomQuantizer {
  std::vector<double> thresholds, levels;
  double xmax, sigma;
};

// Arbitrary quantizers: asymmetric, levels anywhere (even outside their cells), any sigma.
RandomQuantizer random_quantizer(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> count(2, 12);
  std::uniform_real_distribution<double> position(-6.0, 6.0), log_sigma(std::log(0.05), std::log(20.0));
  RandomQuantizer q;
  q.sigma = std::exp(log_sigma(rng));
  const int n = count(rng);
  for (int i = 0; i + 1 < n; ++i) q.thresholds.push_back(q.sigma * position(rng));
  for (int i = 0; i < n; ++i) q.levels.push_back(q.sigma * position(rng));
  std::sort(q.thresholds.begin(), q.thresholds.end());
  std::sort(q.levels.begin(), q.levels.end());
  q.xmax = q.sigma * std::abs(position(rng));
  return q;
}

TEST(LaplaceDistortion, ClosedFormMatchesNumericalIntegrationOnRandomQuantizers) {
  std::mt19937_64 rng(20221);
  for (int trial = 0; trial < 200; ++trial) {
    const RandomQuantizer q = random_quantizer(rng);
    const Distortion exact = laplace_distortion(q.thresholds, q.levels, q.xmax, q.sigma);
    const Distortion numeric = test::numeric_distortion(q.thresholds, q.levels, q.xmax, q.sigma);
    SCOPED_TRACE("trial " + std::to_string(trial) + ", sigma " + std::to_string(q.sigma));
    EXPECT_NEAR(exact.total(), numeric.total(), 1e-9 * numeric.total());
    EXPECT_NEAR(exact.granular, numeric.granular, 1e-9 * numeric.total());
    EXPECT_NEAR(exact.overload, numeric.overload, 1e-9 * numeric.total());
  }
}

TEST(LaplaceDistortion, NarrowCellsKeepTheirRelativeAccuracy) {
  // A 16-bit cell is ~1e-4 wide: its squared error (~1e-13) is the difference of O(1) terms in
  // the textbook antiderivative. The closed form used here must not lose it.
  const double lambda = closed_form::laplace_rate(1.0);
  for (double width : {1e-2, 1e-4, 1e-6}) {
    for (double a : {-3.0, -0.5 * width, 0.0, 0.7, 5.0}) {
      const double b = a + width, level = a + 0.37 * width;
      const double exact = closed_form::interval_moments(a, b, level, lambda).squared_error;
      const double numeric =
          test::integrate_against_laplace([&](double x) { return (x - level) * (x - level); }, a, b, 1.0);
      EXPECT_NEAR(exact, numeric, 1e-9 * numeric) << "cell [" << a << ", " << b << "]";
      const double moment = closed_form::interval_moments(a, b, level, lambda).error_moment;
      const double numeric_moment =
          test::integrate_against_laplace([&](double x) { return x - level; }, a, b, 1.0);
      EXPECT_NEAR(moment, numeric_moment, 1e-8 * std::abs(numeric_moment) + 1e-300) << "cell [" << a << ", " << b << "]";
    }
  }
}

TEST(LaplaceDistortion, SixteenBitUniformIsCloseToTheGranularApproximation) {
  // With 65536 levels the granular distortion tends to Delta^2/12 times the granular probability.
  const Codebook q = uniform_codebook(65536, 12.0);
  const Distortion d = laplace_distortion(q, 1.0);
  const double step = 24.0 / 65536.0;
  const double approximation = step * step / 12.0 * laplace_within_support(12.0);
  EXPECT_NEAR(d.granular, approximation, 1e-6 * approximation);
}

TEST(LaplaceDistortion, ScalesWithTheVariance) {
  const std::vector<double> t{-1.0, 0.2, 1.5}, y{-2.0, -0.4, 0.8, 2.5};
  const double d1 = laplace_distortion(t, y, 2.0, 1.0).total();
  for (double sigma : {0.01, 0.3, 7.0}) {
    std::vector<double> ts = t, ys = y;
    for (double& v : ts) v *= sigma;
    for (double& v : ys) v *= sigma;
    EXPECT_NEAR(laplace_distortion(ts, ys, 2.0 * sigma, sigma).total(), sigma * sigma * d1,
                1e-13 * sigma * sigma);
  }
}

TEST(LaplaceDistortion, SingleCellIsTheSecondMomentAboutTheLevel) {
  // Two levels at +-a with threshold 0: D = E[(|X| - a)^2] = sigma^2 - 2 a E|X| + a^2, E|X| = sigma/sqrt(2).
  for (double a : {0.1, 0.70710678118654752, 3.0}) {
    const double expected = 1.0 - 2.0 * a / std::sqrt(2.0) + a * a;
    EXPECT_NEAR(laplace_distortion({0.0}, {-a, a}, 1.0, 1.0).total(), expected, 1e-15);
  }
}

TEST(LaplaceMoments, ProbabilityAndMeanOverTheWholeLine) {
  for (double sigma : {0.5, 1.0, 4.0}) {
    const IntervalMoments all = laplace_moments(-kInf, kInf, sigma);
    EXPECT_NEAR(all.probability, 1.0, 1e-15);
    EXPECT_NEAR(all.first_moment, 0.0, 1e-15);
    const IntervalMoments right = laplace_moments(0.0, kInf, sigma);
    EXPECT_NEAR(right.first_moment, sigma / (2.0 * std::sqrt(2.0)), 1e-15);  // E[X; X > 0] = E|X|/2
    EXPECT_NEAR(laplace_moments(-1.3, 0.4, sigma).probability,
                test::integrate_against_laplace([](double) { return 1.0; }, -1.3, 0.4, sigma), 1e-14);
  }
  EXPECT_NEAR(laplace_within_support(2.5512), 1.0 - std::exp(-std::sqrt(2.0) * 2.5512), 1e-15);
}

TEST(LaplaceDistortion, RejectsNumbersThatMakeNoSense) {
  const std::vector<double> t{0.0}, y{-1.0, 1.0};
  for (double sigma : {0.0, -1.0, std::nan(""), kInf})
    EXPECT_THROW(laplace_distortion(t, y, 1.0, sigma), Error) << sigma;
  EXPECT_THROW(laplace_distortion(t, {1.0}, 1.0, 1.0), Error);
  EXPECT_THROW(laplace_distortion(t, y, std::nan(""), 1.0), Error);
  EXPECT_THROW(sqnr_db(0.0), Error);
  EXPECT_THROW(laplace_moments(1.0, 0.0, 1.0), Error);
}

TEST(Sqnr, IsTenLogOfSignalOverNoise) {
  EXPECT_DOUBLE_EQ(sqnr_db(0.1), 10.0);
  EXPECT_DOUBLE_EQ(sqnr_db(0.04, 2.0), 20.0);
}

// The numerical search for x_max evaluates D cell by cell rather than through a codebook: it must
// find what the codebook gives, to the bit, or the designs it finds would move.
TEST(LaplaceDistortion, GeneratedCellsGiveTheCodebooksDistortionBitForBit) {
  std::mt19937_64 rng(2026);
  std::uniform_real_distribution<double> log_xmax(std::log(1e-3), std::log(64.0)), log_sigma(std::log(1e-3), std::log(1e3));
  const std::size_t level_counts[] = {2, 3, 4, 5, 16, 255, 256, 4097, 65536};
  for (const std::size_t levels : level_counts)
    for (int trial = 0; trial < 6; ++trial) {
      const double xmax = std::exp(log_xmax(rng)), sigma = std::exp(log_sigma(rng));
      SCOPED_TRACE(testing::Message() << levels << " levels, x_max " << xmax << ", sigma " << sigma);
      const Distortion built = laplace_distortion(uniform_codebook(levels, xmax), sigma);
      const Distortion generated = uniform_distortion(levels, xmax, sigma);
      EXPECT_EQ(generated.granular, built.granular);
      EXPECT_EQ(generated.overload, built.overload);
      for (const double mu : {1e-6, 5.0, 255.0, 1e200}) {
        const Distortion mulaw_built = laplace_distortion(mulaw_codebook(levels, xmax, mu), sigma);
        const Distortion mulaw_generated = mulaw_distortion(levels, xmax, mu, sigma);
        EXPECT_EQ(mulaw_generated.granular, mulaw_built.granular) << "mu " << mu;
        EXPECT_EQ(mulaw_generated.overload, mulaw_built.overload) << "mu " << mu;
      }
    }
  // What the codebooks refuse, the generated cells refuse alike.
  EXPECT_THROW(uniform_distortion(4, 0.0), Error);
  EXPECT_THROW(uniform_distortion(1, 1.0), Error);
  EXPECT_THROW(uniform_distortion(4, 1.0, -1.0), Error);
  EXPECT_THROW(mulaw_distortion(4, 1.0, 0.0), Error);
  EXPECT_THROW(mulaw_distortion(4, std::nan(""), 255.0), Error);
  // x_max / mu underflows to zero: every level expands to +-0, which no codebook holds.
  EXPECT_THROW(mulaw_codebook(16, 1e-300, 1e300), Error);
  EXPECT_THROW(mulaw_distortion(16, 1e-300, 1e300), Error);
}

}  // namespace
}  // namespace nuq
