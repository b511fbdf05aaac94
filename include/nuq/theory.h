// The theoretical half of the paper's results, recomputed by the design engine and set beside the
// published values: Table 2 (Algorithm 1's iterations), the SQNR_th rows of Tables 3-7, and the
// reference figures the paper compares against (Lloyd-Max ceiling, mu-law, optimal supports).
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace nuq {

struct IterationRow {
  std::string label;
  double delta0 = 0.0;
  int published_iterations = 0;
  int iterations = 0;
  double delta = 0.0;  // converged step
  double xmax = 0.0;   // 3 * delta
  bool matches() const { return iterations == published_iterations; }
};

struct SqnrRow {
  std::string table;  // "3", "4", ...
  std::string title;
  std::string case_label;
  std::string region;
  double xmax = 0.0;
  double published = 0.0;  // SQNR_th as printed (dB)
  double ours = 0.0;
  double difference() const { return ours - published; }
  bool matches(double tolerance_db) const { return std::abs(difference()) <= tolerance_db; }
};

struct ReferenceRow {
  std::string what;
  std::string source;  // where the published figure comes from
  double published = 0.0;
  double ours = 0.0;
  int decimals = 4;    // digits the published figure carries
  double difference() const { return ours - published; }
  // Ours rounds to the published figure: |ours - published| <= half a unit of its last digit.
  bool matches_printed_digits() const;
};

struct TheoryReport {
  std::vector<IterationRow> sptq;  // Table 2
  IterationRow msptq;              // started from the converged SPTQ step
  std::vector<SqnrRow> sqnr;       // Tables 3-7
  std::vector<ReferenceRow> references;
};

TheoryReport build_theory_report();

// Rows that disagree with the paper: an iteration count that differs, an SQNR_th further than
// `tolerance_db` from the printed value, a reference figure that does not round to the printed one.
int count_mismatches(const TheoryReport& report, double tolerance_db = 1e-4);
// Every row with its "matches" judged as count_mismatches judges it.
nlohmann::json to_json(const TheoryReport& report, double tolerance_db = 1e-4);

}  // namespace nuq
