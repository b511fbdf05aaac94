// The companion paper's experiment: the SQNR floor of the accuracy rule, the claims checked on a
// run, the figure's data and the report section, on hand-made runs (the real run on MNIST is in
// tests/data).
#include <gtest/gtest.h>

#include <cmath>

#include "nuq/figures.h"
#include "nuq/mismatch_experiment.h"

namespace nuq {
namespace {

std::vector<NoiseProbePoint> probe_of(const std::vector<std::pair<double, double>>& sqnr_and_mean_loss) {
  std::vector<NoiseProbePoint> probe;
  for (auto [sqnr, loss] : sqnr_and_mean_loss) probe.push_back({sqnr, loss, loss + 0.05});
  return probe;
}

TEST(SqnrFloor, IsTheLowestPointFromWhichEveryMeanLossStaysWithinTheBound) {
  double floor = -1.0;
  // 14 dB is within the bound but 16 dB is not: the floor is above the last violation.
  ASSERT_TRUE(sqnr_floor(probe_of({{10, 0.5}, {12, 0.1}, {14, 0.01}, {16, 0.03}, {18, 0.02}, {20, -0.01}}), 0.02, &floor));
  EXPECT_EQ(floor, 18.0);
  ASSERT_TRUE(sqnr_floor(probe_of({{10, 0.0}, {12, 0.0}}), 0.02, &floor));
  EXPECT_EQ(floor, 10.0);
  EXPECT_FALSE(sqnr_floor(probe_of({{10, 0.5}, {12, 0.3}}), 0.02, &floor));
  EXPECT_FALSE(sqnr_floor({}, 0.02, &floor));
}

TEST(SqnrFloor, ALossOfExactlyTheBoundInPercentArithmeticIsWithin) {
  double floor = -1.0;
  const double loss = 98.15 - 98.13;  // 0.020000000000010232 in binary floating point
  ASSERT_GT(loss, 0.02);
  ASSERT_TRUE(sqnr_floor(probe_of({{30, loss}}), 0.02, &floor));
  EXPECT_EQ(floor, 30.0);
}

// A run as the experiment makes it, with the numbers that matter here.
MismatchRun run(int bits, Normalisation n, double th, double ex, double within, double loss) {
  MismatchRun r;
  r.bits = bits;
  r.normalisation = n;
  r.mismatch_db = n == Normalisation::None ? -22.8 : 0.0;
  r.ptq.sqnr_th_db = th;
  r.ptq.sqnr_ex_db = ex;
  r.ptq.within = within;
  r.accuracy = 98.0 - loss;
  r.loss = loss;
  return r;
}

MismatchExperiment hand_made() {
  MismatchExperiment e;
  e.fp32_accuracy = 98.0;
  e.stats.count = 10;
  e.stats.m2 = 10 * 0.0725 * 0.0725;
  e.options.min_bits = 9;
  e.options.max_bits = 11;
  e.runs = {run(9, Normalisation::None, 18.1, 18.2, 100, 0.05), run(10, Normalisation::None, 23.3, 23.3, 100, 0.0),
            run(11, Normalisation::None, 28.4, 28.5, 100, -0.01), run(9, Normalisation::Global, 40.3, 41.0, 100, 0.01),
            run(10, Normalisation::Global, 45.4, 46.1, 100, 0.0), run(11, Normalisation::Global, 50.6, 51.3, 99.9, 0.0)};
  e.probe = probe_of({{18, 0.1}, {20, 0.02}, {22, 0.0}});
  e.floor_found = true;
  e.sqnr_floor_db = 20.0;
  RuleChoice none{Normalisation::None, 10, 23.3, 0.0, true, 9, 0.05, true, true};
  RuleChoice global{Normalisation::Global, 9, 40.3, 0.01, true, 0, 0.0, false, false};
  e.choices = {none, global};
  return e;
}

TEST(MismatchFindings, HoldWhenTheRunSaysSo) {
  MismatchExperiment e = hand_made();
  e.choices[1] = {Normalisation::Global, 10, 45.4, 0.0, true, 9, 0.01, true, false};
  const std::vector<Finding> f = check_mismatch_findings(e);
  ASSERT_EQ(f.size(), 3u);
  EXPECT_TRUE(f[0].holds) << f[0].evidence;
  EXPECT_NE(f[0].evidence.find("5 runs"), std::string::npos) << f[0].evidence;  // R = 11 global is not all inside
  EXPECT_NE(f[0].evidence.find("0.700 dB"), std::string::npos) << f[0].evidence;
  EXPECT_TRUE(f[1].holds) << f[1].evidence;
  EXPECT_TRUE(f[2].holds) << f[2].evidence;
}

TEST(MismatchFindings, FailWhenTheRunSaysOtherwise) {
  MismatchExperiment e = hand_made();
  e.runs[4].ptq.sqnr_ex_db = 47.0;  // 1.6 dB above SQNR_th with every weight inside
  e.choices[0].within_bound = false;
  const std::vector<Finding> f = check_mismatch_findings(e);
  EXPECT_FALSE(f[0].holds);
  EXPECT_FALSE(f[1].holds);
  e.floor_found = false;
  EXPECT_FALSE(check_mismatch_findings(e)[1].holds);
}

// A choice at the lowest rate run has no R - 1 to measure: the claim about R - 1 is not tested
// there, which is neither holding nor failing (the ITC run with --epochs 2 picks R = 4 globally).
TEST(MismatchFindings, ARateWithNothingBelowItIsNotTestedThere) {
  MismatchExperiment e = hand_made();  // global: R = 9, the lowest run; none: R = 10, loss appears at 9
  std::vector<Finding> f = check_mismatch_findings(e);
  EXPECT_TRUE(f[2].holds) << f[2].evidence;
  EXPECT_EQ(f[2].tested, Finding::Tested::Partly);
  EXPECT_EQ(verdict(f[2]), "holds where tested");
  EXPECT_NE(f[2].evidence.find("global: R = 9 is the lowest rate run"), std::string::npos) << f[2].evidence;
  e.choices[0].loss_appears_below = false;
  f = check_mismatch_findings(e);
  EXPECT_EQ(verdict(f[2]), "does not hold");
  e.choices[0].bits_below = 0;
  f = check_mismatch_findings(e);
  EXPECT_EQ(f[2].tested, Finding::Tested::Nowhere);
  EXPECT_EQ(verdict(f[2]), "not tested");
  EXPECT_EQ(verdict(f[0]), "holds");
  // A normalisation whose R no rate reaches fails the rule's claim and leaves R - 1 untested.
  e = hand_made();
  e.choices[1].bits = 0;
  f = check_mismatch_findings(e);
  EXPECT_EQ(verdict(f[1]), "does not hold");
  EXPECT_EQ(verdict(f[2]), "holds where tested");
  e.choices[0].bits = 0;
  e.floor_found = false;
  EXPECT_EQ(verdict(check_mismatch_findings(e)[2]), "not tested");
}

TEST(MismatchFigure, MarksTheRuleChoicesAndTheFloor) {
  const MismatchExperiment e = hand_made();
  const CsvTable runs = mismatch_runs_data(e);
  ASSERT_EQ(runs.rows.size(), 6u);
  int chosen = 0;
  for (const auto& row : runs.rows)
    if (row.back() == "1") {
      ++chosen;
      EXPECT_TRUE((row[0] == "none" && row[1] == "10") || (row[0] == "global" && row[1] == "9")) << row[0] << row[1];
    }
  EXPECT_EQ(chosen, 2);
  const CsvTable probe = noise_probe_data(e);
  ASSERT_EQ(probe.rows.size(), 3u);
  EXPECT_EQ(probe.rows[1].back(), "1");
  EXPECT_EQ(probe.rows[0].back(), "0");
}

TEST(MismatchReport, HasThePapersRangeTheRuleAndTheFigure) {
  const std::string md = render_mismatch_report(hand_made(), {{"itc2021-rate", "T", "C", true}});
  EXPECT_NE(md.find("| 10 | none | -22.80 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| none | 10 | 23.30 | 0.00 | yes | 0.05 | yes | yes |"), std::string::npos) << md;
  EXPECT_NE(md.find("From **20.0 dB** up"), std::string::npos);
  EXPECT_NE(md.find("![T](figures/itc2021-rate.png)"), std::string::npos);
  EXPECT_NE(md.find("σ_w = 0.072500 = -22.79 dB"), std::string::npos) << md;
}

}  // namespace
}  // namespace nuq
