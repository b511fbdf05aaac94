// nuq mismatch and nuq bitrate: the companion paper's variance-mismatch curves, and the bit-rate
// rule nuq derives from it.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "nuq/checkpoint_stats.h"
#include "nuq/error.h"
#include "nuq/laplace.h"
#include "nuq/list_text.h"
#include "nuq/measured_rate.h"
#include "nuq/mismatch.h"
#include "nuq/weights_rule.h"
#include "nuq/number_text.h"
#include "nuq/model.h"
#include "nuq/ptq.h"
#include "nuq/sharded_checkpoint.h"
#include "nuq/terminal_text.h"
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
  std::string range, model, skip, nonfinite = "error";
  double step = 1.0;
  int min_bits = 1, max_bits = 16;
  bool json = false, per_tensor = false, quantize_vectors = false, measure = false;
};

// The weights --model names, as nuq quantize would take them: a nuq network whole (Algorithm 1,
// every parameter), a checkpoint's tensors that --skip and --quantize-vectors leave to quantize,
// read a piece at a time. Warnings a run would give (the index, F64 matrices, a --skip naming
// nothing) go to stderr as quantize's do. `quantized` quantizes them again by a table (--measure).
struct ModelWeights {
  std::shared_ptr<const CheckpointStats> stats;
  QuantizeWeights quantized;
};

ModelWeights weights_of(const BitrateOptions& o) {
  const NonFinite nonfinite = o.nonfinite == "saturate" ? NonFinite::Skip : NonFinite::Reject;
  if (is_nuq_network(o.model)) {
    NUQ_REQUIRE(o.skip.empty() && !o.quantize_vectors, o.model, ": nuq's own networks are quantized whole "
                "(Algorithm 1: every parameter); --skip and --quantize-vectors are for other checkpoints");
    auto model = std::make_shared<const Model>(load_model(o.model, nonfinite));
    auto stats = std::make_shared<CheckpointStats>();
    std::vector<WeightsInMemory> parameters;
    for (const Parameter& p : model->parameters) {
      WeightStats own;
      accumulate(own, p.values, o.model + ": " + p.name, nonfinite);
      require_finite_weights(own, o.model + ": tensor '" + p.name + "'");
      stats->tensors.push_back({p.name, own});
      parameters.push_back({p.values.data(), WeightType::F32, p.values.size()});
    }
    stats->all = model_stats(*model, nonfinite);
    return {stats, [model, stats, parameters](const QuantizeTable& table, std::vector<double>* fourth) {
              return in_memory_totals(parameters, stats->tensors, table, fourth);
            }};
  }
  warn_of_checkpoint(o.model);
  StreamOptions options;
  options.quantize_vectors = o.quantize_vectors;
  options.nonfinite = nonfinite;
  options.warnings = &std::cerr;
  if (isatty(STDERR_FILENO)) options.progress = &std::cerr;  // each read of a checkpoint of any size
  if (!o.skip.empty()) options.skip = skip_pattern(o.skip);
  auto stats = std::make_shared<const CheckpointStats>(checkpoint_weight_stats(o.model, options));
  return {stats, [options, path = o.model, stats](const QuantizeTable& table, std::vector<double>* fourth) {
            return checkpoint_quantized_totals(path, options, *stats, table, fourth);
          }};
}

// Constant weights (all-zero ones never reach here) are named: no Laplacian describes one repeated
// value, which is judged as it is, meeting one level ("all together": every weight of the model the
// same). Such a tensor is seldom a weight: a buffer, or a layer that never trained.
void warn_of_constants(const std::vector<const TensorStats*>& tensors, const std::string& what) {
  std::vector<std::string> constant;
  for (const TensorStats* t : tensors)
    if (t->stats.stddev() == 0.0)
      constant.push_back((t->name.empty() ? std::string("all together") : "'" + t->name + "'") + " (every weight " +
                         significant_text(t->stats.mean, 4) + ")");
  if (!constant.empty())
    std::cerr << "nuq: warning: " << what << ": constant weights: " << terminal_text(first_few(constant, 3))
              << ": judged as the one value each holds, whose SQNR is that of the level it meets, not a "
                 "Laplacian's\n";
}

nlohmann::json scale_json(const TensorStats& t) {
  return {{"tensor", t.name}, {"rms", t.stats.rms()}, {"mean", t.stats.mean}, {"sigma", t.stats.stddev()}};
}

// What --model gives the rule (weights_rule.h): the weights' range, the line saying so, and JSON.
struct MeasuredRange {
  WeightsRange range;
  std::string source;
  nlohmann::json json;
};

MeasuredRange measured_range(const BitrateOptions& o, const CheckpointStats& stats) {
  MeasuredRange r{weights_range(stats, o.per_tensor, o.model), "", nlohmann::json()};
  const WeightStats& all = stats.all;
  const TensorStats& low = stats.tensors[r.range.smallest];
  const TensorStats& high = stats.tensors[r.range.largest];
  r.json = {{"rms_w", all.rms()}, {"mean_w", all.mean}, {"sigma_w", all.stddev()}, {"weights", all.count},
            {"tensors", stats.tensors.size()}, {"zero_tensors", r.range.zero_tensors},
            {"smallest_rms", scale_json(low)}, {"largest_rms", scale_json(high)}};
  r.source = o.model + ": rms_w = " + significant_text(all.rms(), 6) + " (mean " + significant_text(all.mean, 4) +
             ", sigma " + significant_text(all.stddev(), 6) + ") over " + std::to_string(all.count) + " weights in " +
             std::to_string(stats.tensors.size()) + " tensor(s)";
  if (!o.per_tensor) {
    r.source += ", " + fixed(r.range.from_db, 2) + " dB from sigma_ref = 1";
    const TensorStats together{"", all};
    warn_of_constants({&together}, o.model);
    return r;
  }
  r.source += "; per tensor from " + fixed(r.range.from_db, 2) + " dB ('" + low.name + "') to " +
              fixed(r.range.to_db, 2) + " dB ('" + high.name + "')";
  const std::size_t zero = r.range.zero_tensors;
  if (zero) r.source += "; " + std::to_string(zero) + " all-zero tensor(s), no signal to keep, left out";
  std::vector<const TensorStats*> signal;
  for (const std::size_t i : r.range.with_signal) signal.push_back(&stats.tensors[i]);
  warn_of_constants(signal, o.model);
  return r;
}

std::string bits_text(int bits) { return std::to_string(bits) + (bits == 1 ? " bit" : " bits"); }

// Each R's worst case in [min_bits, max_bits]: over a range of variance, or of a model's weights.
using RateJudge = std::function<std::vector<BitRateChoice>(int min_bits, int max_bits)>;

// --measure: the weights quantized again at each rate the search tries (from the rule's answer, or
// --max-bits where it has none), as `nuq quantize -m uniform -b R --normalise none` quantizes them,
// and their kurtosis, the check of the Laplacian the rule assumes.
struct Measured {
  MeasuredSearch search;
  const CheckpointStats* stats = nullptr;
  std::vector<std::pair<double, std::size_t>> kurtosis;  // excess kurtosis and tensor, of those with spread, ascending
  std::string reason;                                     // why no rate keeps the floor as measured
  const MeasuredRate& at(int bits) const {
    const auto is = [&](const MeasuredRate& r) { return r.bits == bits; };
    return *std::find_if(search.rates.begin(), search.rates.end(), is);
  }
  const std::string& name(std::size_t tensor) const { return stats->tensors[tensor].name; }
};

Measured measure_rates(const BitrateOptions& o, const ModelWeights& weights, const BitRateChoice* rule) {
  Measured m;
  m.stats = weights.stats.get();
  const WeightsMeasured measured = measure_weights_rate(*o.sqnr_min, rule ? rule->bits : o.max_bits, o.min_bits,
                                                        o.max_bits, o.per_tensor, m.stats->tensors, weights.quantized);
  m.search = measured.search;
  for (std::size_t i = 0; i < measured.excess_kurtosis.size(); ++i)
    if (!std::isnan(measured.excess_kurtosis[i])) m.kurtosis.emplace_back(measured.excess_kurtosis[i], i);
  std::sort(m.kurtosis.begin(), m.kurtosis.end());
  if (!m.search.bits)
    m.reason = measured_no_rate_reason(m.search, *o.sqnr_min, o.max_bits, o.per_tensor, m.stats->tensors);
  return m;
}

nlohmann::json measured_json(const Measured& m) {
  nlohmann::json rates = nlohmann::json::array();
  for (const MeasuredRate& r : m.search.rates)
    rates.push_back({{"bits", r.bits}, {"sqnr_ex_db", r.together_db}, {"lowest_tensor", m.name(r.lowest)},
                     {"lowest_sqnr_ex_db", r.lowest_db}});
  nlohmann::json j{{"bits", m.search.bits ? nlohmann::json(*m.search.bits) : nlohmann::json()},
                   {"reason", m.reason}, {"rates", rates}};
  if (!m.kurtosis.empty()) {
    const auto kurtosis_json = [&](const std::pair<double, std::size_t>& k) {
      return nlohmann::json{{"tensor", m.name(k.second)}, {"excess_kurtosis", k.first}};
    };
    j["lowest_kurtosis"] = kurtosis_json(m.kurtosis.front());
    j["highest_kurtosis"] = kurtosis_json(m.kurtosis.back());
  }
  return j;
}

// The measured rates' table, the kurtosis line and the answer, beside the rule's.
void print_measured(const BitrateOptions& o, const Measured& m, const BitRateChoice* rule) {
  TextTable table({"R", "SQNR_ex dB", "lowest tensor", "its SQNR_ex dB", "meets floor"});
  for (const MeasuredRate& r : m.search.rates)
    table.add_row({std::to_string(r.bits), fixed(r.together_db, 2), terminal_text(m.name(r.lowest)),
                   fixed(r.lowest_db, 2), r.judged_db(o.per_tensor) >= *o.sqnr_min ? "yes" : "no"});
  std::cout << "\nMeasured: the weights quantized as nuq quantize -m uniform -b R --normalise none quantizes them "
               "(nothing written)"
            << (o.per_tensor ? "; each tensor keeps the floor" : "") << "\n\n"
            << table.render();
  if (!m.kurtosis.empty()) {
    const auto& [low, high] = std::make_pair(m.kurtosis.front(), m.kurtosis.back());
    std::cout << "excess kurtosis " << fixed(low.first, 2) << " ('" << terminal_text(m.name(low.second)) << "')";
    if (m.kurtosis.size() > 1)
      std::cout << " to " << fixed(high.first, 2) << " ('" << terminal_text(m.name(high.second)) << "')";
    std::cout << "; 3 for the Laplacian the rule assumes\n";
  }
  std::cout << '\n';
  NUQ_REQUIRE(m.search.bits, m.reason);  // no answer: exit status 1, the reason on stderr
  const MeasuredRate& chosen = m.at(*m.search.bits);
  std::cout << "R = " << bits_text(chosen.bits) << " as measured (" << fixed(chosen.together_db, 2)
            << " dB together, '" << terminal_text(m.name(chosen.lowest)) << "' lowest at " << fixed(chosen.lowest_db, 2)
            << " dB); ";
  if (!rule) {
    std::cout << "the rule: no rate up to " << bits_text(o.max_bits) << " keeps the floor\n";
    return;
  }
  const MeasuredRate& ruled = m.at(rule->bits);
  if (rule->bits == chosen.bits)
    std::cout << "the rule: " << bits_text(rule->bits) << ", predicted " << fixed(rule->worst_sqnr_db, 2) << " dB\n";
  else  // the kurtosis above tells whether they are the Laplacian the rule assumes
    std::cout << "the rule's " << bits_text(rule->bits) << " were predicted " << fixed(rule->worst_sqnr_db, 2)
              << " dB and measure " << fixed(ruled.judged_db(o.per_tensor), 2) << " dB\n";
}

void run_bitrate(const BitrateOptions& o) {
  NUQ_REQUIRE(o.sqnr_min, "bitrate: give --sqnr-min (the SQNR every variance in the range must keep)");
  NUQ_REQUIRE(std::isfinite(*o.sqnr_min), "bitrate: --sqnr-min must be a finite number of dB, got ", *o.sqnr_min);
  NUQ_REQUIRE(o.range.empty() != o.model.empty(), "bitrate: give either --range or --model",
              o.range.empty() ? "" : ", not both");
  NUQ_REQUIRE(o.min_bits <= o.max_bits, "bitrate: --min-bits ", o.min_bits, " is above --max-bits ", o.max_bits);
  double from = 0.0, to = 0.0;
  std::string source;
  nlohmann::json weights;  // what --model measured, for --json
  // Each rate's worst case once: the table, and the rule's answer, the first that keeps the floor.
  RateJudge judge;
  ModelWeights model;
  if (!o.model.empty()) {
    model = weights_of(o);
    MeasuredRange measured = measured_range(o, *model.stats);
    from = measured.range.from_db, to = measured.range.to_db;
    source = std::move(measured.source);
    weights = std::move(measured.json);
    judge = [range = std::move(measured.range), per_tensor = o.per_tensor](int min_bits, int max_bits) {
      return weights_rates(range, per_tensor, min_bits, max_bits);
    };
  } else {
    const Range r = db_range(o.range, o.step);
    from = r.from, to = r.to;
    source = "variance range " + fixed(from, 1) + ".." + fixed(to, 1) + " dB";
    judge = [r](int min_bits, int max_bits) { return worst_cases(r.from, r.to, r.step, min_bits, max_bits); };
  }
  const std::vector<BitRateChoice> rates = judge(o.min_bits, o.max_bits);
  const std::optional<BitRateChoice> answer = first_keeping(rates, *o.sqnr_min);
  const BitRateChoice* choice = answer ? &*answer : nullptr;  // none keeps the floor: null
  const std::string why_none =
      choice ? "" : rule_no_rate_reason(rates, [&](int bits) { return judge(bits, bits)[0]; }, *o.sqnr_min,
                                        o.max_bits, !o.model.empty());
  const std::optional<Measured> measured =
      o.measure ? std::optional<Measured>(measure_rates(o, model, choice)) : std::nullopt;
  if (o.json) {
    nlohmann::json table = nlohmann::json::array();
    for (const BitRateChoice& w : rates)
      table.push_back({{"bits", w.bits}, {"worst_sqnr_db", w.worst_sqnr_db}, {"worst_at_db", w.worst_at_db}});
    nlohmann::json j{{"sqnr_min_db", *o.sqnr_min}, {"from_db", from}, {"to_db", to},
                     {"bits", choice ? nlohmann::json(choice->bits) : nlohmann::json()}, {"reason", why_none},
                     {"rates", table}};
    if (!weights.is_null()) j["model"] = weights;
    if (measured) j["measured"] = measured_json(*measured);
    std::cout << json_text(j) << '\n';
    if (measured) NUQ_REQUIRE(measured->search.bits, measured->reason);
    else NUQ_REQUIRE(choice, why_none);
    return;
  }
  TextTable table({"R", "worst SQNR dB", "at dB", "meets floor"});
  for (const BitRateChoice& w : rates)
    table.add_row({std::to_string(w.bits), fixed(w.worst_sqnr_db, 2), fixed(w.worst_at_db, 1),
                   w.worst_sqnr_db >= *o.sqnr_min ? "yes" : "no"});
  std::cout << terminal_text(source) << ", floor " << fixed(*o.sqnr_min, 2) << " dB\n\n" << table.render();
  if (measured) return print_measured(o, *measured, choice);
  std::cout << '\n';
  NUQ_REQUIRE(choice, why_none);  // no answer: exit status 1, the reason on stderr
  std::cout << "R = " << choice->bits << (choice->bits == 1 ? " bit" : " bits") << " (worst "
            << fixed(choice->worst_sqnr_db, 2) << " dB at " << fixed(choice->worst_at_db, 1) << " dB)\n";
}

}  // namespace

void add_mismatch_commands(CLI::App& app) {
  auto m = std::make_shared<MismatchOptions>();
  CLI::App* mismatch = app.add_subcommand(
      "mismatch", "SQNR of a uniform quantizer designed for unit variance over a range of input variance "
                  "(exact and high-rate approximation)");
  mismatch->add_option("--bits,-b", m->bits, "Bit rate R (2^R levels)")->transform(whole_number_in(1, 16))->capture_default_str();
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
                 "range, or for a model's weights quantized unnormalised (each tensor at its own mean and sigma)");
  bitrate->add_option("--sqnr-min", b->sqnr_min, "SQNR floor in dB");
  bitrate->add_option("--range", b->range, "FROM:TO in dB of 20 log10(sigma / sigma_ref), e.g. --range=-30:0");
  bitrate->add_option("--model", b->model,
                      "A nuq model (every parameter) or a checkpoint: a safetensors file, folder of shards or index "
                      "(the tensors nuq quantize would quantize): its weights as they meet a unit-variance design "
                      "unnormalised, the Laplacian of their own mean and sigma (the table's point: their rms)");
  bitrate->add_flag("--per-tensor", b->per_tensor,
                    "With --model: every tensor keeps the floor at its own mean and sigma (the range shown from "
                    "the smallest tensor's rms to the largest's), as each meets the design quantized with "
                    "--normalise none");
  CLI::Option* nonfinite = bitrate->add_option("--nonfinite", b->nonfinite,
                                               "With --model, NaN or Inf in the weights: error (names the tensor and "
                                               "index), or saturate (left out of the statistics, as nuq quantize "
                                               "--nonfinite saturate leaves them)")
                               ->check(CLI::IsMember({"error", "saturate"}))
                               ->capture_default_str();
  CLI::Option* skip = bitrate->add_option("--skip", b->skip,
                                          "Checkpoints: tensors left out, as nuq quantize --skip keeps them");
  bitrate->add_flag("--quantize-vectors", b->quantize_vectors,
                    "Checkpoints: norms and biases count too, as with nuq quantize --quantize-vectors");
  CLI::Option* bitrate_step = bitrate->add_option("--step", b->step, "Step of the range in dB")->capture_default_str();
  bitrate->add_option("--min-bits", b->min_bits, "Smallest R considered")->transform(whole_number_in(1, 16))->capture_default_str();
  bitrate->add_option("--max-bits", b->max_bits, "Largest R considered")->transform(whole_number_in(1, 16))->capture_default_str();
  bitrate->add_flag("--measure", b->measure,
                    "With --model: quantize the weights as nuq quantize -m uniform -b R --normalise none would "
                    "(nothing written; a read of them per rate tried, from the rule's answer) and answer the "
                    "smallest R whose measured SQNR keeps the floor, with their excess kurtosis (the rule assumes "
                    "Laplacian weights: heavy tails and pruned zeros measure what it cannot foresee)");
  bitrate->add_flag("--json", b->json, "Print JSON");
  bitrate->callback([b, bitrate_step, skip, nonfinite] {
    require_one_step(b->range, *bitrate_step);
    NUQ_REQUIRE(b->model.empty() || !bitrate_step->count(), "bitrate: --step is the step of --range; --model "
                "measures its own range (one point, or with --per-tensor its two ends)");
    const bool saturate = nonfinite->count() && b->nonfinite != "error";
    NUQ_REQUIRE(!b->model.empty() || (!b->per_tensor && !skip->count() && !b->quantize_vectors && !saturate &&
                                       !b->measure),
                "bitrate: --per-tensor, --skip, --quantize-vectors, --nonfinite and --measure take the weights of "
                "--model; give it");
    NUQ_REQUIRE(!skip->count() || !b->skip.empty(), "--skip '': an empty expression matches every tensor name; give "
                "the names to leave out, e.g. 'embed_tokens|lm_head'");
    run_bitrate(*b);
  });
}

}  // namespace nuq::cli
