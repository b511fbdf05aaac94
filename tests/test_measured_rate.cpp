// `nuq bitrate --model M --measure`: the rule's answer checked by quantizing the weights as
// `nuq quantize -m uniform -b R --normalise none` does. The search against a scripted measure; every
// rate it measures against what quantize itself reports at that rate (a checkpoint of shards,
// BF16 and tensors longer than a piece; a nuq network); each read's progress line; and weights no
// Laplacian describes, where the rule's prediction misses the floor and the measurement does not.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nuq/checkpoint_stats.h"
#include "nuq/error.h"
#include "nuq/io/safetensors.h"
#include "nuq/measured_rate.h"
#include "nuq/model.h"
#include "bf16_tensor.h"
#include "checkpoint_cases.h"
#include "cli_runner.h"
#include "temp_dir.h"

namespace nuq {
namespace {

using test::CommandResult;
using test::run_nuq;

// Totals of one tensor whose SQNR is `db` (signal 1).
QuantizeTotals at_db(double db) {
  QuantizeTotals t;
  t.signal = 1.0;
  t.noise = std::pow(10.0, -db / 10.0);
  return t;
}

TEST(MeasuredRate, TheSearchTakesTheSmallestRateFromTheRulesAnswer) {
  // Measured SQNR 6 dB a bit, from 4 dB at 1 bit: 30 dB is first kept at 6 bits (34 dB).
  std::vector<int> asked;
  const MeasureAt six_a_bit = [&](int bits) {
    asked.push_back(bits);
    return std::vector<QuantizeTotals>{at_db(6.0 * bits - 2.0)};
  };
  // Where the rule is right, two reads; elsewhere steps of 1, 2, 4, ... bits, the last bisected.
  const std::map<int, std::vector<int>> reads{{6, {6, 5}},
                                              {4, {4, 5, 7, 6}},
                                              {1, {1, 2, 4, 8, 6, 5}},
                                              {9, {9, 8, 6, 2, 4, 5}},
                                              {16, {16, 15, 13, 9, 1, 5, 7, 6}}};
  for (const auto& [start, want] : reads) {
    SCOPED_TRACE("from " + std::to_string(start));
    asked.clear();
    const MeasuredSearch s = search_measured_rate(30.0, start, 1, 16, false, six_a_bit);
    ASSERT_TRUE(s.bits);
    EXPECT_EQ(*s.bits, 6);
    EXPECT_EQ(asked, want);
    ASSERT_EQ(s.rates.size(), want.size());
    EXPECT_TRUE(std::is_sorted(s.rates.begin(), s.rates.end(),
                               [](const MeasuredRate& a, const MeasuredRate& b) { return a.bits < b.bits; }));
  }
  for (int start = 1; start <= 16; ++start) {  // every start: the answer, the rate below it measured, no rate twice
    asked.clear();
    const MeasuredSearch s = search_measured_rate(30.0, start, 1, 16, false, six_a_bit);
    EXPECT_EQ(s.bits, std::optional<int>(6)) << start;
    EXPECT_NE(std::find(asked.begin(), asked.end(), 5), asked.end()) << start;
    std::sort(asked.begin(), asked.end());
    EXPECT_EQ(std::adjacent_find(asked.begin(), asked.end()), asked.end()) << start;
    EXPECT_LE(asked.size(), 8u) << start;
  }
  asked.clear();
  EXPECT_EQ(*search_measured_rate(-100.0, 3, 2, 16, false, six_a_bit).bits, 2);  // --min-bits bounds the way down
  EXPECT_EQ(asked, (std::vector<int>{3, 2}));
  // None keeps the floor: the top rate and the one below it are measured, for what the last bit gained.
  asked.clear();
  const MeasuredSearch none = search_measured_rate(30.0, 3, 1, 5, false, six_a_bit);
  EXPECT_FALSE(none.bits);
  EXPECT_EQ(asked, (std::vector<int>{3, 4, 5}));
  asked.clear();
  EXPECT_FALSE(search_measured_rate(30.0, 5, 1, 5, false, six_a_bit).bits);
  EXPECT_EQ(asked, (std::vector<int>{5, 4}));
  const std::vector<TensorStats> names{{"w", WeightStats{}}};
  EXPECT_NE(measured_no_rate_reason(none, 30.0, 5, false, names)
                .find("no rate up to 5 bits keeps SQNR >= 30.00 dB as measured: at R = 5 the weights measure "
                      "28.00 dB together, 'w' lowest at 28.00 dB (granular noise: the last bit gained 6.00 dB; "
                      "raise --max-bits)"),
            std::string::npos)
      << measured_no_rate_reason(none, 30.0, 5, false, names);

  // Together: every tensor's signal over every tensor's noise; per tensor: the lowest with a signal.
  // An all-zero tensor's noise counts together, and it is never the lowest; no noise is +inf.
  QuantizeTotals zero;
  zero.noise = 0.5;
  const MeasuredRate r = measured_rate(4, {at_db(20.0), zero, at_db(10.0)});
  EXPECT_EQ(r.lowest, 2u);
  EXPECT_DOUBLE_EQ(r.lowest_db, 10.0);
  EXPECT_NEAR(r.together_db, 10.0 * std::log10(2.0 / (0.01 + 0.5 + 0.1)), 1e-12);
  const MeasuredSearch two = search_measured_rate(15.0, 4, 1, 16, true, [&](int) {
    return std::vector<QuantizeTotals>{at_db(20.0), zero, at_db(10.0)};
  });
  EXPECT_FALSE(two.bits);  // the lowest tensor, 10 dB, misses 15 at every rate
  const std::vector<TensorStats> three{{"a", WeightStats{}}, {"zero", WeightStats{}}, {"c", WeightStats{}}};
  EXPECT_NE(measured_no_rate_reason(two, 15.0, 16, true, three).find("'c' lowest at 10.00 dB (overload: the last bit "
                                                                      "gained 0.00 dB"),
            std::string::npos);
  EXPECT_TRUE(std::isinf(measured_rate(1, {QuantizeTotals{1.0, 0.0}}).lowest_db));
  EXPECT_THROW(measured_rate(1, {zero}), Error);
}

// What quantize --json reports at `bits`, unnormalised: the summary and each tensor's SQNR_ex and
// excess kurtosis, by name.
struct QuantizeReport {
  double together_db = 0.0;
  std::map<std::string, std::pair<double, double>> tensors;  // SQNR_ex, excess kurtosis
};
QuantizeReport quantized_report(const std::string& input, const std::string& output, int bits,
                                const std::string& flags = "") {
  std::filesystem::remove_all(output);
  const CommandResult q = run_nuq("quantize " + input + " -o " + output + " -m uniform -b " + std::to_string(bits) +
                                  " --normalise none " + flags + " --json 2>/dev/null");
  EXPECT_EQ(q.status, 0) << q.output;
  const nlohmann::json j = nlohmann::json::parse(q.output);
  QuantizeReport r;
  r.together_db = j.at("sqnr_ex_db").get<double>();
  const auto number = [](const nlohmann::json& x) { return x.is_null() ? NAN : x.get<double>(); };
  for (const nlohmann::json& t : j.at("tensors"))  // an all-zero tensor measures -inf, written null
    r.tensors[t.at("name").get<std::string>()] = {number(t.at("sqnr_ex_db")), number(t.at("excess_kurtosis"))};
  return r;
}

// Every rate --measure took is what quantizing at it reports: together, the lowest tensor and its
// SQNR, and the extremes of the excess kurtosis; the rate answered keeps the floor and the one
// below it, where measured, does not.
void expect_measured_as_quantize_reports(const std::string& input, const std::string& output, const std::string& flags,
                                         double floor, bool per_tensor) {
  const CommandResult r = run_nuq("bitrate --model " + input + " --sqnr-min " + std::to_string(floor) + " --measure " +
                                  flags + (per_tensor ? " --per-tensor" : "") + " --json");
  ASSERT_EQ(r.status, 0) << r.output;
  const nlohmann::json m = nlohmann::json::parse(r.output).at("measured");
  const int bits = m.at("bits").get<int>();
  ASSERT_GE(m.at("rates").size(), 2u);  // these cases take a rate above --min-bits: the one below is measured
  EXPECT_EQ(std::count_if(m.at("rates").begin(), m.at("rates").end(),
                          [&](const nlohmann::json& r) { return r.at("bits").get<int>() == bits - 1; }),
            1);
  for (const nlohmann::json& rate : m.at("rates")) {
    const int at = rate.at("bits").get<int>();
    SCOPED_TRACE(std::to_string(at) + " bits");
    const QuantizeReport q = quantized_report(input, output, at, flags);
    EXPECT_NEAR(rate.at("sqnr_ex_db").get<double>(), q.together_db, 1e-6);
    // The lowest of those with a signal (an all-zero tensor's SQNR is null, NaN here).
    const auto lowest = std::min_element(q.tensors.begin(), q.tensors.end(), [](const auto& a, const auto& b) {
      return !std::isnan(a.second.first) && (std::isnan(b.second.first) || a.second.first < b.second.first);
    });
    EXPECT_EQ(rate.at("lowest_tensor").get<std::string>(), lowest->first);
    EXPECT_NEAR(rate.at("lowest_sqnr_ex_db").get<double>(), lowest->second.first, 1e-6);
    const double value = per_tensor ? lowest->second.first : q.together_db;
    if (at < bits) {  // (these weights' SQNR grows with R)
      EXPECT_LT(value, floor);
    } else {
      EXPECT_GE(value, floor);
    }
    const auto kurtosis_of = [&](const char* key) {
      const nlohmann::json& k = m.at(key);
      EXPECT_NEAR(k.at("excess_kurtosis").get<double>(), q.tensors.at(k.at("tensor").get<std::string>()).second, 1e-4);
      return k.at("excess_kurtosis").get<double>();
    };
    const double low = kurtosis_of("lowest_kurtosis"), high = kurtosis_of("highest_kurtosis");
    for (const auto& [name, t] : q.tensors) {
      if (std::isnan(t.second)) continue;  // no spread: no kurtosis
      EXPECT_TRUE(low <= t.second + 1e-4 && t.second <= high + 1e-4) << name;
    }
  }
}

TEST(MeasuredRate, EveryRateMeasuresWhatQuantizeReportsAtIt) {
  test::TempDir dir;
  const std::string folder = dir.file("shards");
  std::filesystem::create_directory(folder);
  io::TensorFile first = test::shard(11, "model.layers.0.");
  // Longer than a piece (kPieceBytes) in both types, and of other scales: read in several pieces.
  std::vector<float> embed = test::draw(test::Law::Laplace, 2100 * 1000, 0.01, 0.3, 12);
  first.tensors["model.embed.weight"] = test::bf16_tensor({2100, 1000}, embed);
  io::write_safetensors(folder + "/model-00001-of-00002.safetensors", first);
  io::TensorFile second = test::shard(23, "model.layers.1.");
  second.tensors["lm_head.weight"] =
      io::f32_tensor({1500, 1000}, test::draw(test::Law::Gauss, 1500 * 1000, -0.002, 0.08, 31));
  io::write_safetensors(folder + "/model-00002-of-00002.safetensors", second);
  const std::string output = dir.file("q");
  expect_measured_as_quantize_reports(folder, output, "", 30.0, false);
  expect_measured_as_quantize_reports(folder, output, "--skip lm_head", 40.0, true);

  // A nuq network, every parameter: its zero biases count together and are never the lowest.
  const std::string mlp = dir.file("mlp.safetensors");
  save_model(mlp, make_model(Architecture::Mlp, 4));
  expect_measured_as_quantize_reports(mlp, dir.file("q.safetensors"), "", 30.0, false);
  expect_measured_as_quantize_reports(mlp, dir.file("q.safetensors"), "", 30.0, true);
}

// Each read of a checkpoint shows its progress where asked (a terminal's stderr): the pass, the
// tensor, GB read of GB, the rate and the time left, and the line is cleared at the end.
TEST(MeasuredRate, EachReadOfACheckpointShowsItsProgress) {
  test::TempDir dir;
  io::TensorFile file = test::shard(3, "layers.0.");
  io::write_safetensors(dir.file("m.safetensors"), file);
  std::ostringstream shown;
  StreamOptions options;
  options.progress = &shown;
  const CheckpointStats stats = checkpoint_weight_stats(dir.file("m.safetensors"), options);
  EXPECT_EQ(shown.str().rfind("\r\033[Kstatistics layers.0.", 0), 0u) << shown.str();
  EXPECT_NE(shown.str().find(" GB, "), std::string::npos) << shown.str();
  EXPECT_NE(shown.str().find(" GB/s, ETA "), std::string::npos) << shown.str();
  EXPECT_EQ(shown.str().substr(shown.str().size() - 4), "\r\033[K");
  shown.str("");
  checkpoint_quantized_totals(dir.file("m.safetensors"), options, stats, unnormalised_table(uniform_design(3)));
  EXPECT_EQ(shown.str().rfind("\r\033[Kquantizing (8 levels) layers.0.", 0), 0u) << shown.str();
}

// Weights no Laplacian describes: mostly exact zeros (pruned), where each zero meets no zero level,
// and Student-t tails of 3 degrees, which overload any support. The rule's rate is measured under
// the floor, the measured one keeps it, and where none does the refusal says so and why.
TEST(MeasuredRate, WeightsNoLaplacianDescribesAreMeasuredWhereTheRuleMisses) {
  test::TempDir dir;
  std::mt19937_64 rng(5);
  std::vector<float> pruned = test::draw(test::Law::Laplace, 512 * 512, 0.0, 0.05, 6);
  std::bernoulli_distribution kept(0.1);
  for (float& w : pruned)
    if (!kept(rng)) w = 0.0f;
  const std::string pruned_file = dir.file("pruned.safetensors");
  io::TensorFile file;
  file.tensors["w"] = io::f32_tensor({512, 512}, pruned);
  io::write_safetensors(pruned_file, file);
  const CommandResult r = run_nuq("bitrate --model " + pruned_file + " --sqnr-min 30 --measure --json");
  ASSERT_EQ(r.status, 0) << r.output;
  const nlohmann::json j = nlohmann::json::parse(r.output);
  const int rule = j.at("bits").get<int>(), measured = j.at("measured").at("bits").get<int>();
  EXPECT_GT(measured, rule);
  EXPECT_LT(quantized_report(pruned_file, dir.file("q.safetensors"), rule).together_db, 29.0);
  EXPECT_GE(quantized_report(pruned_file, dir.file("q.safetensors"), measured).together_db, 30.0);
  EXPECT_GT(j.at("measured").at("highest_kurtosis").at("excess_kurtosis").get<double>(), 30.0);
  const CommandResult text = run_nuq("bitrate --model " + pruned_file + " --sqnr-min 30 --measure");
  ASSERT_EQ(text.status, 0) << text.output;
  EXPECT_NE(text.output.find("R = " + std::to_string(measured) + " bits as measured"), std::string::npos)
      << text.output;
  EXPECT_NE(text.output.find("the rule's " + std::to_string(rule) + " bits were predicted"), std::string::npos)
      << text.output;
  EXPECT_NE(text.output.find("; 3 for the Laplacian the rule assumes"), std::string::npos) << text.output;

  std::student_t_distribution<double> t3(3.0);
  std::vector<float> tails(512 * 512);
  for (float& w : tails) w = static_cast<float>(t3(rng) / std::sqrt(3.0));
  const std::string tails_file = dir.file("tails.safetensors");
  file.tensors["w"] = io::f32_tensor({512, 512}, tails);
  io::write_safetensors(tails_file, file);
  const CommandResult ruled = run_nuq("bitrate --model " + tails_file + " --sqnr-min 30");
  ASSERT_EQ(ruled.status, 0) << ruled.output;  // the rule finds a rate: it takes a Laplacian of sigma 1
  EXPECT_LT(quantized_report(tails_file, dir.file("q.safetensors"), 16).together_db, 30.0);
  const CommandResult refused = run_nuq("bitrate --model " + tails_file + " --sqnr-min 30 --measure");
  EXPECT_EQ(refused.status, 1) << refused.output;
  EXPECT_NE(refused.output.find("no rate up to 16 bits keeps SQNR >= 30.00 dB as measured: at R = 16"),
            std::string::npos)
      << refused.output;
  EXPECT_NE(refused.output.find("(overload: the last bit gained"), std::string::npos) << refused.output;
}

}  // namespace
}  // namespace nuq
