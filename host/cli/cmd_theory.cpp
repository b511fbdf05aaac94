// nuq theory: Table 2 and the SQNR_th rows of Tables 3-7, the paper's value beside ours.
#include <cmath>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "nuq/error.h"
#include "nuq/theory.h"
#include "table.h"
#include "json_text.h"

namespace nuq::cli {
namespace {

struct TheoryOptions {
  bool json = false;
  double tolerance = 1e-4;
  bool check = false;
};

const char* yes_no(bool yes) { return yes ? "yes" : "no"; }

void print_iterations(const TheoryReport& report) {
  std::cout << "Table 2: iterations of Algorithm 1 (stop when |Δ(i+1) - Δ(i)| < 1e-4)\n\n";
  TextTable table({"quantizer", "start", "value", "iterations (paper)", "iterations (ours)",
                   "Δ or Δmod (ours)", "x_max = 3Δ or 3Δmod (ours)", "match"});
  auto add = [&](const std::string& quantizer, const IterationRow& r) {
    table.add_row({quantizer, r.label, fixed(r.delta0, 6), std::to_string(r.published_iterations),
                   std::to_string(r.iterations), fixed(r.delta, 4), fixed(r.xmax, 4), yes_no(r.matches())});
  };
  for (const auto& row : report.sptq) add("SPTQ", row);
  add("MSPTQ", report.msptq);
  std::cout << table.render() << "paper: Δ = 0.8504, x_max = 2.5512 (SPTQ); Δmod = 0.9021, "
            << "x_max = 2.7063 (MSPTQ)\n\n";
}

void print_sqnr(const TheoryReport& report, double tolerance_db) {
  std::cout << "Tables 3-7: theoretical SQNR (dB) of each design and support region ±x_max\n"
            << "(3Δ and 3Δmod as the paper prints them, 2.5512 and 2.7063)\n\n";
  TextTable table({"table", "quantizer", "case", "region", "x_max", "paper", "ours", "ours - paper", "match"});
  for (const auto& r : report.sqnr)
    table.add_row({r.table, r.title, r.case_label, r.region, fixed(r.xmax, 4), fixed(r.published, 4),
                   fixed(r.ours, 4), signed_fixed(r.difference(), 4), yes_no(r.matches(tolerance_db))});
  std::cout << table.render() << '\n';
}

void print_references(const TheoryReport& report) {
  // Not the paper's own numbers: figures it quotes from elsewhere, the supports it derives, and the
  // Lloyd-Max ceiling it never states, each checked against the source the column names.
  std::cout << "Reference figures (from the paper's sources and the literature)\n\n";
  TextTable table({"quantity", "published", "source", "ours", "ours - published", "rounds to it"});
  for (const auto& r : report.references)
    table.add_row({r.what, fixed(r.published, r.decimals), r.source, fixed(r.ours, 4),
                   signed_fixed(r.difference(), 4), yes_no(r.matches_printed_digits())});
  std::cout << table.render();
}

void run_theory(const TheoryOptions& options) {
  // NaN would compare false with every difference and pass every check.
  NUQ_REQUIRE(std::isfinite(options.tolerance) && options.tolerance >= 0.0,
              "--tolerance: must be a non-negative number of dB, got ", options.tolerance);
  const TheoryReport report = build_theory_report();
  const int mismatches = count_mismatches(report, options.tolerance);
  if (options.json) {
    nlohmann::json j = to_json(report, options.tolerance);
    j["tolerance_db"] = options.tolerance;
    j["mismatches"] = mismatches;
    std::cout << json_text(j) << '\n';
  } else {
    print_iterations(report);
    print_sqnr(report, options.tolerance);
    print_references(report);
    std::cout << '\n'
              << (mismatches == 0 ? "All" : "Not all") << " iteration counts and SQNR_th values (within "
              << options.tolerance << " dB) match the paper, and reference figures (to their printed digits) "
              << "their sources: " << mismatches << " mismatch(es).\n";
  }
  if (options.check && mismatches > 0)
    throw Error(std::to_string(mismatches) + " value(s) differ from the paper or their sources beyond the tolerance");
}

}  // namespace

void add_theory_command(CLI::App& app) {
  auto options = std::make_shared<TheoryOptions>();
  CLI::App* cmd = app.add_subcommand(
      "theory", "Print Table 2 and the SQNR_th rows of Tables 3-7 with the paper's values beside ours");
  cmd->add_option("--tolerance", options->tolerance, "Largest |ours - paper| in dB counted as a match for an SQNR_th (iteration counts match when "
                  "equal, reference figures when they round to the printed digits)")
      ->capture_default_str();
  cmd->add_flag("--check", options->check, "Exit with status 1 when any value does not match");
  cmd->add_flag("--json", options->json, "Print the report as JSON");
  cmd->callback([options] { run_theory(*options); });
}

}  // namespace nuq::cli
