// The statistics of the weights `nuq quantize` would quantize in a checkpoint, read a piece at a
// time (checkpoint_weight_stats), against Welford's one-weight-at-a-time reference over each whole
// tensor; and `nuq bitrate --model` on a checkpoint: its sigma against the one `nuq quantize`
// records, its rate against the rule, and the rate's SQNR against what quantizing at it measures.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
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
  // Two constant matrices: the weights together have a variance, each tensor none (--per-tensor).
  io::TensorFile constants;
  constants.tensors["a.weight"] = io::f32_tensor({4, 8}, std::vector<float>(32, 0.5f));
  constants.tensors["b.weight"] = io::f32_tensor({4, 8}, std::vector<float>(32, -0.5f));
  io::write_safetensors(dir.file("constants.safetensors"), constants);
  const CommandResult both = run_nuq("bitrate --model " + dir.file("constants.safetensors") + " --sqnr-min 30 --json");
  ASSERT_EQ(both.status, 0) << both.output;
  EXPECT_EQ(nlohmann::json::parse(both.output).at("model").at("sigma_w").get<double>(), 0.5);
  const CommandResult each = run_nuq("bitrate --model " + dir.file("constants.safetensors") + " --sqnr-min 30 --per-tensor");
  EXPECT_EQ(each.status, 1) << each.output;
  EXPECT_NE(each.output.find("every tensor is constant"), std::string::npos) << each.output;
}

double db(double sigma) { return 20.0 * std::log10(sigma); }

// `nuq bitrate --model` on a checkpoint: the sigma nuq quantize records (no normalisation: every
// tensor meets the unit-variance design as it is), the rule's rate at it and, per tensor, over the
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
  EXPECT_EQ(g.at("model").at("weights").get<std::size_t>(), stats.all.count);
  EXPECT_EQ(g.at("bits").get<int>(), choose_bit_rate(30.0, db(stats.all.stddev()), db(stats.all.stddev()))->bits);

  const CommandResult per_tensor = run_nuq("bitrate --model " + folder + " --sqnr-min 30 --per-tensor --json");
  ASSERT_EQ(per_tensor.status, 0) << per_tensor.output;
  const nlohmann::json p = nlohmann::json::parse(per_tensor.output);
  double low = INFINITY, high = 0.0;
  std::string lowest;
  for (const TensorStats& t : stats.tensors) {
    if (t.stats.stddev() < low) low = t.stats.stddev(), lowest = t.name;
    high = std::max(high, t.stats.stddev());
  }
  EXPECT_EQ(p.at("model").at("smallest_sigma").at("tensor"), lowest);
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
  EXPECT_NEAR(report.at("sqnr_ex_db").get<double>(), worst_case(bits, db(stats.all.stddev()), db(stats.all.stddev())).worst_sqnr_db,
              0.1);
  for (const nlohmann::json& t : report.at("tensors")) {
    const std::string name = t.at("name");
    const auto own = std::find_if(stats.tensors.begin(), stats.tensors.end(), [&](const TensorStats& s) { return s.name == name; });
    ASSERT_NE(own, stats.tensors.end()) << name;
    const double predicted = worst_case(bits, db(own->stats.stddev()), db(own->stats.stddev())).worst_sqnr_db;
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
  EXPECT_EQ(j.at("model").at("tensors").get<std::size_t>(), model.parameters.size());
  EXPECT_EQ(j.at("model").at("weights").get<std::size_t>(), all.count);
  // A fresh network's biases are zeros: no variance to keep, left out of the range and counted.
  double low = INFINITY, high = 0.0;
  std::size_t constant = 0;
  for (const Parameter& p : model.parameters) {
    const double sigma = stats_ref(p.values.data(), p.values.size(), p.name).stddev();
    if (sigma == 0.0) ++constant;
    else low = std::min(low, sigma), high = std::max(high, sigma);
  }
  EXPECT_GT(constant, 0u);
  EXPECT_EQ(j.at("model").at("constant_tensors").get<std::size_t>(), constant);
  EXPECT_NEAR(j.at("from_db").get<double>(), db(low), 1e-9);
  EXPECT_NEAR(j.at("to_db").get<double>(), db(high), 1e-9);
}

}  // namespace
}  // namespace nuq
