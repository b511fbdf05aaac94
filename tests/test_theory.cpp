// `nuq theory`'s report: every published theoretical figure reproduced.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include <nlohmann/json.hpp>

#include "nuq/paper.h"
#include "nuq/theory.h"

namespace nuq {
namespace {

TEST(Theory, ReproducesEveryPublishedTheoreticalFigure) {
  const TheoryReport report = build_theory_report();
  EXPECT_EQ(count_mismatches(report), 0);
  ASSERT_EQ(report.sptq.size(), 5u);
  for (const auto& row : report.sptq) EXPECT_EQ(row.iterations, row.published_iterations) << row.label;
  EXPECT_EQ(report.msptq.iterations, 7);
  for (const auto& row : report.sqnr)
    EXPECT_LE(std::abs(row.difference()), 1e-4) << "Table " << row.table << " " << row.case_label;
  for (const auto& row : report.references) EXPECT_TRUE(row.matches_printed_digits()) << row.what;
}

TEST(Theory, CoversEverySqnrThOfTablesThreeToSeven) {
  std::size_t published = 0;
  for (const auto& table : paper::tables())
    for (const auto& c : table.cases) published += c.sqnr_th.has_value();
  const TheoryReport report = build_theory_report();
  EXPECT_EQ(report.sqnr.size(), published);
  EXPECT_EQ(published, 32u);  // 5 + 5 + 4 + 5 + 7 (Tables 3-6) + 1 + 1 + 2 + 2 (Table 7)
  std::set<std::string> tables;
  for (const auto& row : report.sqnr) tables.insert(row.table);
  EXPECT_EQ(tables, (std::set<std::string>{"3", "4", "5", "6a", "6b", "7a", "7b"}));
}

TEST(Theory, MismatchesAreCounted) {
  TheoryReport report = build_theory_report();
  report.sqnr.front().published += 0.01;
  report.sptq.back().published_iterations += 1;
  report.references.front().published += 0.1;
  EXPECT_EQ(count_mismatches(report), 3);
}

TEST(Theory, JsonCarriesEveryRow) {
  const TheoryReport report = build_theory_report();
  const nlohmann::json j = to_json(report);
  EXPECT_EQ(j.at("table2").size(), 5u);
  EXPECT_EQ(j.at("sqnr_th").size(), report.sqnr.size());
  EXPECT_EQ(j.at("msptq").at("iterations"), 7);
  EXPECT_NEAR(j.at("sqnr_th")[2].at("ours").get<double>(), 6.9790, 1e-4);
}

// Each row says whether it matches, judged as the count is: the rows that make up a nonzero
// count are the ones marked, so a reader can find them.
TEST(Theory, JsonMarksTheRowsThatDisagree) {
  TheoryReport report = build_theory_report();
  report.sqnr[1].published += 0.01;
  report.sptq[2].published_iterations += 1;
  report.references[3].published += 0.1;
  const nlohmann::json j = to_json(report);
  auto marked = [](const nlohmann::json& rows) {
    std::vector<std::size_t> failing;
    for (std::size_t i = 0; i < rows.size(); ++i)
      if (!rows[i].at("matches").get<bool>()) failing.push_back(i);
    return failing;
  };
  EXPECT_EQ(marked(j.at("sqnr_th")), std::vector<std::size_t>{1});
  EXPECT_EQ(marked(j.at("table2")), std::vector<std::size_t>{2});
  EXPECT_EQ(marked(j.at("references")), std::vector<std::size_t>{3});
  EXPECT_TRUE(j.at("msptq").at("matches").get<bool>());
  // A tolerance just under the largest difference marks the rows at it, and only those.
  const TheoryReport clean = build_theory_report();
  double largest = 0.0;
  for (const auto& r : clean.sqnr) largest = std::max(largest, std::abs(r.difference()));
  ASSERT_GT(largest, 0.0);
  const nlohmann::json tight = to_json(clean, largest * 0.999);
  for (std::size_t i = 0; i < clean.sqnr.size(); ++i)
    EXPECT_EQ(tight.at("sqnr_th")[i].at("matches").get<bool>(), std::abs(clean.sqnr[i].difference()) < largest) << i;
  EXPECT_EQ(count_mismatches(clean, largest * 0.999), int(marked(tight.at("sqnr_th")).size()));
}

}  // namespace
}  // namespace nuq
