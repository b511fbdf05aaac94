// Variance mismatch and the bit-rate rule (companion paper), and 9-16-bit models stored as U16
// codes with an affine map.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "nuq/design.h"
#include "nuq/error.h"
#include "nuq/io/safetensors.h"
#include "nuq/laplace.h"
#include "nuq/mismatch.h"
#include "nuq/ptq.h"
#include "numeric_reference.h"
#include "temp_dir.h"

namespace nuq {
namespace {

TEST(Mismatch, IterativeSupportMatchesTheExactOptimumForEveryRate) {
  for (int bits = 2; bits <= 16; ++bits) {
    DesignSpec numeric;
    numeric.method = Method::Uniform;
    numeric.bits = bits;
    numeric.rule = XmaxRule::Numeric;
    const double optimum = design(numeric).codebook.xmax();
    EXPECT_NEAR(mismatch_design(bits).xmax(), optimum, 1e-4) << bits << " bits";
  }
}

TEST(Mismatch, ApproximationIsExactInTheOverloadAndTightensWithRate) {
  // The overload term is exact for the Laplacian; only Delta^2/12 for the granular cells is an
  // approximation, and it improves as cells shrink relative to sigma. Bound per R over +-20 dB
  // (worst at -20 dB, where cells are widest relative to sigma): measured 3.66 dB at R = 2, then
  // about a third per extra bit down to 5.5e-6 dB at R = 16.
  const double bound[17] = {0,    0,     4.0,    3.5,  2.6,  1.6,  0.75, 0.3,  0.1,
                            0.035, 0.011, 0.0035, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5};
  double previous = INFINITY;
  for (int bits = 2; bits <= 16; ++bits) {
    double worst = 0.0;
    for (const MismatchPoint& p : mismatch_curve(mismatch_design(bits), -20.0, 20.0, 2.0))
      worst = std::max(worst, std::abs(p.approx_sqnr_db - p.sqnr_db));
    EXPECT_LT(worst, bound[bits]) << bits << " bits";
    EXPECT_LE(worst, previous * 1.05 + 1e-6) << bits << " bits";
    previous = worst;
  }
  // Far in the overload (sigma 40 dB above the design) both agree: D is almost all overload.
  const MismatchPoint far = mismatch_curve(mismatch_design(8), 40.0, 40.0, 1.0).front();
  EXPECT_GT(far.overload_share, 0.99);
  EXPECT_NEAR(far.approx_sqnr_db, far.sqnr_db, 1e-3);
}

TEST(Mismatch, CurveAgreesWithNumericalIntegrationAndPeaksNearTheDesignVariance) {
  const Codebook q = mismatch_design(4);
  const auto curve = mismatch_curve(q, -10.0, 10.0, 0.5);
  ASSERT_EQ(curve.size(), 41u);
  for (const MismatchPoint& p : {curve[0], curve[20], curve[40]}) {
    const double d = test::numeric_distortion(q.thresholds(), q.levels(), q.xmax(), p.sigma).total();
    EXPECT_NEAR(p.sqnr_db, 10.0 * std::log10(p.sigma * p.sigma / d), 1e-6) << p.mismatch_db;
  }
  std::size_t best = 0;
  for (std::size_t i = 0; i < curve.size(); ++i)
    if (curve[i].sqnr_db > curve[best].sqnr_db) best = i;
  EXPECT_LE(std::abs(curve[best].mismatch_db), 3.0);  // the MSE design is near-optimal at its sigma
  EXPECT_THROW(mismatch_curve(q, 5.0, -5.0, 1.0), Error);
  EXPECT_THROW(mismatch_curve(q, -5.0, 5.0, 0.0), Error);
  EXPECT_THROW(mismatch_curve(q, -5.0, 5.0, 1e-9), Error);  // unbounded point count
}

TEST(Mismatch, RulePicksTheSmallestRateThatHoldsTheFloorOverTheRange) {
  // Weights far below the design variance (-30 dB) and a little above it.
  const auto choice = choose_bit_rate(40.0, -30.0, 5.0, 1.0);
  ASSERT_TRUE(choice.has_value());
  EXPECT_GE(choice->worst_sqnr_db, 40.0);
  EXPECT_LT(worst_case(choice->bits - 1, -30.0, 5.0, 1.0).worst_sqnr_db, 40.0);
  EXPECT_DOUBLE_EQ(choice->worst_at_db, -30.0);  // where the cells are widest relative to sigma
  // +20 dB puts sigma above every design's x_max / 1.5: overload caps SQNR whatever R is.
  EXPECT_FALSE(choose_bit_rate(40.0, -20.0, 20.0).has_value());
  // Where granular noise dominates, SQNR follows the step: an extra bit halves it but the optimal
  // support also widens, so the gain is 20 log10(2 x_max(R) / x_max(R+1)), a little under 6 dB.
  const double gain = worst_case(12, -10, -10).worst_sqnr_db - worst_case(11, -10, -10).worst_sqnr_db;
  EXPECT_NEAR(gain, 20.0 * std::log10(2.0 * mismatch_design(11).xmax() / mismatch_design(12).xmax()), 0.01);
}

// The grid always ends at the range's end: steps that miss it used to leave it out, and the rule
// then chose 12 bits for an 18.9 dB floor over -30..10.9 dB, where 12 bits give 18.60 dB at 10.9.
TEST(Mismatch, TheRangesEndIsAlwaysJudged) {
  const std::vector<MismatchPoint> curve = mismatch_curve(mismatch_design(8), -30.0, 10.0, 7.0);
  ASSERT_EQ(curve.size(), 7u);  // -30, -23, ..., 5, and 10
  EXPECT_DOUBLE_EQ(curve[5].mismatch_db, 5.0);
  EXPECT_DOUBLE_EQ(curve.back().mismatch_db, 10.0);
  EXPECT_EQ(mismatch_curve(mismatch_design(8), -30.0, 30.0, 1.0).size(), 61u);  // a step that meets it: no extra
  EXPECT_LT(worst_case(12, 10.9, 10.9).worst_sqnr_db, 18.9);
  for (const double step : {1.0, 7.0, 400.0}) {
    const auto choice = choose_bit_rate(18.9, -30.0, 10.9, step);
    ASSERT_TRUE(choice.has_value()) << step;
    EXPECT_GT(choice->bits, 12) << step;
    EXPECT_DOUBLE_EQ(choice->worst_at_db, 10.9) << step;
    EXPECT_GE(worst_case(choice->bits, 10.9, 10.9).worst_sqnr_db, 18.9) << step;
  }
}

// Laplace(mean, sigma^2) on a uniform codebook, as its geometric series sums it, against the cell
// by cell closed form of the centred source with the codebook moved by -mean (and, at low rates,
// numerical integration): means inside, at and beyond the support, on a threshold, and zero.
TEST(Mismatch, AnOffsetSourceIsSummedAsItsCellsAre) {
  std::mt19937_64 random(11);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int bits = 1; bits <= 16; ++bits) {
    const Codebook q = mismatch_design(bits);
    std::vector<double> means{0.0, q.thresholds()[q.thresholds().size() / 2 + (bits > 1)], q.xmax(), -3.0 * q.xmax()};
    for (int i = 0; i < 6; ++i) means.push_back((unit(random) - 0.5) * 4.0 * q.xmax());
    for (const double mean : means)
      for (const double sigma : {1e-4, 0.03, 0.5, 1.0, 7.0}) {
        std::vector<double> t = q.thresholds(), y = q.levels();
        for (double& v : t) v -= mean;
        for (double& v : y) v -= mean;
        const double cells = laplace_distortion(t, y, q.xmax(), sigma).total();
        const double summed = offset_laplace_distortion(q, mean, sigma);
        EXPECT_NEAR(summed, cells, 1e-10 * cells) << bits << " bits, mean " << mean << ", sigma " << sigma;
        if (bits <= 3 && sigma >= 0.03) {
          const double numeric = test::numeric_distortion(t, y, q.xmax(), sigma).total();
          EXPECT_NEAR(summed, numeric, 1e-6 * numeric) << bits << " bits, mean " << mean << ", sigma " << sigma;
        }
      }
    EXPECT_NEAR(offset_laplace_sqnr_db(q, 0.0, 0.7), laplace_sqnr_db(q, 0.7), 1e-9) << bits;
  }
  const Codebook sptq = design(DesignSpec{}).codebook;  // not uniform
  EXPECT_THROW(offset_laplace_distortion(sptq, 0.1, 1.0), Error);
  EXPECT_THROW(offset_laplace_distortion(mismatch_design(4), NAN, 1.0), Error);
  EXPECT_THROW(offset_laplace_distortion(mismatch_design(4), 0.0, 0.0), Error);
}

TEST(Mismatch, SixteenBitCodesAreStoredAsU16WithAnAffineMap) {
  test::TempDir dir;
  Model model = make_model(Architecture::Mlp, 6);
  for (int bits : {9, 12, 16}) {
    const Codebook codebook = mismatch_design(bits);
    PtqReport report;
    const QuantizedModel q = quantize_model(model, codebook, &report, Normalisation::None);
    const std::string path = dir.file("q" + std::to_string(bits) + ".safetensors");
    save_quantized(path, q);
    const io::TensorFile file = io::read_safetensors(path);
    ASSERT_TRUE(file.tensors.count("fc1.weight.grid")) << bits;
    EXPECT_FALSE(file.tensors.count("fc1.weight.codebook"));
    EXPECT_EQ(file.tensors.at("fc1.weight.codes").dtype, io::DType::U16);
    EXPECT_EQ(file.tensors.at("fc1.weight.codes").shape, (std::vector<std::int64_t>{512, 784}));
    const Model dq = dequantize_model(load_quantized(path));
    for (std::size_t k = 0; k < model.parameters.size(); ++k)
      for (std::size_t i = 0; i < model.parameters[k].values.size(); i += 97) {
        const double w = model.parameters[k].values[i];  // no normalisation: the codebook meets w
        ASSERT_NEAR(dq.parameters[k].values[i], codebook.quantize(w), 1e-6) << bits << " bits, " << w;
      }
    EXPECT_EQ(report.tensors.front().bytes_after, 512u * 784u * 2u + 16u);
    EXPECT_NEAR(report.sqnr_th_db, laplace_sqnr_db(codebook, model_stats(model).stddev()), 1e-12);
  }
}

TEST(Mismatch, CorruptGridIsRejected) {
  test::TempDir dir;
  const QuantizedModel q = quantize_model(make_model(Architecture::Mlp, 1), mismatch_design(10), nullptr,
                                          Normalisation::Global);
  save_quantized(dir.file("q.safetensors"), q);
  io::TensorFile file = io::read_safetensors(dir.file("q.safetensors"));
  const double bad[2] = {0.0, NAN};
  std::memcpy(file.tensors.at("fc2.weight.grid").data.data(), bad, sizeof bad);
  io::write_safetensors(dir.file("bad.safetensors"), file);
  try {
    load_quantized(dir.file("bad.safetensors"));
    FAIL() << "a NaN scale was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fc2.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(".grid"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace nuq
