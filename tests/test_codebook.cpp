// Codebook: construction, validation, reference quantization and its JSON form.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include <nlohmann/json.hpp>

#include "nuq/codebook.h"
#include "nuq/error.h"
#include "nuq/uniform.h"

namespace nuq {
namespace {

Provenance given(double xmax) {
  Provenance p;
  p.xmax = xmax;
  return p;
}

TEST(Codebook, SymmetricMidriseBuildsTheFullSortedLists) {
  const Codebook c = Codebook::symmetric(2, {1.0}, {0.5, 2.0}, false, given(3.0));
  EXPECT_EQ(c.thresholds(), (std::vector<double>{-1.0, 0.0, 1.0}));
  EXPECT_EQ(c.levels(), (std::vector<double>{-2.0, -0.5, 0.5, 2.0}));
  EXPECT_TRUE(c.symmetric());
  EXPECT_EQ(c.size(), 4u);
}

TEST(Codebook, SymmetricMidtreadHasAZeroLevel) {
  const Codebook c = Codebook::symmetric(2, {0.5}, {1.0}, true, given(1.5));
  EXPECT_EQ(c.thresholds(), (std::vector<double>{-0.5, 0.5}));
  EXPECT_EQ(c.levels(), (std::vector<double>{-1.0, 0.0, 1.0}));
  EXPECT_TRUE(c.symmetric());
}

TEST(Codebook, AsymmetricIsRecognised) {
  const Codebook c(2, {-1.0, 0.0, 2.0}, {-2.0, -0.5, 0.5, 3.0}, given(2.0));
  EXPECT_FALSE(c.symmetric());
}

TEST(Codebook, RejectsMalformedQuantizers) {
  EXPECT_THROW(Codebook(2, {0.0, -1.0, 1.0}, {-2, -1, 1, 2}, given(1)), Error);      // unsorted
  EXPECT_THROW(Codebook(2, {-1.0, 0.0, 0.0}, {-2, -1, 1, 2}, given(1)), Error);      // repeated
  EXPECT_THROW(Codebook(2, {-1.0, 1.0}, {-2, -1, 1, 2}, given(1)), Error);           // count
  EXPECT_THROW(Codebook(1, {-1.0, 0.0, 1.0}, {-2, -1, 1, 2}, given(1)), Error);      // 4 > 2^1
  EXPECT_THROW(Codebook(17, {0.0}, {-1, 1}, given(1)), Error);                       // bits
  EXPECT_THROW(Codebook(1, {}, {1.0}, given(1)), Error);                             // one level
  EXPECT_THROW(Codebook(1, {std::nan("")}, {-1, 1}, given(1)), Error);               // NaN
  EXPECT_THROW(Codebook(1, {0.0}, {-1, INFINITY}, given(1)), Error);                 // infinite
  EXPECT_THROW(Codebook(1, {0.0}, {-1, 1}, given(-1)), Error);                       // x_max
  EXPECT_THROW(Codebook(1, {0.0}, {-1, 1}, given(1), UniformGrid{-1.0, 3.0}), Error);  // off grid
}

TEST(Codebook, ErrorMessagesNameTheProblem) {
  try {
    Codebook(2, {0.0, -1.0, 1.0}, {-2, -1, 1, 2}, given(1));
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("thresholds must be strictly increasing"), std::string::npos)
        << e.what();
  }
}

TEST(Codebook, IndexOfPutsTiesInTheUpperCell) {
  const Codebook c = Codebook::symmetric(2, {1.0}, {0.5, 2.0}, false, given(3.0));
  EXPECT_EQ(c.index_of(-5.0), 0u);
  EXPECT_EQ(c.index_of(-1.0), 1u);
  EXPECT_EQ(c.index_of(-0.3), 1u);
  EXPECT_EQ(c.index_of(0.0), 2u);
  EXPECT_EQ(c.index_of(0.999), 2u);
  EXPECT_EQ(c.index_of(1.0), 3u);
  EXPECT_EQ(c.quantize(100.0), 2.0);
  EXPECT_THROW(c.index_of(std::nan("")), Error);
}

TEST(Codebook, UniformGridIndexAgreesWithThresholdSearch) {
  std::mt19937_64 rng(7);
  for (std::size_t levels : {2u, 3u, 4u, 7u, 256u, 4096u}) {
    const Codebook c = uniform_codebook(levels, 2.5);
    const UniformGrid grid = *c.uniform_grid();
    std::uniform_real_distribution<double> x(-4.0, 4.0);
    for (int i = 0; i < 2000; ++i) {
      const double v = x(rng);
      const double position = std::floor((v - grid.first_level) / grid.step + 0.5);
      const auto arithmetic = static_cast<std::uint32_t>(std::clamp(position, 0.0, double(levels - 1)));
      ASSERT_EQ(arithmetic, c.index_of(v)) << "levels " << levels << ", x " << v;
    }
  }
}

TEST(Codebook, ScaledMovesEverythingTogether) {
  const Codebook c = uniform_codebook(4, 2.0).scaled(3.0);
  EXPECT_DOUBLE_EQ(c.xmax(), 6.0);
  EXPECT_DOUBLE_EQ(c.provenance().sigma, 3.0);
  EXPECT_EQ(c.levels(), (std::vector<double>{-4.5, -1.5, 1.5, 4.5}));
  EXPECT_DOUBLE_EQ(c.uniform_grid()->step, 3.0);
  EXPECT_THROW(c.scaled(0.0), Error);
}

TEST(Codebook, JsonRoundTrip) {
  Provenance p = given(3.2);
  p.method = Method::MuLaw;
  p.rule = XmaxRule::Numeric;
  p.mu = 255.0;
  p.iterations = 0;
  const Codebook c(3, {-2, -1, -0.5, 0, 0.5, 1, 2}, {-3, -1.5, -0.7, -0.2, 0.2, 0.7, 1.5, 3}, p);
  const Codebook back = codebook_from_json(to_json(c));
  EXPECT_EQ(back.thresholds(), c.thresholds());
  EXPECT_EQ(back.levels(), c.levels());
  EXPECT_EQ(back.bits(), 3);
  EXPECT_EQ(back.provenance().method, Method::MuLaw);
  EXPECT_EQ(back.provenance().rule, XmaxRule::Numeric);
  EXPECT_EQ(*back.provenance().mu, 255.0);
  const Codebook u = codebook_from_json(to_json(uniform_codebook(8, 1.0)));
  ASSERT_TRUE(u.uniform_grid());
  EXPECT_DOUBLE_EQ(u.uniform_grid()->step, 0.25);
}

TEST(Codebook, JsonErrorsAreUserErrors) {
  nlohmann::json j = to_json(uniform_codebook(4, 1.0));
  j.erase("levels");
  EXPECT_THROW(codebook_from_json(j), Error);
  j = to_json(uniform_codebook(4, 1.0));
  j["method"] = "nonsense";
  EXPECT_THROW(codebook_from_json(j), Error);
  j = to_json(uniform_codebook(4, 1.0));
  j["levels"] = {3.0, 2.0, 1.0, 0.0};
  EXPECT_THROW(codebook_from_json(j), Error);
}

TEST(Method, NamesRoundTripAndUnknownNamesListTheChoices) {
  for (Method m : {Method::Uniform, Method::Sptq, Method::Msptq, Method::Ternary, Method::MuLaw,
                   Method::LloydMax, Method::Custom})
    EXPECT_EQ(parse_method(to_string(m)), m);
  try {
    parse_method("sptq2");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("msptq"), std::string::npos);
  }
}

}  // namespace
}  // namespace nuq
