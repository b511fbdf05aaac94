// The other designs (uniform, ternary, mu-law, Lloyd-Max) and the design() entry point.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "nuq/design.h"
#include "nuq/error.h"
#include "nuq/laplace.h"
#include "nuq/lloyd_max.h"
#include "nuq/mulaw.h"
#include "nuq/power_of_two.h"
#include "nuq/uniform.h"

namespace nuq {
namespace {

double round4(double x) { return std::round(x * 1e4) / 1e4; }

DesignSpec spec_for(Method method, int bits = 2) {
  DesignSpec spec;
  spec.method = method;
  spec.bits = bits;
  return spec;
}

TEST(Uniform, CodebookHasEqualCellsAndMidpointLevels) {
  const Codebook c = uniform_codebook(4, 2.0);
  EXPECT_EQ(c.thresholds(), (std::vector<double>{-1.0, 0.0, 1.0}));
  EXPECT_EQ(c.levels(), (std::vector<double>{-1.5, -0.5, 0.5, 1.5}));
  const Codebook odd = uniform_codebook(5, 2.5);
  EXPECT_EQ(odd.levels(), (std::vector<double>{-2.0, -1.0, 0.0, 1.0, 2.0}));
  EXPECT_TRUE(odd.symmetric());
  EXPECT_EQ(uniform_codebook(65536, 1.0).bits(), 16);
  EXPECT_EQ(uniform_codebook(3, 1.0).bits(), 2);
  EXPECT_THROW(uniform_codebook(1, 1.0), Error);
  EXPECT_THROW(uniform_codebook(65537, 1.0), Error);
  EXPECT_THROW(uniform_codebook(4, 0.0), Error);
}

TEST(Uniform, Table4TheoreticalSqnr) {
  const std::vector<std::pair<double, double>> rows = {
      {4.8371024, 1.9360}, {7.063787, -2.0066}, {2.5512, 6.8237}, {1.9605, 6.9787}, {2.1748, 7.0707}};
  for (const auto& [xmax, sqnr] : rows)
    EXPECT_NEAR(laplace_sqnr_db(codebook_at_xmax(spec_for(Method::Uniform), xmax)), sqnr, 1e-4) << xmax;
}

TEST(Uniform, MseOptimalFourLevelSupportIsJayants) {
  const DesignResult r = design(spec_for(Method::Uniform));
  EXPECT_EQ(r.codebook.provenance().rule, XmaxRule::Numeric);
  EXPECT_EQ(round4(r.codebook.xmax()), 2.1748);
}

TEST(Uniform, IterativeRuleReachesTheNumericOptimum) {
  for (int bits : {1, 2, 3, 4, 6, 8}) {
    DesignSpec spec = spec_for(Method::Uniform, bits);
    spec.rule = XmaxRule::Numeric;
    const double numeric = design(spec).codebook.xmax();
    spec.rule = XmaxRule::Iterative;
    spec.epsilon = 1e-11;
    const DesignResult iterative = design(spec);
    EXPECT_NEAR(iterative.codebook.xmax(), numeric, 1e-6 * numeric) << bits << " bits";
    EXPECT_GT(iterative.trace.iterations(), 0);
  }
}

TEST(Uniform, IterativeRuleAtThePapersStopCriterionIsWithin1e4OfTheOptimum) {
  for (int bits = 1; bits <= 16; ++bits) {
    DesignSpec spec = spec_for(Method::Uniform, bits);
    spec.rule = XmaxRule::Numeric;
    const double numeric = design(spec).codebook.xmax();
    spec.rule = XmaxRule::Iterative;  // epsilon 1e-4, as in Algorithm 1
    const DesignResult iterative = design(spec);
    EXPECT_NEAR(iterative.codebook.xmax(), numeric, 1e-4) << bits << " bits";
    EXPECT_LE(iterative.trace.iterations(), 20) << bits << " bits";
  }
}

TEST(Ternary, IterativeOptimumIsJayants3OverSqrt2) {
  DesignSpec spec = spec_for(Method::Ternary);
  spec.rule = XmaxRule::Iterative;
  spec.epsilon = 1e-10;
  EXPECT_NEAR(design(spec).codebook.xmax(), 3.0 / std::sqrt(2.0), 1e-4);
}

TEST(Ternary, Table6TheoreticalSqnr) {
  const DesignSpec ternary = spec_for(Method::Ternary);
  const std::vector<std::pair<double, double>> part_a = {
      {4.8371024, 2.7275}, {7.063787, 1.1827}, {2.5512, 5.5681}, {1.9605, 5.7436}, {2.1748, 5.7762}};
  for (const auto& [xmax, sqnr] : part_a)
    EXPECT_NEAR(laplace_sqnr_db(codebook_at_xmax(ternary, xmax)), sqnr, 1e-4) << xmax;
  const std::vector<std::pair<double, double>> part_b = {{0.25, 2.1424}, {0.5, 4.0509}, {0.75, 5.3544},
                                                         {1.0, 5.7800},  {1.25, 5.4708}, {1.5, 4.8068},
                                                         {1.75, 4.0695}};
  for (const auto& [alpha, sqnr] : part_b) {
    DesignSpec spec = ternary;
    spec.alpha = alpha;
    const DesignResult r = design(spec);
    EXPECT_NEAR(r.sqnr_db, sqnr, 1e-4) << "alpha " << alpha;
    EXPECT_NEAR(r.codebook.xmax(), alpha * 3.0 / std::sqrt(2.0), 1e-15);
    EXPECT_EQ(r.codebook.size(), 3u);
  }
}

TEST(Ternary, IsTheThreeLevelUniformQuantizer) {
  const Codebook t = codebook_at_xmax(spec_for(Method::Ternary), 3.0);
  EXPECT_EQ(t.levels(), (std::vector<double>{-2.0, 0.0, 2.0}));
  EXPECT_EQ(t.thresholds(), (std::vector<double>{-1.0, 1.0}));
  DesignSpec three_bits = spec_for(Method::Ternary, 3);
  EXPECT_THROW(design(three_bits), Error);
}

// alpha scales a given x_max wherever it is given: design(), codebook_at_xmax (what `nuq quantize
// --xmax/--support` uses) and the sweep agree, and the provenance records it.
TEST(Ternary, AlphaScalesAGivenXmaxEverywhere) {
  DesignSpec spec = spec_for(Method::Ternary);
  spec.alpha = 2.0;
  spec.xmax = 1.0;
  const Codebook designed = design(spec).codebook;
  spec.xmax.reset();
  const Codebook given = codebook_at_xmax(spec, 1.0);
  EXPECT_EQ(designed.xmax(), 2.0);
  EXPECT_EQ(given.levels(), designed.levels());
  EXPECT_EQ(given.levels(), (std::vector<double>{-4.0 / 3.0, 0.0, 4.0 / 3.0}));
  EXPECT_EQ(*given.provenance().alpha, 2.0);
  const auto points = sweep(spec, 0.5, 1.0, 0.5);
  ASSERT_EQ(points.size(), 2u);
  EXPECT_EQ(points[1].xmax, 2.0);
  EXPECT_EQ(points[1].distortion.total(), laplace_distortion(given, 1.0).total());
}

TEST(Design, AFixedSizeDesignGivenLevelsNamesThem) {
  DesignSpec spec = spec_for(Method::Sptq, 3);
  spec.levels = 8;  // `nuq design -m sptq -N 8` derives bits = 3 from the levels
  try {
    design(spec);
    ADD_FAILURE() << "sptq with 8 levels gave a design";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sptq has 4 levels of its own, got levels = 8"), std::string::npos)
        << e.what();
  }
  // The design's own count too: it changes nothing, so giving it is a misread option.
  for (const auto& [method, own] : {std::pair{Method::Sptq, 4}, {Method::Msptq, 4}, {Method::Ternary, 3}}) {
    DesignSpec same = spec_for(method, 2);
    same.levels = std::size_t(own);
    EXPECT_THROW(design(same), Error) << to_string(method);
  }
}

TEST(LloydMax, FourLevelsMatchTheLiterature) {
  // Max (1960) / Jayant [20] for the unit Laplacian: t = 1.1269, y = 0.4198, 1.8340; 7.54 dB.
  const Codebook c = lloyd_max_codebook(4);
  EXPECT_NEAR(c.thresholds()[2], 1.1269, 1e-4);
  EXPECT_NEAR(c.levels()[2], 0.4198, 1e-4);
  EXPECT_NEAR(c.levels()[3], 1.8340, 1e-4);
  EXPECT_NEAR(laplace_sqnr_db(c), 7.54, 0.01);
  EXPECT_TRUE(c.symmetric());
}

TEST(LloydMax, TwoLevelsAreTheMeanAbsoluteValue) {
  // N = 2: y = E|X| = 1/sqrt(2), D = 1 - 1/2 exactly.
  const Codebook c = lloyd_max_codebook(2);
  EXPECT_NEAR(c.levels()[1], 1.0 / std::sqrt(2.0), 1e-12);
  EXPECT_NEAR(laplace_distortion(c).total(), 0.5, 1e-12);
}

TEST(LloydMax, EightLevelsMatchTheLiterature) {
  EXPECT_NEAR(laplace_sqnr_db(lloyd_max_codebook(8)), 12.64, 0.01);
}

// At 10, 12 and 16 bits (65,536 levels, the widest code nuq stores): every level the centroid of
// its cell to 1e-12 (checked with the closed-form moments, independently of the solver), within
// a handful of Newton steps rather than Lloyd's millions of passes, and the SQNR at the
// Panter-Dite high-resolution limit for the unit Laplacian, D = (1/12)(int p^(1/3))^3 / N^2 =
// 4.5 / N^2 (53.674 dB at 10 bits, 89.798 at 16), closer the more levels there are.
TEST(LloydMax, WideCodesReachTheFixedPointAndThePanterDiteLimit) {
  for (const int bits : {10, 12, 16}) {
    const std::size_t n = std::size_t{1} << bits;
    const Codebook c = lloyd_max_codebook(n);
    EXPECT_LT(c.provenance().iterations, 20) << bits << " bits";
    const std::vector<double>& t = c.thresholds();
    const std::vector<double>& y = c.levels();
    for (std::size_t k = 0; k < n; ++k) {
      const IntervalMoments m = laplace_moments(k == 0 ? -INFINITY : t[k - 1], k + 1 == n ? INFINITY : t[k], 1.0);
      ASSERT_NEAR(m.first_moment / m.probability, y[k], 1e-11) << "level " << k << " of " << n;
      if (k + 1 < n) {
        ASSERT_DOUBLE_EQ(t[k], 0.5 * (y[k] + y[k + 1])) << "threshold " << k << " of " << n;
      }
    }
    EXPECT_TRUE(c.symmetric());
    const double panter_dite = 10.0 * std::log10(double(n) * double(n) / 4.5);
    EXPECT_NEAR(laplace_sqnr_db(c), panter_dite, bits == 16 ? 0.001 : 0.01) << bits << " bits";
    EXPECT_GT(laplace_sqnr_db(c), laplace_sqnr_db(lloyd_max_codebook(n / 2)) + 5.9);  // ~6 dB a bit
  }
  EXPECT_EQ(kMaxLloydMaxLevels, std::size_t{1} << 16);
}

TEST(LloydMax, IsALocalMinimum) {
  const Codebook c = lloyd_max_codebook(4);
  const double d = laplace_distortion(c).total();
  for (std::size_t k = 0; k < c.size(); ++k)
    for (double nudge : {-1e-3, 1e-3}) {
      std::vector<double> levels = c.levels();
      levels[k] += nudge;
      EXPECT_GT(laplace_distortion(c.thresholds(), levels, c.xmax(), 1.0).total(), d);
    }
}

TEST(LloydMax, NoTwoBitDesignExceedsIt) {
  const double ceiling = laplace_sqnr_db(lloyd_max_codebook(4));
  for (Method method : {Method::Uniform, Method::Sptq, Method::Msptq, Method::Ternary, Method::MuLaw}) {
    for (double mu : {0.5, 5.0, 255.0}) {
      DesignSpec spec = spec_for(method);
      if (method == Method::MuLaw) spec.mu = mu;  // the others refuse a parameter they do not have
      for (double xmax = 0.2; xmax < 10.0; xmax += 0.01)
        ASSERT_LE(laplace_sqnr_db(codebook_at_xmax(spec, xmax)), ceiling)
            << to_string(method) << " at x_max " << xmax;
      if (method != Method::MuLaw) break;
    }
  }
}

TEST(MuLaw, TwoBitMu255AtItsOptimumGives4Point44dB) {
  DesignSpec spec = spec_for(Method::MuLaw);
  spec.mu = 255.0;
  const DesignResult r = design(spec);
  EXPECT_NEAR(r.sqnr_db, 4.44, 0.005);
  EXPECT_EQ(r.codebook.provenance().rule, XmaxRule::Numeric);
  EXPECT_EQ(*r.codebook.provenance().mu, 255.0);
}

// One bit: the levels are +-(x_max / mu)(sqrt(1 + mu) - 1), and the optimum puts them at the
// half-line's centroid 1/sqrt(2) (D = 1/2), so x_max = mu / (sqrt(2) (sqrt(1 + mu) - 1)): 71.4 sigma
// at mu = 1e4, 708 at 1e6, beyond the 64 of the search's first grid.
TEST(MuLaw, OneBitOptimumIsExactEvenFarBeyond64Sigma) {
  for (double mu : {255.0, 1e4, 1e6, 1e8}) {
    DesignSpec spec = spec_for(Method::MuLaw, 1);
    spec.mu = mu;
    const DesignResult r = design(spec);
    const double exact = mu / (std::sqrt(2.0) * (std::sqrt(1.0 + mu) - 1.0));
    EXPECT_NEAR(r.codebook.xmax() / exact, 1.0, 1e-6) << "mu " << mu;
    EXPECT_NEAR(r.sqnr_db, 10.0 * std::log10(2.0), 1e-9) << "mu " << mu;
  }
}

TEST(MuLaw, AMuWithNoOptimumInReachIsAnError) {
  for (double mu : {1e13, 1e300}) {  // optimum at 2.2e6 sigma; at 1e300 D is 1 to rounding everywhere
    DesignSpec spec = spec_for(Method::MuLaw, 1);
    spec.mu = mu;
    try {
      design(spec);
      ADD_FAILURE() << "mu " << mu << " gave a design";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("no usable optimum"), std::string::npos) << e.what();
    }
  }
}

TEST(MuLaw, SmallMuTendsToTheUniformQuantizer) {
  const Codebook mu_law = mulaw_codebook(8, 3.0, 1e-9);
  const Codebook uniform = uniform_codebook(8, 3.0);
  for (std::size_t k = 0; k < 8; ++k) EXPECT_NEAR(mu_law.levels()[k], uniform.levels()[k], 1e-8);
  EXPECT_THROW(mulaw_codebook(4, 3.0, 0.0), Error);
}

TEST(Design, SigmaScalesTheDesignAndKeepsTheSqnr) {
  for (Method method : {Method::Sptq, Method::Msptq, Method::Uniform, Method::LloydMax}) {
    DesignSpec unit = spec_for(method);
    DesignSpec scaled = unit;
    scaled.sigma = 0.02;
    const DesignResult a = design(unit), b = design(scaled);
    EXPECT_NEAR(b.codebook.xmax(), 0.02 * a.codebook.xmax(), 1e-9) << to_string(method);
    EXPECT_NEAR(b.sqnr_db, a.sqnr_db, 1e-9) << to_string(method);
    EXPECT_NEAR(b.distortion.total(), 0.0004 * a.distortion.total(), 1e-15);
  }
  DesignSpec given = spec_for(Method::Sptq);
  given.sigma = 2.0;
  given.xmax = 2.0 * 2.5512;  // the paper's optimum, in source units
  EXPECT_NEAR(design(given).sqnr_db, 6.9790, 1e-4);
}

TEST(Design, DefaultRulesFollowThePaper) {
  const DesignResult sptq = design(spec_for(Method::Sptq));
  EXPECT_EQ(sptq.codebook.provenance().rule, XmaxRule::Iterative);
  EXPECT_EQ(sptq.codebook.provenance().iterations, 40);
  EXPECT_EQ(sptq.trace.iterations(), 40);
  const DesignResult msptq = design(spec_for(Method::Msptq));
  EXPECT_EQ(msptq.codebook.provenance().iterations, 7);
  EXPECT_DOUBLE_EQ(msptq.trace.sequence.front(), sptq.trace.value());
  DesignSpec from_init = spec_for(Method::Sptq);
  from_init.init = 4.8371024 / 3.0;
  EXPECT_EQ(design(from_init).trace.iterations(), 39);
  EXPECT_EQ(design(spec_for(Method::LloydMax)).codebook.provenance().rule, XmaxRule::Lloyd);
}

TEST(Design, RejectsContradictoryOrSenselessSpecs) {
  auto rejects = [](DesignSpec spec) { EXPECT_THROW(design(spec), Error); };
  DesignSpec s = spec_for(Method::Uniform);
  s.bits = 0; rejects(s);
  s.bits = 17; rejects(s);
  s = spec_for(Method::Uniform); s.levels = 5; rejects(s);        // 5 levels in 2 bits
  s = spec_for(Method::Sptq, 3); rejects(s);                      // SPTQ is two-bit
  s = spec_for(Method::Msptq); s.levels = 3; rejects(s);
  s = spec_for(Method::LloydMax, 17); rejects(s);                 // beyond the widest code
  s = spec_for(Method::Uniform); s.alpha = 2.0; rejects(s);       // alpha is ternary-only
  s = spec_for(Method::Sptq); s.xmax = 2.0; s.rule = XmaxRule::Numeric; rejects(s);
  s = spec_for(Method::MuLaw); s.rule = XmaxRule::Iterative; rejects(s);
  s = spec_for(Method::Sptq); s.rule = XmaxRule::Lloyd; rejects(s);
  s = spec_for(Method::Sptq); s.sigma = 0.0; rejects(s);
  s = spec_for(Method::Sptq); s.sigma = std::nan(""); rejects(s);
  s = spec_for(Method::Sptq); s.xmax = -1.0; rejects(s);
  s = spec_for(Method::Sptq); s.epsilon = 0.0; rejects(s);
  s = spec_for(Method::Sptq); s.epsilon = 1.5; rejects(s);       // Algorithm 1 would take no step
  s = spec_for(Method::Uniform); s.rule = XmaxRule::Given; rejects(s);  // given, but no x_max
}

TEST(Sweep, CoversTheRangeAndFindsTheOptimum) {
  const auto points = sweep(spec_for(Method::Sptq), 0.5, 1.5, 0.001);
  ASSERT_EQ(points.size(), 1001u);
  EXPECT_DOUBLE_EQ(points.front().xmax, 1.5);
  EXPECT_NEAR(points.back().parameter, 1.5, 1e-12);
  const auto best = std::min_element(points.begin(), points.end(), [](const auto& a, const auto& b) {
    return a.distortion.total() < b.distortion.total();
  });
  EXPECT_NEAR(best->parameter, 0.8504, 1e-3);
  EXPECT_NEAR(best->distortion.total(), sptq_distortion_eq15(best->parameter), 1e-13);
  EXPECT_THROW(sweep(spec_for(Method::Sptq), 0.5, 1.5, 0.0), Error);
  EXPECT_THROW(sweep(spec_for(Method::Sptq), 0.5, 1e9, 1e-3), Error);  // unbounded allocation
  EXPECT_THROW(sweep(spec_for(Method::LloydMax), 0.5, 1.5, 0.1), Error);
}

}  // namespace
}  // namespace nuq
