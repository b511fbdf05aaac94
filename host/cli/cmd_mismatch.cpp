// nuq mismatch and nuq bitrate: the companion paper's variance-mismatch curves and bit-rate rule.
#include <algorithm>
#include <cmath>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "nuq/error.h"
#include "nuq/laplace.h"
#include "nuq/mismatch.h"
#include "nuq/number_text.h"
#include "nuq/model.h"
#include "nuq/ptq.h"
#include "table.h"
#include "json_text.h"

namespace nuq::cli {
namespace {

// --range FROM:TO with --step, or FROM:TO:STEP on its own (the step taken as a number, never
// through text, which would round it).
Range db_range(const std::string& text, double step) {
  Range range = parse_range(text, "--range");
  if (std::count(text.begin(), text.end(), ':') == 1) {
    NUQ_REQUIRE(std::isfinite(step) && step > 0.0, "--step: must be a positive number of dB, got ", step);
    range.step = step;
  }
  return range;
}

// A step given twice (FROM:TO:STEP and --step) is one too many: which would win is a guess.
void require_one_step(const std::string& range, const CLI::Option& step) {
  NUQ_REQUIRE(!step.count() || std::count(range.begin(), range.end(), ':') != 2, "--range ", range,
              " gives its own step; drop --step (or the range's third field)");
}

struct MismatchOptions {
  int bits = 12;
  std::string range = "-30:30";
  double step = 1.0;
  bool csv = false, json = false;
};

void run_mismatch(const MismatchOptions& o) {
  const Range r = db_range(o.range, o.step);
  const Codebook codebook = mismatch_design(o.bits);
  const std::vector<MismatchPoint> curve = mismatch_curve(codebook, r.from, r.to, r.step);
  if (o.json) {
    nlohmann::json points = nlohmann::json::array();
    for (const auto& p : curve)
      points.push_back({{"mismatch_db", p.mismatch_db}, {"sigma", p.sigma}, {"sqnr_db", p.sqnr_db},
                        {"approx_sqnr_db", p.approx_sqnr_db}, {"overload_share", p.overload_share}});
    std::cout << json_text(nlohmann::json{{"bits", o.bits}, {"xmax", codebook.xmax()}, {"points", points}}) << '\n';
    return;
  }
  if (o.csv) {
    std::cout << "mismatch_db,sigma,sqnr_db,approx_sqnr_db,overload_share\n";
    for (const auto& p : curve) {
      char line[160];
      std::snprintf(line, sizeof line, "%.10g,%.10g,%.10g,%.10g,%.10g\n", p.mismatch_db, p.sigma, p.sqnr_db,
                    p.approx_sqnr_db, p.overload_share);
      std::cout << line;
    }
    return;
  }
  std::cout << "Uniform quantizer, " << o.bits << " bits, designed for sigma_ref = 1 (iterative x_max = "
            << fixed(codebook.xmax(), 4) << "), applied to Laplace(0, sigma^2)\n\n";
  TextTable table({"20log10(s/s_ref) dB", "sigma", "SQNR exact dB", "high-rate approx dB", "approx - exact",
                   "overload share of D %"});
  for (const auto& p : curve)
    table.add_row({fixed(p.mismatch_db, 2), significant_text(p.sigma, 6), fixed(p.sqnr_db, 4), fixed(p.approx_sqnr_db, 4),
                   signed_fixed(p.approx_sqnr_db - p.sqnr_db, 4), fixed(100.0 * p.overload_share, 2)});
  std::cout << table.render();
}

struct BitrateOptions {
  std::optional<double> sqnr_min;
  std::string range, model;
  double step = 1.0;
  int min_bits = 1, max_bits = 16;
  bool json = false;
};

// Why no R up to --max-bits keeps the floor: where the largest R is worst over the range says
// whether overload (variance above the design's) or granular noise (variance below it) caps it.
std::string no_rate_reason(const BitrateOptions& o, double from, double to, double step) {
  const BitRateChoice w = worst_case(o.max_bits, from, to, step);
  const double matched = laplace_sqnr_db(mismatch_design(o.max_bits), 1.0);
  std::string reason = "no rate up to " + std::to_string(o.max_bits) + " bits keeps SQNR >= " + fixed(*o.sqnr_min, 2) +
                       " dB: at R = " + std::to_string(o.max_bits) + " the worst is " + fixed(w.worst_sqnr_db, 2) +
                       " dB at " + fixed(w.worst_at_db, 1) + " dB";
  if (*o.sqnr_min > matched)
    return reason + ", and even at the design's own variance it reaches only " + fixed(matched, 2) +
           " dB: lower the floor";
  if (w.worst_at_db > 0.0 && to - w.worst_at_db <= w.worst_at_db - from)
    return reason + " (overload: the variance outgrows the support there; narrow the range or normalise the weights)";
  return reason + " (granular noise: the variance is small against the step there; raise --max-bits, narrow the "
                  "range or normalise the weights)";
}

void run_bitrate(const BitrateOptions& o) {
  NUQ_REQUIRE(o.sqnr_min, "bitrate: give --sqnr-min (the SQNR every variance in the range must keep)");
  NUQ_REQUIRE(o.range.empty() != o.model.empty(), "bitrate: give either --range or --model",
              o.range.empty() ? "" : ", not both");
  double from = 0.0, to = 0.0, step = o.step;  // the range's own step when it gives one
  std::string source;
  if (!o.model.empty()) {
    // The weights as they are meet the unit-variance design: their standard deviation is the mismatch.
    const WeightStats stats = model_stats(load_model(o.model));
    NUQ_REQUIRE(stats.stddev() > 0.0, o.model, ": the parameters have zero variance; any rate stores them exactly");
    from = to = 20.0 * std::log10(stats.stddev());
    source = o.model + ": sigma_w = " + fixed(stats.stddev(), 6) + " (" + fixed(from, 2) + " dB from sigma_ref = 1)";
  } else {
    const Range r = db_range(o.range, o.step);
    from = r.from, to = r.to, step = r.step;
    source = "variance range " + fixed(from, 1) + ".." + fixed(to, 1) + " dB";
  }
  const auto choice = choose_bit_rate(*o.sqnr_min, from, to, step, o.min_bits, o.max_bits);
  const std::string why_none = choice ? "" : no_rate_reason(o, from, to, step);
  if (o.json) {
    nlohmann::json rates = nlohmann::json::array();
    for (int bits = o.min_bits; bits <= o.max_bits; ++bits) {
      const BitRateChoice w = worst_case(bits, from, to, step);
      rates.push_back({{"bits", bits}, {"worst_sqnr_db", w.worst_sqnr_db}, {"worst_at_db", w.worst_at_db}});
    }
    std::cout << json_text(nlohmann::json{{"sqnr_min_db", *o.sqnr_min}, {"from_db", from}, {"to_db", to},
                                {"bits", choice ? nlohmann::json(choice->bits) : nlohmann::json()},
                                {"reason", why_none}, {"rates", rates}})
              << '\n';
    NUQ_REQUIRE(choice, why_none);
    return;
  }
  TextTable table({"R", "worst SQNR dB", "at dB", "meets floor"});
  for (int bits = o.min_bits; bits <= o.max_bits; ++bits) {
    const BitRateChoice w = worst_case(bits, from, to, step);
    table.add_row({std::to_string(bits), fixed(w.worst_sqnr_db, 2), fixed(w.worst_at_db, 1),
                   w.worst_sqnr_db >= *o.sqnr_min ? "yes" : "no"});
  }
  std::cout << source << ", floor " << fixed(*o.sqnr_min, 2) << " dB\n\n" << table.render() << '\n';
  NUQ_REQUIRE(choice, why_none);  // no answer: exit status 1, the reason on stderr
  std::cout << "R = " << choice->bits << " bits (worst " << fixed(choice->worst_sqnr_db, 2) << " dB at "
            << fixed(choice->worst_at_db, 1) << " dB)\n";
}

}  // namespace

void add_mismatch_commands(CLI::App& app) {
  auto m = std::make_shared<MismatchOptions>();
  CLI::App* mismatch = app.add_subcommand(
      "mismatch", "SQNR of a uniform quantizer designed for unit variance over a range of input variance "
                  "(exact and high-rate approximation)");
  mismatch->add_option("--bits,-b", m->bits, "Bit rate R (2^R levels)")->check(CLI::Range(1, 16))->capture_default_str();
  mismatch->add_option("--range", m->range, "FROM:TO in dB of 20 log10(sigma / sigma_ref), e.g. --range=-30:30")
      ->capture_default_str();
  CLI::Option* step = mismatch->add_option("--step", m->step, "Step in dB")->capture_default_str();
  CLI::Option* csv = mismatch->add_flag("--csv", m->csv, "Print CSV");
  mismatch->add_flag("--json", m->json, "Print JSON")->excludes(csv);
  mismatch->callback([m, step] {
    require_one_step(m->range, *step);
    run_mismatch(*m);
  });

  auto b = std::make_shared<BitrateOptions>();
  CLI::App* bitrate = app.add_subcommand(
      "bitrate", "The smallest bit rate whose unit-variance uniform design keeps SQNR >= a floor over a variance "
                 "range, or at a model's own weight variance");
  bitrate->add_option("--sqnr-min", b->sqnr_min, "SQNR floor in dB");
  bitrate->add_option("--range", b->range, "FROM:TO in dB of 20 log10(sigma / sigma_ref), e.g. --range=-30:0");
  bitrate->add_option("--model", b->model, "An FP32 model (.safetensors): its weights' variance, unnormalised");
  CLI::Option* bitrate_step = bitrate->add_option("--step", b->step, "Step of the range in dB")->capture_default_str();
  bitrate->add_option("--min-bits", b->min_bits, "Smallest R considered")->check(CLI::Range(1, 16))->capture_default_str();
  bitrate->add_option("--max-bits", b->max_bits, "Largest R considered")->check(CLI::Range(1, 16))->capture_default_str();
  bitrate->add_flag("--json", b->json, "Print JSON");
  bitrate->callback([b, bitrate_step] {
    require_one_step(b->range, *bitrate_step);
    run_bitrate(*b);
  });
}

}  // namespace nuq::cli
