// `nuq theory`'s report: every published theoretical figure reproduced.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

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

}  // namespace
}  // namespace nuq
