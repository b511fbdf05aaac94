// nuq design: one quantizer for the Laplacian source, its thresholds, levels, D and SQNR_th;
// --trace prints the iterates of its rule (Fig. 5) and --sweep D against its parameter (Fig. 6).
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "nuq/design.h"
#include "nuq/error.h"
#include "nuq/uniform.h"
#include "table.h"
#include "json_text.h"

namespace nuq::cli {
namespace {

struct DesignOptions {
  std::string method = "sptq";
  int bits = 2;
  std::optional<std::size_t> levels;
  std::optional<double> xmax, init;
  std::string optimizer;
  double alpha = 1.0, mu = 255.0, sigma = 1.0, epsilon = kPaperEpsilon;
  bool trace = false, json = false, all_cells = false;
  std::string sweep;
  bool bits_given = false, epsilon_given = false;  // beside their defaults
};

DesignSpec to_spec(const DesignOptions& o) {
  DesignSpec spec;
  spec.method = parse_method(o.method);
  spec.bits = o.bits;
  spec.levels = o.levels;
  spec.xmax = o.xmax;
  if (!o.optimizer.empty()) spec.rule = parse_xmax_rule(o.optimizer);
  spec.alpha = o.alpha;
  spec.mu = o.mu;
  spec.init = o.init;
  spec.sigma = o.sigma;
  spec.epsilon = o.epsilon;
  return spec;
}

// The trace's iterates with the distortion of the quantizer each one defines.
nlohmann::json trace_json(const DesignSpec& spec, const FixedPointTrace& trace) {
  nlohmann::json rows = nlohmann::json::array();
  const double xmax_per_value = xmax_per_parameter(spec.method);
  for (std::size_t i = 0; i < trace.sequence.size(); ++i) {
    const double value = trace.sequence[i];
    const Distortion d = laplace_distortion(codebook_at_xmax(spec, xmax_per_value * value), spec.sigma);
    rows.push_back({{"iteration", i}, {"value", value}, {"xmax", xmax_per_value * value},
                    {"distortion", d.total()}, {"sqnr_db", sqnr_db(d.total(), spec.sigma)}});
  }
  return rows;
}

// A sweep's rows, each made as it is written (a sweep may have a million: as one tree, 700 MB).
JsonRows sweep_rows(const std::vector<SweepPoint>& points) {
  return {points.size(), [&points](std::size_t i) {
            const SweepPoint& p = points[i];
            return nlohmann::json{{"parameter", p.parameter},          {"xmax", p.xmax},
                                  {"distortion", p.distortion.total()}, {"granular", p.distortion.granular},
                                  {"overload", p.distortion.overload},  {"sqnr_db", p.sqnr_db}};
          }};
}

JsonRows all_rows(const nlohmann::json& rows) {
  return {rows.size(), [&rows](std::size_t i) { return rows[i]; }};
}

void print_csv(const JsonRows& rows, const std::vector<std::string>& columns, const std::vector<std::string>& keys) {
  for (std::size_t c = 0; c < columns.size(); ++c) std::cout << (c ? "," : "") << columns[c];
  std::cout << '\n';
  for (std::size_t r = 0; r < rows.count; ++r) {
    const nlohmann::json row = rows.element(r);
    for (std::size_t c = 0; c < keys.size(); ++c) {
      char text[40];
      std::snprintf(text, sizeof text, "%.10g", row.at(keys[c]).get<double>());
      std::cout << (c ? "," : "") << text;
    }
    std::cout << '\n';
  }
}

// `decimals` decimals, as the paper prints its designs, from `smallest` up; six significant digits
// below, where those would be zeros (a design scaled to sigma 1e-7; D = 4.5 / N^2 is 1e-9 at 16 bits).
std::string decimals_or_digits(double value, int decimals, double smallest) {
  return value == 0.0 || std::abs(value) >= smallest ? fixed(value, decimals) : significant(value, 6);
}
std::string six_decimals(double value) { return decimals_or_digits(value, 6, 1e-3); }

void print_human(const DesignResult& r, bool all_cells) {
  const Codebook& c = r.codebook;
  const Provenance& p = c.provenance();
  auto line = [](const char* key, const std::string& value) {
    std::printf("%-14s%s\n", key, value.c_str());
  };
  line("method", to_string(p.method));
  line("bits", std::to_string(c.bits()) + " (" + std::to_string(c.size()) + " levels)");
  std::string how = to_string(p.rule);
  if (p.iterations > 0) how += ", " + std::to_string(p.iterations) + (p.iterations == 1 ? " iteration" : " iterations");
  line("x_max", six_decimals(p.xmax) + " (" + how + ")");
  if (const double per_delta = xmax_per_parameter(p.method); per_delta != 1.0)  // SPTQ and MSPTQ: x_max = 3 Delta
    line("Delta", six_decimals(p.xmax / per_delta) + " (x_max = " + fixed(per_delta, 0) + " Delta)");
  if (p.mu) line("mu", fixed(*p.mu, 4));
  if (p.alpha) line("alpha", fixed(*p.alpha, 4));
  line("sigma", six_decimals(p.sigma));
  const auto distortion_text = [](double d) { return decimals_or_digits(d, 8, 1e-2); };
  line("D", distortion_text(r.distortion.total()) + " (granular " + distortion_text(r.distortion.granular) +
                ", overload " + distortion_text(r.distortion.overload) + ")");
  line("SQNR_th", fixed(r.sqnr_db, 4) + " dB");
  std::printf("\n");
  std::fflush(stdout);

  // Small codebooks in full; large ones by their first and last cells.
  constexpr std::size_t kShown = 8;
  const std::size_t n = c.size();
  TextTable cells({"cell", "from", "to", "level"});
  for (std::size_t k = 0; k < n; ++k) {
    if (!all_cells && n > 4 * kShown && k == kShown) {
      cells.add_row({"...", "", "", ""});
      k = n - kShown;
    }
    cells.add_row({std::to_string(k), k == 0 ? "-inf" : six_decimals(c.thresholds()[k - 1]),
                   k + 1 == n ? "inf" : six_decimals(c.thresholds()[k]), six_decimals(c.levels()[k])});
  }
  std::cout << cells.render();
}

void run_design(const DesignOptions& options) {
  DesignSpec spec = to_spec(options);
  if (options.levels) {  // -N alone picks the narrowest width; with -b the two must agree
    const int needed = bits_for_levels(*options.levels);
    NUQ_REQUIRE(!options.bits_given || options.bits == needed, "--levels ", *options.levels, " are coded in ", needed,
                " bits, not --bits ", options.bits, "; give one of them");
    spec.bits = needed;
  }
  const DesignResult result = design(spec);
  // Options of the iterative rule would be silently ignored by any other.
  const XmaxRule rule = result.codebook.provenance().rule;
  NUQ_REQUIRE(rule == XmaxRule::Iterative || (!options.init && !options.epsilon_given), options.init ? "--init" : "--epsilon",
              " belongs to the iterative rule; ", to_string(spec.method), " here uses the ", to_string(rule),
              " rule, which takes none");
  std::optional<std::vector<SweepPoint>> points;
  if (!options.sweep.empty()) {
    const Range range = parse_range(options.sweep, "--sweep");
    points = sweep(spec, range.from, range.to, range.step);
  }
  // Ternary with alpha != 1 sweeps the x_max that alpha then scales: its own column.
  const std::string variable = spec.alpha != 1.0                          ? "xmax_before_alpha"
                               : xmax_per_parameter(spec.method) == 1.0 ? "xmax"
                                                                         : "delta";
  if (options.trace && result.trace.sequence.empty())
    throw Error(spec.method == Method::LloydMax
                    ? std::string("--trace: lloyd-max records no x_max iterates (sptq, msptq and uniform with "
                                  "--optimizer iterative do)")
                    : "--trace: the " + to_string(result.codebook.provenance().rule) +
                          " rule runs no iteration; use --optimizer iterative");

  if (options.json) {
    nlohmann::json j = {{"codebook", to_json(result.codebook)},
                        {"distortion", {{"total", result.distortion.total()},
                                        {"granular", result.distortion.granular},
                                        {"overload", result.distortion.overload}}},
                        {"sqnr_db", result.sqnr_db},
                        {"parameter", variable}};
    if (variable == "delta") j["delta"] = result.codebook.provenance().xmax / xmax_per_parameter(spec.method);
    if (!result.trace.sequence.empty()) j["trace"] = trace_json(spec, result.trace);
    if (points) {
      print_json(std::cout, j, {{"sweep", sweep_rows(*points)}});
    } else {
      std::cout << json_text(j) << '\n';
    }
  } else if (options.trace || points) {
    // A column per key, the varied parameter's named after it and left out where it is x_max
    // itself (whose column follows).
    using Names = std::vector<std::string>;
    Names keys = options.trace ? Names{"iteration", "value", "xmax", "distortion", "sqnr_db"}
                               : Names{"parameter", "xmax", "distortion", "granular", "overload", "sqnr_db"};
    const std::size_t parameter = options.trace ? 1 : 0;
    Names columns = keys;
    columns[parameter] = variable;
    if (variable == "xmax") {
      keys.erase(keys.begin() + parameter);
      columns.erase(columns.begin() + parameter);
    }
    const nlohmann::json trace = options.trace ? trace_json(spec, result.trace) : nlohmann::json::array();
    print_csv(options.trace ? all_rows(trace) : sweep_rows(*points), columns, keys);
  } else {
    print_human(result, options.all_cells);
  }
}

}  // namespace

void add_design_command(CLI::App& app) {
  auto options = std::make_shared<DesignOptions>();
  CLI::App* cmd = app.add_subcommand(
      "design", "Design a quantizer for the Laplacian source and print its thresholds, levels, "
                "distortion D and SQNR_th");
  cmd->add_option("--method,-m", options->method, "Quantizer family")
      ->check(CLI::IsMember({"uniform", "sptq", "msptq", "ternary", "mulaw", "lloyd-max"}))
      ->capture_default_str();
  CLI::Option* bits = cmd->add_option("--bits,-b", options->bits, "Code width R (2^R levels; sptq, msptq and ternary: 2)")
                          ->transform(whole_number_in(1, 16))
                          ->capture_default_str();
  cmd->add_option("--levels,-N", options->levels,
                  "Number of levels (default 2^bits; uniform, mulaw and lloyd-max only)")
      ->transform(whole_number_in(2, 65536));
  cmd->add_option("--xmax", options->xmax, "Support threshold x_max (source units); default: optimal");
  cmd->add_option("--optimizer", options->optimizer,
                  "How to find x_max when --xmax is absent: iterative (the design's fixed-point "
                  "rule) or numeric (minimise the exact D); default: iterative for sptq/msptq, "
                  "numeric for uniform/mulaw")
      ->check(CLI::IsMember({"iterative", "numeric"}));
  CLI::Option* alpha = cmd->add_option("--alpha", options->alpha,
                                       "Ternary scale factor (ternary only): x_max = alpha * (xmax or 3/sqrt(2))")
                           ->capture_default_str();
  CLI::Option* mu =
      cmd->add_option("--mu", options->mu, "mu-law compression parameter (mulaw only)")->capture_default_str();
  cmd->add_option("--init", options->init,
                  "Initial value of the iterative rule: Delta(0) for sptq/msptq, x_max(0) for uniform");
  cmd->add_option("--sigma", options->sigma, "Standard deviation of the Laplacian source")
      ->capture_default_str();
  CLI::Option* epsilon =
      cmd->add_option("--epsilon", options->epsilon, "Stop criterion |x(i+1) - x(i)| of the iterative rule")
          ->capture_default_str();
  CLI::Option* trace = cmd->add_flag("--trace", options->trace, "Print the iterates of the rule as CSV (Fig. 5)");
  cmd->add_option("--sweep", options->sweep,
                  "Print D against the design parameter (Delta for sptq/msptq, x_max otherwise) "
                  "as CSV over FROM:TO[:STEP] (Fig. 6)")
      ->excludes(trace)
      ->excludes("--xmax");
  cmd->add_flag("--all-cells", options->all_cells, "List every cell, however many");
  cmd->add_flag("--json", options->json, "Print everything as JSON");
  cmd->callback([options, bits, epsilon, mu, alpha] {
    require_own_parameters(options->method, *mu, *alpha);
    options->bits_given = bits->count() > 0;
    options->epsilon_given = epsilon->count() > 0;
    run_design(*options);
  });
}

}  // namespace nuq::cli
