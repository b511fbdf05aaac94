// The reproduce report and the findings, on hand-made results (no training needed).
#include <gtest/gtest.h>

#include <limits>

#include "nuq/experiment.h"
#include "nuq/number_text.h"

namespace nuq {
namespace {

CaseResult make_case(const std::string& table, const std::string& label, double sqnr_ex, double accuracy) {
  CaseResult c;
  c.table = table;
  c.case_label = label;
  c.region = "±min(|w_min|, |w_max|)";
  c.ptq.sqnr_ex_db = sqnr_ex;
  c.ptq.sqnr_th_db = sqnr_ex - 1.0;
  c.accuracy = accuracy;
  c.published.accuracy = 97.0;
  return c;
}

ExperimentResult mnist(std::uint64_t seed, double shift) {
  ExperimentResult r;
  r.dataset = "mnist";
  r.model = "mlp";
  r.seed = seed;
  for (const char* label : {"Case 1", "Case 2", "Case 3"}) {
    r.cases.push_back(make_case("3", label, 5.0 + (label[5] - '0'), 97.0 + shift - (label[5] - '0')));
    r.cases.push_back(make_case("4", label, 4.0, 96.0 - (label[5] - '0')));
    r.cases.push_back(make_case("5", label, 6.0 + (label[5] - '0'), 97.5));
  }
  return r;
}

// Every number in full: a sigma of 1e100 used to be cut off at 63 digits (a 64-byte buffer).
TEST(NumberText, PrintsEveryMagnitudeWhole) {
  EXPECT_EQ(fixed_text(6.97903, 4), "6.9790");
  EXPECT_EQ(fixed_text(123456789012345.0, 1), "123456789012345.0");
  EXPECT_EQ(fixed_text(1e100, 6), "1e+100");
  EXPECT_EQ(fixed_text(-2.5e300, 4), "-2.5e+300");
  EXPECT_EQ(fixed_text(std::numeric_limits<double>::infinity(), 2), "inf");
  EXPECT_EQ(signed_text(-1e-9, 2), "+0.00");
  EXPECT_EQ(signed_text(0.5, 2), "+0.50");
  // Errors of tensors at any scale keep their digits: at sigma 1e-12 fixed decimals printed 0.000000.
  EXPECT_EQ(significant_text(0.000123456789, 6), "0.000123457");
  EXPECT_EQ(significant_text(4.22226490625e-13, 6), "4.22226e-13");
  EXPECT_EQ(significant_text(422226490625.335632, 6), "4.22226e+11");
  EXPECT_EQ(significant_text(0.418968, 6), "0.418968");
  EXPECT_EQ(significant_text(0.0, 6), "0");
  EXPECT_EQ(significant_text(-std::numeric_limits<double>::infinity(), 6), "-inf");
  EXPECT_EQ(significant_text(std::numeric_limits<double>::quiet_NaN(), 6), "nan");
}

TEST(Findings, AreJudgedOnTheNumbers) {
  const auto findings = check_findings({mnist(1, 0.0)});
  ASSERT_EQ(findings.size(), 3u);
  EXPECT_TRUE(findings[0].holds) << findings[0].evidence;  // MSPTQ 7..9 dB above SPTQ 6..8 dB
  EXPECT_TRUE(findings[1].holds) << findings[1].evidence;  // SPTQ 96, 95 % above UQ 95, 94 %
  EXPECT_TRUE(findings[2].holds) << findings[2].evidence;  // best SQNR: case 3; best accuracy: case 1
  ExperimentResult worse = mnist(1, 0.0);
  for (CaseResult& c : worse.cases)
    if (c.table == "5") c.ptq.sqnr_ex_db = c.ptq.sqnr_th_db = 1.0;
  EXPECT_FALSE(check_findings({worse})[0].holds);
}

TEST(Report, EscapesCellsAndShowsTheSpreadOverSeeds) {
  const std::vector<ExperimentResult> runs = {mnist(1, 0.0), mnist(2, 1.0)};
  const std::string md = render_report(runs, check_findings(runs));
  EXPECT_NE(md.find("±min(\\|w_min\\|, \\|w_max\\|)"), std::string::npos);
  EXPECT_NE(md.find("## Spread over 2 seeds: mnist mlp"), std::string::npos);
  // Table 3, case 1: accuracies 96 and 97 -> min 96.00, mean 96.50, max 97.00.
  EXPECT_NE(md.find("| 96.00 | 96.50 | 97.00 |"), std::string::npos) << md;
  EXPECT_EQ(md.find("## MNIST MLP"), md.rfind("## MNIST MLP"));  // the tables appear once
}

TEST(Report, PairsEachControlWithItsPublishedCase) {
  ExperimentResult r;
  r.dataset = "fashion";
  r.model = "cnn";
  for (std::size_t i = 0; i < 2; ++i) {  // Table 7b has two cases labelled "CNN"
    CaseResult c = make_case("7b", "CNN", 8.0, i == 0 ? 70.25 : 75.5);
    c.case_index = i;
    r.cases.push_back(c);
    c.control = "per-tensor normalisation";
    c.accuracy = i == 0 ? 86.75 : 85.5;
    r.controls.push_back(c);
  }
  const std::string md = render_report({r}, {});
  EXPECT_NE(md.find("### Controls (beyond the paper)"), std::string::npos);
  EXPECT_NE(md.find("| 97.00 | 70.25 | 86.75 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| 97.00 | 75.50 | 85.50 |"), std::string::npos) << md;
}

}  // namespace
}  // namespace nuq
