// The statistics of the weights `nuq quantize` would quantize in a checkpoint, read a piece at a
// time (checkpoint_weight_stats), against Welford's one-weight-at-a-time reference over each whole
// tensor; and `nuq bitrate --model` on a checkpoint: its sigma against the one `nuq quantize`
// records, its rate against the rule, and the rate's SQNR against what quantizing at it measures.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nuq/checkpoint_stats.h"
#include "nuq/error.h"
#include "nuq/io/safetensors.h"
#include "nuq/io/safetensors_stream.h"
#include "nuq/io/widen.h"
#include "nuq/mismatch.h"
#include "nuq/model.h"
#include "nuq/ptq.h"
#include "checkpoint_cases.h"
#include "cli_runner.h"
#include "temp_dir.h"

namespace nuq {
namespace {

using test::CommandResult;
using test::run_nuq;

// A folder of two shards: an F32 and a BF16 matrix each (shard()), a norm and an I64 buffer, and in
// the second an F32 matrix of 6 MB, longer than a piece (kPieceBytes), with its own scale.
void write_checkpoint(const std::string& folder) {
  io::TensorFile first = test::shard(11, "model.layers.0.");
  io::write_safetensors(folder + "/model-00001-of-00002.safetensors", first);
  io::TensorFile second = test::shard(23, "model.layers.1.");
  second.tensors["lm_head.weight"] =
      io::f32_tensor({1500, 1000}, test::draw(test::Law::Laplace, 1500 * 1000, -0.002, 0.08, 31));
  io::write_safetensors(folder + "/model-00002-of-00002.safetensors", second);
}

// Welford's reference over one whole tensor of a shard, widened exactly.
WeightStats reference(const std::string& shard, const std::string& name) {
  const io::TensorFile file = io::read_safetensors(shard);
  const std::vector<float> values = io::widened(file.tensors.at(name), name);
  return stats_ref(values.data(), values.size(), name);
}

void expect_same_statistics(const WeightStats& got, const WeightStats& want, const std::string& name) {
  EXPECT_EQ(got.count, want.count) << name;
  EXPECT_EQ(got.min, want.min) << name;
  EXPECT_EQ(got.max, want.max) << name;
  EXPECT_NEAR(got.mean, want.mean, 1e-12 * want.stddev()) << name;
  EXPECT_NEAR(got.stddev(), want.stddev(), 1e-12 * want.stddev()) << name;
}

TEST(CheckpointStats, EachTensorIsTheReferencesAndOnlyTheQuantizedOnesCount) {
  test::TempDir dir;
  const std::string folder = dir.path().string();
  write_checkpoint(folder);
  const std::string first = dir.file("model-00001-of-00002.safetensors"),
                    second = dir.file("model-00002-of-00002.safetensors");
  const CheckpointStats stats = checkpoint_weight_stats(folder, StreamOptions{});
  const std::vector<std::pair<std::string, std::string>> quantized = {  // in name order
      {"lm_head.weight", second},
      {"model.layers.0.q_proj.weight", first},
      {"model.layers.0.up_proj.weight", first},
      {"model.layers.1.q_proj.weight", second},
      {"model.layers.1.up_proj.weight", second}};
  ASSERT_EQ(stats.tensors.size(), quantized.size());
  WeightStats all;
  std::uint64_t bytes = 0;
  for (std::size_t i = 0; i < quantized.size(); ++i) {
    const auto& [name, shard] = quantized[i];
    EXPECT_EQ(stats.tensors[i].name, name);
    const WeightStats want = reference(shard, name);
    expect_same_statistics(stats.tensors[i].stats, want, name);
    all = combine(all, want);
    const io::SafetensorsReader reader(shard);
    bytes += reader.layout().tensors.at(name).end - reader.layout().tensors.at(name).begin;
  }
  expect_same_statistics(stats.all, all, "all");
  EXPECT_EQ(stats.bytes, bytes);

  // The options choose the tensors as nuq quantize's do: vectors too, or fewer by name.
  StreamOptions vectors;
  vectors.quantize_vectors = true;
  const CheckpointStats with_norms = checkpoint_weight_stats(folder, vectors);
  ASSERT_EQ(with_norms.tensors.size(), quantized.size() + 2);  // the two norms; the I64 buffer never
  EXPECT_EQ(with_norms.all.count, stats.all.count + 80);
  StreamOptions skip;
  skip.skip = skip_pattern("lm_head");
  const CheckpointStats without_head = checkpoint_weight_stats(folder, skip);
  ASSERT_EQ(without_head.tensors.size(), quantized.size() - 1);
  EXPECT_EQ(without_head.tensors.front().name, "model.layers.0.q_proj.weight");
  EXPECT_EQ(without_head.all.count, stats.all.count - 1500 * 1000);
}

TEST(CheckpointStats, ANonFiniteWeightIsNamedByItsPlaceInTheWholeTensor) {
  test::TempDir dir;
  io::TensorFile file;
  std::vector<float> w = test::draw(test::Law::Laplace, 1500 * 1000, 0.0, 0.05, 5);
  const std::size_t at = 1234567;  // in the second piece of 4 MiB
  w[at] = std::nanf("");
  file.tensors["w"] = io::f32_tensor({1500, 1000}, w);
  const std::string path = dir.file("nan.safetensors");
  io::write_safetensors(path, file);
  try {
    checkpoint_weight_stats(path, StreamOptions{});
    FAIL() << "a NaN was taken in";
  } catch (const NonFiniteWeight& e) {
    EXPECT_EQ(e.index, at);
    const std::string what = e.what();
    EXPECT_NE(what.find(path), std::string::npos) << what;
    EXPECT_NE(what.find("[1234, 567]"), std::string::npos) << what;
  }
  StreamOptions saturate;
  saturate.nonfinite = NonFinite::Skip;
  const CheckpointStats stats = checkpoint_weight_stats(path, saturate);
  EXPECT_EQ(stats.all.nonfinite, 1u);
  EXPECT_EQ(stats.all.count, w.size() - 1);
}

TEST(CheckpointStats, QuantizedFilesAndCheckpointsWithNothingToQuantizeAreRefused) {
  test::TempDir dir;
  const std::string folder = dir.path().string();
  write_checkpoint(folder);
  const CommandResult q = run_nuq("quantize " + folder + " -o " + dir.file("q"));
  ASSERT_EQ(q.status, 0) << q.output;
  EXPECT_THROW(
      try { checkpoint_weight_stats(dir.file("q"), StreamOptions{}); } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("already quantized"), std::string::npos) << e.what();
        throw;
      },
      Error);
  io::TensorFile norms;
  norms.tensors["norm.weight"] = io::f32_tensor({8}, std::vector<float>(8, 1.0f));
  io::write_safetensors(dir.file("norms.safetensors"), norms);
  EXPECT_THROW(checkpoint_weight_stats(dir.file("norms.safetensors"), StreamOptions{}), Error);
  // Two constant matrices: unnormalised, each meets the design at its rms, |0.5| (told that the
  // model says nothing of one value); all-zero weights have no signal for a floor to keep.
  io::TensorFile constants;
  constants.tensors["a.weight"] = io::f32_tensor({4, 8}, std::vector<float>(32, 0.5f));
  constants.tensors["b.weight"] = io::f32_tensor({4, 8}, std::vector<float>(32, -0.5f));
  io::write_safetensors(dir.file("constants.safetensors"), constants);
  const CommandResult both = run_nuq("bitrate --model " + dir.file("constants.safetensors") + " --sqnr-min 30 --json");
  ASSERT_EQ(both.status, 0) << both.output;
  const nlohmann::json together = nlohmann::json::parse(both.output).at("model");
  EXPECT_EQ(together.at("rms_w").get<double>(), 0.5);
  EXPECT_EQ(together.at("sigma_w").get<double>(), 0.5);
  EXPECT_EQ(together.at("mean_w").get<double>(), 0.0);
  const CommandResult each = run_nuq("bitrate --model " + dir.file("constants.safetensors") + " --sqnr-min 30 --per-tensor");
  EXPECT_EQ(each.status, 0) << each.output;
  EXPECT_NE(each.output.find("per tensor from -6.02 dB"), std::string::npos) << each.output;
  EXPECT_NE(each.output.find("to -6.02 dB"), std::string::npos) << each.output;
  EXPECT_NE(each.output.find("warning: " + dir.file("constants.safetensors") + ": constant weights: 'a.weight' (every "
                             "weight 0.5), 'b.weight' (every weight -0.5)"),
            std::string::npos)
      << each.output;
  EXPECT_EQ(each.output.find("off centre"), std::string::npos) << each.output;
  io::TensorFile zeros;
  zeros.tensors["a.weight"] = io::f32_tensor({4, 8}, std::vector<float>(32, 0.0f));
  io::write_safetensors(dir.file("zeros.safetensors"), zeros);
  const CommandResult zero = run_nuq("bitrate --model " + dir.file("zeros.safetensors") + " --sqnr-min 30");
  EXPECT_EQ(zero.status, 1) << zero.output;
  EXPECT_NE(zero.output.find("every weight is zero"), std::string::npos) << zero.output;
}

double db(double rms) { return 20.0 * std::log10(rms); }

// `nuq bitrate --model` on a checkpoint: the rms of the weights (no normalisation: every tensor
// meets the unit-variance design as it is), the rule's rate at it and, per tensor, over the
// tensors' range; then quantizing at that rate measures the SQNR the rule promised.
TEST(CheckpointStats, BitrateOfACheckpointIsTheRulesAtItsSigmaAndQuantizingThereMeetsIt) {
  test::TempDir dir;
  const std::string folder = dir.path().string();
  write_checkpoint(folder);
  const CommandResult global = run_nuq("bitrate --model " + folder + " --sqnr-min 30 --json");
  ASSERT_EQ(global.status, 0) << global.output;
  const nlohmann::json g = nlohmann::json::parse(global.output);
  const CheckpointStats stats = checkpoint_weight_stats(folder, StreamOptions{});
  EXPECT_NEAR(g.at("model").at("sigma_w").get<double>(), stats.all.stddev(), 1e-12 * stats.all.stddev());
  EXPECT_NEAR(g.at("model").at("rms_w").get<double>(), stats.all.rms(), 1e-12 * stats.all.rms());
  EXPECT_EQ(g.at("model").at("weights").get<std::size_t>(), stats.all.count);
  EXPECT_EQ(g.at("bits").get<int>(), choose_bit_rate(30.0, db(stats.all.rms()), db(stats.all.rms()))->bits);

  const CommandResult per_tensor = run_nuq("bitrate --model " + folder + " --sqnr-min 30 --per-tensor --json");
  ASSERT_EQ(per_tensor.status, 0) << per_tensor.output;
  const nlohmann::json p = nlohmann::json::parse(per_tensor.output);
  double low = INFINITY, high = 0.0;
  std::string lowest;
  for (const TensorStats& t : stats.tensors) {
    if (t.stats.rms() < low) low = t.stats.rms(), lowest = t.name;
    high = std::max(high, t.stats.rms());
  }
  EXPECT_EQ(p.at("model").at("smallest_rms").at("tensor"), lowest);
  EXPECT_NEAR(p.at("from_db").get<double>(), db(low), 1e-9);
  EXPECT_NEAR(p.at("to_db").get<double>(), db(high), 1e-9);
  const auto choice = choose_bit_rate(30.0, db(low), db(high), 0.01);  // a fine grid: the worst is at an end
  ASSERT_TRUE(choice);
  const int bits = p.at("bits").get<int>();
  EXPECT_EQ(bits, choice->bits);

  // Quantized at that rate without normalisation, each tensor's measured SQNR is its predicted one
  // (these Laplacian draws and the uniform design's granular noise: within a few hundredths of a dB)
  // and every one keeps the floor.
  const CommandResult q = run_nuq("quantize " + folder + " -o " + dir.file("q") + " -m uniform -b " +
                                  std::to_string(bits) + " --normalise none --json");
  ASSERT_EQ(q.status, 0) << q.output;
  const nlohmann::json report = nlohmann::json::parse(q.output);
  EXPECT_NEAR(report.at("sqnr_ex_db").get<double>(), worst_case(bits, db(stats.all.rms()), db(stats.all.rms())).worst_sqnr_db,
              0.1);
  for (const nlohmann::json& t : report.at("tensors")) {
    const std::string name = t.at("name");
    const auto own = std::find_if(stats.tensors.begin(), stats.tensors.end(), [&](const TensorStats& s) { return s.name == name; });
    ASSERT_NE(own, stats.tensors.end()) << name;
    const double predicted = worst_case(bits, db(own->stats.rms()), db(own->stats.rms())).worst_sqnr_db;
    EXPECT_NEAR(t.at("sqnr_ex_db").get<double>(), predicted, 0.15) << name;
    EXPECT_GE(t.at("sqnr_ex_db").get<double>(), 30.0 - 0.15) << name;
  }

  // --skip leaves a tensor out as quantize's does.
  std::filesystem::remove_all(dir.file("q"));
  const CommandResult skipped = run_nuq("bitrate --model " + folder + " --sqnr-min 30 --skip lm_head --json");
  ASSERT_EQ(skipped.status, 0) << skipped.output;
  EXPECT_EQ(nlohmann::json::parse(skipped.output).at("model").at("tensors").get<std::size_t>(), stats.tensors.size() - 1);
}

// A nuq network is measured whole, every parameter, as Algorithm 1 quantizes it.
TEST(CheckpointStats, BitrateOfANuqNetworkTakesEveryParameter) {
  test::TempDir dir;
  const std::string path = dir.file("mlp.safetensors");
  const Model model = make_model(Architecture::Mlp, 4);
  save_model(path, model);
  const CommandResult r = run_nuq("bitrate --model " + path + " --sqnr-min 30 --per-tensor --json");
  ASSERT_EQ(r.status, 0) << r.output;
  const nlohmann::json j = nlohmann::json::parse(r.output);
  const WeightStats all = model_stats(model);
  EXPECT_NEAR(j.at("model").at("sigma_w").get<double>(), all.stddev(), 1e-12 * all.stddev());
  EXPECT_NEAR(j.at("model").at("rms_w").get<double>(), all.rms(), 1e-12 * all.rms());
  EXPECT_EQ(j.at("model").at("tensors").get<std::size_t>(), model.parameters.size());
  EXPECT_EQ(j.at("model").at("weights").get<std::size_t>(), all.count);
  // A fresh network's biases are zeros: no signal to keep, left out of the range and counted.
  double low = INFINITY, high = 0.0;
  std::size_t zero = 0;
  for (const Parameter& p : model.parameters) {
    const double rms = stats_ref(p.values.data(), p.values.size(), p.name).rms();
    if (rms == 0.0) ++zero;
    else low = std::min(low, rms), high = std::max(high, rms);
  }
  EXPECT_GT(zero, 0u);
  EXPECT_EQ(j.at("model").at("zero_tensors").get<std::size_t>(), zero);
  EXPECT_NEAR(j.at("from_db").get<double>(), db(low), 1e-9);
  EXPECT_NEAR(j.at("to_db").get<double>(), db(high), 1e-9);
}


// The SQNR of the one tensor of `input` quantized uniform at `bits` without normalisation.
double unnormalised_sqnr(const std::string& input, const std::string& output, int bits) {
  std::filesystem::remove(output);
  const CommandResult q = run_nuq("quantize " + input + " -o " + output + " -m uniform -b " + std::to_string(bits) +
                                  " --normalise none --json 2>/dev/null");
  EXPECT_EQ(q.status, 0) << q.output;
  return nlohmann::json::parse(q.output.substr(q.output.find('{'))).at("tensors").at(0).at("sqnr_ex_db").get<double>();
}

// Weights off centre meet the unnormalised design as the Laplacian of their own mean and sigma, the
// mean counted as signal. A tensor at 20 with a spread of 0.05: judged by its spread alone, 12 bits
// would keep 30 dB, yet quantizing at 12 bits measures under 7 dB; judged with its mean no rate keeps
// the floor (overload), and none does when quantized. Milder offsets (means of 2 and 4 sigma at
// several scales) are predicted within 0.05 dB of what quantizing measures, at the rate chosen and
// the one below it. (Judged as a centred Laplacian at their rms, as before, the prediction was off by
// 0.36 dB at sigma 0.04 and a mean of 4 sigma, the rate chosen missing a 20 dB floor, and by 2.5 dB
// at sigma 0.5 and a mean of 2 sigma.)
TEST(CheckpointStats, WeightsOffCentreAreJudgedWithTheirMean) {
  test::TempDir dir;
  const std::string far = dir.file("far.safetensors"), near = dir.file("near.safetensors");
  io::TensorFile file;
  file.tensors["w"] = io::f32_tensor({256, 256}, test::draw(test::Law::Laplace, 256 * 256, 20.0, 0.05, 7));
  io::write_safetensors(far, file);
  const WeightStats far_stats = checkpoint_weight_stats(far, StreamOptions{}).all;
  const int by_spread = choose_bit_rate(30.0, db(far_stats.stddev()), db(far_stats.stddev()))->bits;
  EXPECT_LT(unnormalised_sqnr(far, dir.file("q.safetensors"), by_spread), 10.0);
  EXPECT_LT(unnormalised_sqnr(far, dir.file("q.safetensors"), 16), 30.0);
  const CommandResult none = run_nuq("bitrate --model " + far + " --sqnr-min 30 --per-tensor");
  EXPECT_EQ(none.status, 1) << none.output;
  EXPECT_NE(none.output.find("no rate up to 16 bits"), std::string::npos) << none.output;
  EXPECT_NE(none.output.find("(overload"), std::string::npos) << none.output;

  struct Case {
    double sigma, means, floor;
  };
  std::uint64_t seed = 8;
  for (const Case c : {Case{0.25, 4, 20}, Case{0.25, 4, 40}, Case{0.04, 4, 20}, Case{0.5, 2, 20}, Case{0.5, 4, 40}}) {
    SCOPED_TRACE("sigma " + std::to_string(c.sigma) + ", mean " + std::to_string(c.means) + " sigma, floor " +
                 std::to_string(c.floor));
    file.tensors["w"] = io::f32_tensor({512, 512}, test::draw(test::Law::Laplace, 512 * 512, c.means * c.sigma, c.sigma,
                                                              seed++));
    io::write_safetensors(near, file);
    const CommandResult r = run_nuq("bitrate --model " + near + " --sqnr-min " + std::to_string(c.floor) + " --json");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(r.output.find("warning"), std::string::npos) << r.output;
    const nlohmann::json j = nlohmann::json::parse(r.output);
    const WeightStats& w = checkpoint_weight_stats(near, StreamOptions{}).all;
    EXPECT_NEAR(j.at("model").at("rms_w").get<double>(), std::sqrt(w.variance() + w.mean * w.mean), 1e-12);
    const int bits = j.at("bits").get<int>();
    ASSERT_GT(bits, 1);
    for (const nlohmann::json& rate : j.at("rates")) {
      const int at = rate.at("bits").get<int>();
      if (at != bits && at != bits - 1) continue;
      EXPECT_NEAR(rate.at("worst_sqnr_db").get<double>(), unnormalised_sqnr(near, dir.file("q.safetensors"), at), 0.05)
          << at << " bits";
    }
  }
}

// The weights together, as quantize --normalise none measures its summary: the signal and the
// noise of every tensor summed, each meeting the design at its own mean and sigma. Pooled into one
// Laplacian (mean and sigma over all the weights), two tensors at +5 and -5 were refused every rate
// for 20 dB (one Laplacian of sigma 5 overloads), though 6 bits measure 39.9 dB; a tensor at 20
// among small centred weights was given 8 bits for 30 dB, and measured 3.7 dB. An all-zero tensor
// counts too: its weights meet the level nearest zero. And a rate short of the floor by overload is
// told as overload per tensor too, where the worst tensor's rms is not the largest (it said
// "granular noise" for a wide centred tensor beside a narrow one at 15).
TEST(CheckpointStats, TheWeightsTogetherAreEachTensorsSignalAndNoiseSummed) {
  test::TempDir dir;
  const std::string input = dir.file("in.safetensors");
  const auto judged = [&](const std::map<std::string, std::vector<float>>& tensors, double floor) {
    io::TensorFile file;
    for (const auto& [name, w] : tensors)
      file.tensors[name] = io::f32_tensor({std::int64_t(w.size() / 256), 256}, w);
    io::write_safetensors(input, file);
    return run_nuq("bitrate --model " + input + " --sqnr-min " + std::to_string(floor) + " --json");
  };
  const auto summary_sqnr = [&](int bits) {
    const CommandResult q = run_nuq("quantize " + input + " -o " + dir.file("q.safetensors") + " -m uniform -b " +
                                    std::to_string(bits) + " --normalise none --json 2>/dev/null");
    EXPECT_EQ(q.status, 0) << q.output;
    return nlohmann::json::parse(q.output).at("sqnr_ex_db").get<double>();
  };
  const std::vector<std::map<std::string, std::vector<float>>> cases{
      {{"a", test::draw(test::Law::Laplace, 256 * 256, 5.0, 0.1, 21)},
       {"b", test::draw(test::Law::Laplace, 256 * 256, -5.0, 0.1, 22)}},
      {{"a", test::draw(test::Law::Laplace, 256 * 256, 0.4, 0.1, 23)},
       {"b", test::draw(test::Law::Laplace, 256 * 256, 0.0, 0.01, 24)}},
      {{"w", test::draw(test::Law::Laplace, 256 * 256, 0.0, 0.05, 25)}, {"z", std::vector<float>(256 * 64, 0.0f)}}};
  for (std::size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    const CommandResult r = judged(cases[i], 20.0);
    ASSERT_EQ(r.status, 0) << r.output;
    const nlohmann::json j = nlohmann::json::parse(r.output);
    const int bits = j.at("bits").get<int>();
    for (const nlohmann::json& rate : j.at("rates")) {
      const int at = rate.at("bits").get<int>();
      if (at != bits && at != bits - 1) continue;
      EXPECT_NEAR(rate.at("worst_sqnr_db").get<double>(), summary_sqnr(at), 0.05) << at << " bits";
    }
  }
  const CommandResult outlier = judged({{"big", test::draw(test::Law::Laplace, 512 * 512, 0.0, 0.01, 26)},
                                        {"small", test::draw(test::Law::Laplace, 32 * 256, 20.0, 0.05, 27)}},
                                       30.0);
  EXPECT_EQ(outlier.status, 1) << outlier.output;
  EXPECT_NE(outlier.output.find("(overload"), std::string::npos) << outlier.output;
  EXPECT_LT(summary_sqnr(16), 30.0);
  judged({{"a", test::draw(test::Law::Laplace, 256 * 256, 15.0, 0.01, 28)},
          {"b", test::draw(test::Law::Laplace, 256 * 256, 0.0, 5.0, 29)}},
         20.0);
  const CommandResult each = run_nuq("bitrate --model " + input + " --sqnr-min 20 --per-tensor");
  EXPECT_EQ(each.status, 1) << each.output;
  EXPECT_NE(each.output.find("(overload"), std::string::npos) << each.output;
}

// What a quantize run would be told or refused, bitrate is too: a tensor in two shards, a --skip
// that names nothing, a NaN (unless --nonfinite saturate leaves it out), and a tensor whose rms is
// beyond the rule's reach is named.
TEST(CheckpointStats, BitrateRefusesAndWarnsAsQuantizeDoes) {
  test::TempDir dir;
  const std::string folder = dir.path().string() + "/twice";
  std::filesystem::create_directory(folder);
  io::TensorFile shard;
  shard.tensors["w"] = io::f32_tensor({8, 8}, test::draw(test::Law::Laplace, 64, 0.0, 0.1, 3));
  io::write_safetensors(folder + "/a.safetensors", shard);
  io::write_safetensors(folder + "/b.safetensors", shard);
  const CommandResult twice = run_nuq("bitrate --model " + folder + " --sqnr-min 30");
  EXPECT_EQ(twice.status, 1) << twice.output;
  EXPECT_NE(twice.output.find(folder + "/b.safetensors: tensor 'w' is also in " + folder + "/a.safetensors: the files "
                             "are no shards of one model"),
            std::string::npos)
      << twice.output;

  std::vector<float> values = test::draw(test::Law::Laplace, 64, 0.0, 0.1, 4);
  values[9] = NAN;
  shard.tensors["w"] = io::f32_tensor({8, 8}, values);
  shard.tensors["tiny"] = io::f32_tensor({8, 8}, test::draw(test::Law::Laplace, 64, 0.0, 1e-12, 5));
  const std::string file = dir.file("nan.safetensors");
  io::write_safetensors(file, shard);
  const CommandResult nan = run_nuq("bitrate --model " + file + " --sqnr-min 30 --skip 'tiny|nothing_at_all'");
  EXPECT_EQ(nan.status, 1) << nan.output;
  EXPECT_NE(nan.output.find(file + ": tensor 'w': element [1, 1] is nan"), std::string::npos) << nan.output;
  EXPECT_NE(nan.output.find("--nonfinite saturate"), std::string::npos) << nan.output;

  const CommandResult saturated =
      run_nuq("bitrate --model " + file + " --sqnr-min 30 --skip tiny --nonfinite saturate --json");
  ASSERT_EQ(saturated.status, 0) << saturated.output;
  values.erase(values.begin() + 9);
  const WeightStats finite = stats_ref(values.data(), values.size(), "w");
  const nlohmann::json model = nlohmann::json::parse(saturated.output.substr(saturated.output.find('{'))).at("model");
  EXPECT_EQ(model.at("weights").get<std::size_t>(), 63u);
  EXPECT_NEAR(model.at("rms_w").get<double>(), finite.rms(), 1e-12 * finite.rms());

  const CommandResult unmatched = run_nuq("bitrate --model " + file + " --sqnr-min 30 --skip nothing_at_all "
                                          "--nonfinite saturate --per-tensor");
  EXPECT_EQ(unmatched.status, 1) << unmatched.output;
  EXPECT_NE(unmatched.output.find("nuq: warning: --skip names no tensor"), std::string::npos) << unmatched.output;
  EXPECT_NE(unmatched.output.find(file + ": tensor 'tiny': rms "), std::string::npos) << unmatched.output;
  EXPECT_NE(unmatched.output.find("beyond the +-200 dB the rule computes over"), std::string::npos) << unmatched.output;

  const CommandResult no_model = run_nuq("bitrate --range=-10:0 --sqnr-min 30 --nonfinite saturate");
  EXPECT_EQ(no_model.status, 1) << no_model.output;
  EXPECT_NE(no_model.output.find("take the weights of --model"), std::string::npos) << no_model.output;
}

}  // namespace
}  // namespace nuq
