// `nuq inspect`: from the headers (and the values of tensors that may be masks), what `nuq quantize`
// would do with each tensor of a checkpoint (checked against what a run then does), and what a
// quantized file holds (checked against the run's own report and the file's size).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nuq/checkpoint.h"
#include "nuq/error.h"
#include "nuq/io/dataset.h"
#include "nuq/io/safetensors.h"
#include "nuq/io/safetensors_stream.h"
#include "nuq/model.h"
#include "nuq/terminal_text.h"
#include "nuq/train.h"
#include "checkpoint_cases.h"
#include "cli_runner.h"
#include "sanitizer_build.h"
#include "temp_dir.h"

namespace {

using nuq::test::CommandResult;
using nuq::test::run_nuq;
namespace io = nuq::io;

nlohmann::json json_of(const std::string& arguments) {
  const CommandResult result = run_nuq(arguments);
  EXPECT_EQ(result.status, 0) << arguments << "\n" << result.output;
  return nlohmann::json::parse(result.output);  // (throws, failing the test, on anything else)
}

// A checkpoint with one tensor for each reason to keep one, and two to quantize.
io::TensorFile mixed_checkpoint() {
  io::TensorFile file;
  std::vector<float> w(32 * 64);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = float(std::sin(double(i) * 0.37)) * 0.05f;
  file.tensors["a.weight"] = io::f32_tensor({16, 64}, std::vector<float>(w.begin(), w.begin() + 16 * 64));
  file.tensors["b.weight"] = io::f32_tensor({32, 64}, w);
  file.tensors["a.bias"] = io::f32_tensor({16}, std::vector<float>(16, 0.5f));
  file.tensors["emb.weight"] = io::f32_tensor({32, 64}, w);
  file.tensors["empty.weight"] = io::f32_tensor({0, 4}, {});
  file.tensors["step"] = io::Tensor{io::DType::I64, {1}, std::vector<std::uint8_t>(8, 0)};
  // A module another tool quantized (GPTQ-like): its packed I32 weights and the F32 scales beside them.
  file.tensors["gptq.qweight"] = io::Tensor{io::DType::I32, {8, 8}, std::vector<std::uint8_t>(8 * 8 * 4, 7)};
  file.tensors["gptq.scales"] = io::f32_tensor({8, 4}, std::vector<float>(32, 0.01f));
  file.tensors["gptq.zeros"] = io::f32_tensor({8, 1}, std::vector<float>(8, 0.5f));  // a vector, but the peer's
  return file;
}

TEST(CliInspect, TellsWhatQuantizeWillDoAndQuantizeDoesIt) {
  nuq::test::TempDir dir;
  const std::string input = dir.file("in.safetensors"), output = dir.file("q.safetensors");
  io::write_safetensors(input, mixed_checkpoint());
  const nlohmann::json plan = json_of("inspect " + input + " --skip '^emb' --json");
  EXPECT_FALSE(plan.at("quantized"));
  std::map<std::string, std::string> kept_because;
  std::set<std::string> to_quantize;
  for (const nlohmann::json& t : plan.at("tensors")) {
    if (t.at("quantized")) to_quantize.insert(t.at("name"));
    else kept_because[t.at("name")] = t.at("kept_because");
  }
  EXPECT_EQ(to_quantize, (std::set<std::string>{"a.weight", "b.weight"}));
  const std::map<std::string, std::string> expected{
      {"a.bias", "fewer than two dimensions (--quantize-vectors)"},
      {"emb.weight", "named by --skip"},
      {"empty.weight", "empty"},
      {"step", "not F32, F16 or BF16"},
      {"gptq.qweight", "not F32, F16 or BF16"},
      {"gptq.scales", "of a module another tool quantized"},
      {"gptq.zeros", "of a module another tool quantized"}};
  EXPECT_EQ(kept_because, expected);
  EXPECT_EQ(plan.at("weights_to_quantize"), 48 * 64);
  EXPECT_EQ(plan.at("bytes_to_quantize"), 48 * 64 * 4);

  // The run keeps and quantizes exactly those.
  const nlohmann::json run = json_of("quantize " + input + " -o " + output + " --skip '^emb' -m msptq --json");
  std::set<std::string> run_kept, run_quantized;
  for (const nlohmann::json& name : run.at("kept")) run_kept.insert(name);
  for (const nlohmann::json& t : run.at("tensors")) run_quantized.insert(t.at("name"));
  EXPECT_EQ(run_quantized, to_quantize);
  std::set<std::string> planned_kept;
  for (const auto& [name, why] : kept_because) planned_kept.insert(name);
  EXPECT_EQ(run_kept, planned_kept);

  // --quantize-vectors changes the plan as it changes the run.
  const nlohmann::json vectors = json_of("inspect " + input + " --quantize-vectors --json");
  for (const nlohmann::json& t : vectors.at("tensors")) {
    if (t.at("name") == "a.bias") {
      EXPECT_TRUE(t.at("quantized"));
    }
  }

  // The quantized file: the run's tensors, bits per weight all in and kept bytes, adding up to the file.
  const nlohmann::json held = json_of("inspect " + output + " --json");
  EXPECT_TRUE(held.at("quantized"));
  EXPECT_EQ(held.at("version"), 2);  // it keeps `gptq.scales`, named as nuq's own parts are
  EXPECT_EQ(held.at("codebook").at("method"), "msptq");
  EXPECT_NEAR(held.at("sqnr_th_db").get<double>(), 7.5165, 1e-3);
  std::map<std::string, double> reported;
  for (const nlohmann::json& t : run.at("tensors")) reported[t.at("name")] = t.at("bits_per_weight");
  ASSERT_EQ(held.at("tensors").size(), reported.size());
  for (const nlohmann::json& t : held.at("tensors")) {
    EXPECT_EQ(t.at("bits"), 2);
    EXPECT_EQ(t.at("tables"), "one");
    EXPECT_DOUBLE_EQ(t.at("bits_per_weight").get<double>(), reported.at(t.at("name"))) << t.dump();
  }
  std::set<std::string> held_kept;
  for (const nlohmann::json& t : held.at("kept")) held_kept.insert(t.at("name"));
  EXPECT_EQ(held_kept, planned_kept);
  const io::SafetensorsReader reader(output);
  EXPECT_EQ(held.at("file_bytes"), std::filesystem::file_size(output));
  EXPECT_EQ(held.at("quantized_bytes").get<std::uint64_t>() + held.at("kept_bytes").get<std::uint64_t>(),
            reader.data_size());

  // Text: one line a tensor with its action; options that mean nothing for a quantized file are refused.
  const CommandResult text = run_nuq("inspect " + input + " --skip '^emb'");
  ASSERT_EQ(text.status, 0) << text.output;
  EXPECT_NE(text.output.find("keep: named by --skip"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("2 tensor(s) to quantize"), std::string::npos) << text.output;
  const CommandResult refused = run_nuq("inspect " + output + " --skip x");
  EXPECT_EQ(refused.status, 1) << refused.output;
  EXPECT_NE(refused.output.find("already quantized"), std::string::npos) << refused.output;
}

TEST(CliInspect, GroupsAndShardsAndMixedFolders) {
  nuq::test::TempDir dir;
  std::filesystem::create_directories(dir.file("model"));
  nuq::test::write_two_shards(dir.file("model"));
  const nlohmann::json plan = json_of("inspect " + dir.file("model") + " --json");
  EXPECT_EQ(plan.at("files").size(), 2u);
  EXPECT_EQ(plan.at("tensors").size(), 4u);
  const nlohmann::json run = json_of("quantize " + dir.file("model") + " -o " + dir.file("q") + " --group-size 32 --json");
  const nlohmann::json held = json_of("inspect " + dir.file("q/model.safetensors.index.json") + " --json");
  ASSERT_EQ(held.at("tensors").size(), 2u);
  for (const nlohmann::json& t : held.at("tensors")) {
    EXPECT_EQ(t.at("group_size"), 32);
    EXPECT_EQ(t.at("tables"), "groups of 32");
    // 2-bit codes, an F32 scale per 32 weights, and the shared 4-level table: 2 + 1 + 128 / 6144 bits.
    EXPECT_NEAR(t.at("bits_per_weight").get<double>(), 3.0 + 128.0 / (64 * 96), 1e-12) << t.dump();
  }
  EXPECT_EQ(held.at("kept").size(), 2u);
  // A quantized shard beside one that is not is no checkpoint.
  std::filesystem::copy_file(dir.file("q/model-00001-of-00002.safetensors"),
                             dir.file("model/model-00001-of-00002.safetensors"),
                             std::filesystem::copy_options::overwrite_existing);
  const CommandResult mixed = run_nuq("inspect " + dir.file("model"));
  EXPECT_EQ(mixed.status, 1) << mixed.output;
  EXPECT_NE(mixed.output.find("1 of its 2 files are quantized by nuq"), std::string::npos) << mixed.output;
}

// A quantized file whose header no reader takes (a width, shape or table that cannot be) is refused
// by inspect as dequantize refuses it, word for word, rather than shown as if it were sound; and a
// sound one passes both.
TEST(CliInspect, ADamagedQuantizedFileIsRefusedAsDequantizeRefusesIt) {
  nuq::test::TempDir dir;
  const std::string input = dir.file("in.safetensors");
  io::write_safetensors(input, mixed_checkpoint());
  for (const std::string& options : {std::string("-m msptq"), std::string("-m uniform -b 12 --normalise none"),
                                     std::string("-m sptq --group-size 16"), std::string("-m sptq --normalise per-channel")})
    json_of("quantize " + input + " -o " + dir.file("q" + std::to_string(options.size()) + ".safetensors") + " " +
            options + " --json");
  const auto read = [&](const std::string& options) {
    return io::read_safetensors(dir.file("q" + std::to_string(options.size()) + ".safetensors"));
  };
  const io::TensorFile two_bit = read("-m msptq"), grid = read("-m uniform -b 12 --normalise none"),
                       grouped = read("-m sptq --group-size 16"), per_row = read("-m sptq --normalise per-channel");
  const auto described = [](io::TensorFile f, const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json d = nlohmann::json::parse(f.metadata.at("nuq.quantized"));
    edit(d["tensors"]["b.weight"]);
    f.metadata["nuq.quantized"] = d.dump();
    return f;
  };
  const auto stored = [](io::TensorFile f, const std::string& name, const std::function<void(io::Tensor&)>& edit) {
    edit(f.tensors.at(name));
    return f;
  };
  const float nan_levels[4] = {NAN, 0.f, 1.f, 2.f};
  const std::vector<std::pair<std::string, io::TensorFile>> cases = {
      {"a width the codes do not have", described(two_bit, [](nlohmann::json& t) { t["bits"] = 4; })},
      {"a width no file stores", described(two_bit, [](nlohmann::json& t) { t["bits"] = 3; })},
      {"a shape its rows do not make", described(two_bit, [](nlohmann::json& t) { t["shape"] = {64, 32}; })},
      {"a shape past any file", described(two_bit, [](nlohmann::json& t) { t["shape"] = {32, std::int64_t{1} << 62}; })},
      {"a short table", stored(two_bit, "b.weight.codebook", [](io::Tensor& t) { t = io::f32_tensor({1, 3}, {0.f, 1.f, 2.f}); })},
      {"a NaN level", stored(two_bit, "b.weight.codebook", [&](io::Tensor& t) { t = io::f32_tensor({1, 4}, {nan_levels, nan_levels + 4}); })},
      {"a grid beside the table", [&] {
         io::TensorFile f = two_bit;
         f.tensors["b.weight.grid"] = grid.tensors.at("b.weight.grid");
         return f;
       }()},
      {"a grid past FP32", stored(grid, "b.weight.grid", [](io::Tensor& t) {
         const double map[2] = {0.0, 1e300};
         std::memcpy(t.data.data(), map, sizeof map);
       })},
      {"scales of other groups", stored(grouped, "b.weight.scales", [](io::Tensor& t) { t.shape = {64, 2}; })},
      {"a table per row short of rows", stored(per_row, "b.weight.codebook", [](io::Tensor& t) {
         t.shape[0] -= 1;
         t.data.resize(t.data.size() - 4 * std::size_t(t.shape[1]));
       })},
      {"an unknown normalisation", [&] {
         io::TensorFile f = two_bit;
         nlohmann::json d = nlohmann::json::parse(f.metadata.at("nuq.quantized"));
         d["normalisation"] = "banana";
         f.metadata["nuq.quantized"] = d.dump();
         return f;
       }()},
  };
  for (const auto& [name, file] : cases) {
    const std::string path = dir.file("bad.safetensors");
    io::write_safetensors(path, file);
    const CommandResult restored = run_nuq("dequantize " + path + " -o " + dir.file("out.safetensors"));
    const CommandResult shown = run_nuq("inspect " + path);
    EXPECT_EQ(restored.status, 1) << name << ": " << restored.output;
    EXPECT_EQ(shown.status, 1) << name << ": " << shown.output;
    EXPECT_EQ(shown.output, restored.output) << name;
    EXPECT_EQ(shown.output.rfind("nuq: error: " + path + ": ", 0), 0u) << name << ": " << shown.output;
  }
  for (const io::TensorFile& sound : {two_bit, grid, grouped, per_row}) {
    io::write_safetensors(dir.file("sound.safetensors"), sound);
    json_of("inspect " + dir.file("sound.safetensors") + " --json");
  }
}


// nuq train's checkpoint (the parameters beside Adam's moments and the shuffle order) is named as
// what it is: inspect says so, quantize refuses it with what to do instead (it used to suggest
// dropping nuq.architecture), whatever other options ask, and it records its data set for eval.
TEST(CliInspect, ATrainingCheckpointIsNamedAndNotQuantized) {
  nuq::test::TempDir dir;
  io::Dataset data;
  data.count = 40, data.rows = data.cols = io::kImageSide;
  data.images.resize(data.count * data.features());
  for (std::size_t i = 0; i < data.images.size(); ++i) data.images[i] = float((i * 37) % 256) / 255.0f;
  for (std::size_t i = 0; i < data.count; ++i) data.labels.push_back(std::uint8_t(i % io::kClasses));
  nuq::TrainConfig config;
  config.epochs = 1, config.batch = 8, config.dataset = "fashion";
  config.checkpoint = dir.file("m.safetensors.checkpoint");
  nuq::Model model = nuq::make_model(nuq::Architecture::Mlp, 3);
  nuq::train(model, data, config);  // its caller (nuq train) removes the checkpoint; here it stays
  const std::string checkpoint = config.checkpoint;

  const nlohmann::json j = json_of("inspect " + checkpoint + " --json");
  EXPECT_TRUE(j.at("training_checkpoint").get<bool>());
  EXPECT_EQ(j.at("weights_to_quantize").get<int>(), 0);
  CommandResult r = run_nuq("inspect " + checkpoint);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("a training checkpoint of one of nuq's networks"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("adam.m.fc1.weight"), std::string::npos) << r.output;
  std::size_t refused = 0;  // every tensor, none marked to quantize
  for (std::size_t at = 0; (at = r.output.find("  refused: a training checkpoint\n", at)) != std::string::npos; ++at) ++refused;
  EXPECT_EQ(refused, 19u) << r.output;

  r = run_nuq("quantize " + checkpoint + " -o " + dir.file("q.safetensors"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("a training checkpoint (nuq train's progress"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("q.safetensors")));
  r = run_nuq("quantize " + checkpoint + " --group-size 64 -o " + dir.file("q.safetensors"));
  EXPECT_NE(r.output.find("a training checkpoint (nuq train's progress"), std::string::npos) << r.output;
  r = run_nuq("inspect " + checkpoint + " --skip fc3");
  EXPECT_NE(r.output.find("a training checkpoint, which nuq quantize refuses"), std::string::npos) << r.output;
  // It records its data set as a saved model does, so that `nuq eval` of it needs no --dataset.
  EXPECT_EQ(io::SafetensorsReader(checkpoint).layout().metadata.at("nuq.dataset"), "fashion");
  // One written before that records its data set only in its run's settings, which eval reads.
  io::TensorFile older = io::read_safetensors(checkpoint);
  older.metadata.erase("nuq.dataset");
  EXPECT_EQ(nuq::recorded_dataset(older, checkpoint), "fashion");
  older.metadata["nuq.checkpoint"] = R"({"run": {"dataset": "cifar"}})";  // a guess at an old file: no record
  EXPECT_EQ(nuq::recorded_dataset(older, checkpoint), "");
  older.metadata["nuq.dataset"] = "cifar";  // what the file says of itself must be a data set nuq knows
  EXPECT_THROW(nuq::recorded_dataset(older, checkpoint), nuq::Error);
  older.metadata.erase("nuq.dataset");
  older.metadata["nuq.checkpoint"] = "{\"run\": ";  // unreadable: no record, so eval asks for --dataset
  EXPECT_EQ(nuq::recorded_dataset(older, checkpoint), "");
  older.metadata.erase("nuq.architecture");  // not a training checkpoint: its run is not consulted
  older.metadata["nuq.checkpoint"] = R"({"run": {"dataset": "mnist"}})";
  EXPECT_EQ(nuq::recorded_dataset(older, checkpoint), "");
}

// A name from a downloaded file reaches the terminal as text: its control bytes (ESC sequences that
// would clear the screen or recolour it, a newline that would forge a line, CSI's UTF-8) are shown
// as \xNN in tables, warnings and errors; JSON escapes them as JSON does.
TEST(CliInspect, ControlBytesOfNamesAreShownNotActedOn) {
  EXPECT_EQ(nuq::terminal_text("a\x1b[2Jb\tc\nd\x7f\xc2\x9b" "1m\xc3\xa9"), "a\\x1b[2Jb\tc\\x0ad\\x7f\\xc2\\x9b1m\xc3\xa9");
  nuq::test::TempDir dir;
  io::TensorFile file;
  std::vector<float> w(16 * 16);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = float(std::sin(double(i))) * 0.05f;
  const std::string evil = "\x1b[2J\x1b[31mevil\x1b[0m\nnuq: forged.weight";
  file.tensors[evil] = io::f32_tensor({16, 16}, w);
  file.tensors["n\x07.weight"] = io::f32_tensor({16, 16}, w);  // a bell
  io::write_safetensors(dir.file("in.safetensors"), file);
  CommandResult r = run_nuq("inspect " + dir.file("in.safetensors"));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.find('\x1b'), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find('\x07'), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\\x1b[2J\\x1b[31mevil\\x1b[0m\\x0anuq: forged.weight"), std::string::npos) << r.output;
  const nlohmann::json j = json_of("inspect " + dir.file("in.safetensors") + " --json");
  std::set<std::string> names;
  for (const nlohmann::json& t : j.at("tensors")) names.insert(t.at("name"));
  EXPECT_EQ(names.count(evil), 1u);
  r = run_nuq("quantize " + dir.file("in.safetensors") + " -o " + dir.file("q.safetensors") + " --group-size 24");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.output.find('\x1b'), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("\nnuq: forged"), std::string::npos) << r.output;  // one line, not two
  EXPECT_NE(r.output.find("\\x1b[2J"), std::string::npos) << r.output;
  // A path given on the command line (a shell's glob over downloaded files) in a summary line too.
  const std::string typed = dir.file("e\x1b[31m.safetensors"), quoted = "'" + typed + "'";
  std::filesystem::copy_file(dir.file("in.safetensors"), typed);
  for (const std::string& command : {"inspect " + quoted, "quantize " + quoted + " -o '" + typed + ".q'"}) {
    r = run_nuq(command);
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(r.output.find('\x1b'), std::string::npos) << command << ": " << r.output;
    EXPECT_NE(r.output.find("e\\x1b[31m.safetensors"), std::string::npos) << r.output;
  }
}

// A tensor name of 100,000 characters (from a file) runs past its column on its own line: the
// other rows are padded to at most 120 columns, not to it (a 10 MiB name and 200 others printed
// 2.1 GB).
TEST(CliInspect, ALongNameDoesNotWidenEveryRow) {
  nuq::test::TempDir dir;
  io::TensorFile file;
  const std::vector<float> w(16 * 16, 0.5f);
  const std::string long_name(100000, 'n');
  file.tensors[long_name] = io::f32_tensor({16, 16}, w);
  for (int i = 0; i < 50; ++i) file.tensors["layer." + std::to_string(i) + ".weight"] = io::f32_tensor({16, 16}, w);
  io::write_safetensors(dir.file("in.safetensors"), file);
  const CommandResult r = run_nuq("inspect " + dir.file("in.safetensors"));
  EXPECT_EQ(r.status, 0) << r.output.substr(0, 2000);
  EXPECT_NE(r.output.find(long_name), std::string::npos);
  EXPECT_LT(r.output.size(), 120000u);  // the long name once, and 51 rows of at most a few hundred bytes
  const std::size_t row = r.output.find("layer.0.weight");
  ASSERT_NE(row, std::string::npos);
  EXPECT_LT(r.output.find('\n', row) - row, 250u);
}

// A small [8, 16] matrix of weights, the same each time.
std::vector<float> small_weights() {
  std::vector<float> w(8 * 16);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = float(std::sin(double(i) * 0.61)) * 0.05f;
  return w;
}

TEST(CliInspect, ATensorNamedByTheEmptyStringIsReadLikeAnyOther) {
  // Its parts are '.codes', '.codebook' and '.grid': a suffix test that wanted a name before the
  // suffix missed them, and a per-row table was read whole for a band of one row (inspect refused
  // the file; dequantize, banded, would have too).
  nuq::test::TempDir dir;
  io::TensorFile file;
  file.tensors[""] = io::f32_tensor({8, 16}, small_weights());
  file.tensors["w"] = io::f32_tensor({8, 16}, small_weights());
  const std::string input = dir.file("in.safetensors");
  io::write_safetensors(input, file);
  const std::vector<std::pair<std::string, std::string>> cases{
      {"--normalise per-channel", "per row"}, {"-m uniform -b 12 --normalise per-tensor", "grid"}, {"", "one"}};
  for (const auto& [options, tables] : cases) {
    SCOPED_TRACE(options);
    const std::string quantized = dir.file("q.safetensors");
    ASSERT_EQ(run_nuq("quantize " + input + " -o " + quantized + " " + options).status, 0);
    const nlohmann::json shown = json_of("inspect " + quantized + " --json");
    ASSERT_EQ(shown.at("tensors").size(), 2u);
    for (const nlohmann::json& t : shown.at("tensors")) EXPECT_EQ(t.at("tables"), tables) << t.dump();
    // Restored a row at a time and whole: the same weights, and the same as 'w', which holds the same.
    nuq::DequantizeFileOptions by_rows;
    by_rows.band_bytes = 1;
    nuq::dequantize_checkpoint_file(quantized, dir.file("rows.safetensors"), by_rows);
    nuq::dequantize_checkpoint_file(quantized, dir.file("whole.safetensors"), {});
    const io::TensorFile rows = io::read_safetensors(dir.file("rows.safetensors"));
    const io::TensorFile whole = io::read_safetensors(dir.file("whole.safetensors"));
    EXPECT_EQ(rows.tensors.at("").data, whole.tensors.at("").data);
    EXPECT_EQ(rows.tensors.at("").data, rows.tensors.at("w").data);
  }
}

TEST(CliInspect, TheDesignLineSaysWhetherTheWeightsWereNormalised) {
  // (a run with --normalise none said its design met weights of sigma 1 "as normalised weights are")
  nuq::test::TempDir dir;
  io::TensorFile file;
  file.tensors["w"] = io::f32_tensor({8, 16}, small_weights());
  io::write_safetensors(dir.file("in.safetensors"), file);
  for (const std::string normalise : {"none", "global"}) {
    const std::string quantized = dir.file(normalise + ".safetensors");
    ASSERT_EQ(run_nuq("quantize " + dir.file("in.safetensors") + " -o " + quantized + " --normalise " + normalise +
                      " -m uniform -b 12").status, 0);
    const CommandResult r = run_nuq("inspect " + quantized);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(r.output.find("as normalised weights are") != std::string::npos, normalise != "none") << r.output;
    EXPECT_EQ(r.output.find("the run did not normalise its weights") != std::string::npos, normalise == "none")
        << r.output;
  }
}

// A header of 200,000 tensors (17.7 MB) takes about 100 MB to plan. Its listing is written a row at
// a time: the table's rows held as text took 350 MB, the --json tree 630 MB (4 and 7 times the plan;
// 1.4 and 2.4 GB for the 800,000 tensors a 71 MB header names).
TEST(CliInspect, AHeaderOfManyTensorsIsListedWithoutHoldingItsRows) {
  using nuq::test::run_nuq_measured;
  if (nuq::test::kAddressSanitizer) GTEST_SKIP() << "AddressSanitizer's shadow memory counts in the resident set";
  nuq::test::TempDir dir;
  io::TensorFile small;
  small.tensors["w"] = io::f32_tensor({8, 16}, small_weights());
  io::write_safetensors(dir.file("small.safetensors"), small);
  io::TensorFile many;
  constexpr int kTensors = 200000;
  for (int i = 0; i < kTensors; ++i) many.tensors["model.layers." + std::to_string(i) + ".weight"] = io::f32_tensor({0, 4}, {});
  io::write_safetensors(dir.file("many.safetensors"), many);
  const double header_kib = double(std::filesystem::file_size(dir.file("many.safetensors"))) / 1024;
  const auto [small_status, small_kib] = run_nuq_measured({"inspect", dir.file("small.safetensors")}, dir.file("out"));
  ASSERT_EQ(small_status, 0);
  for (const bool json : {false, true}) {
    SCOPED_TRACE(json ? "--json" : "text");
    std::vector<std::string> arguments{"inspect", dir.file("many.safetensors")};
    if (json) arguments.push_back("--json");
    const auto [status, kib] = run_nuq_measured(arguments, dir.file("out"));
    const std::string output = nuq::test::read_text(dir.file("out"));
    ASSERT_EQ(status, 0) << output.substr(0, 2000);
    EXPECT_LT(double(kib - small_kib), 8 * header_kib) << "peak resident set in KiB: " << kib << ", of a file of one "
                                                        << "tensor " << small_kib << ", the header " << header_kib;
    if (json) {
      const nlohmann::json shown = nlohmann::json::parse(output);
      ASSERT_EQ(shown.at("tensors").size(), std::size_t(kTensors));
      EXPECT_EQ(shown.at("tensors").back().at("name"), "model.layers.99999.weight");  // name order
      EXPECT_EQ(shown.at("bytes_to_quantize"), 0);
    } else {
      EXPECT_EQ(std::count(output.begin(), output.end(), '\n'), kTensors + 6) << output.substr(0, 1000);
      EXPECT_NE(output.find("\nmodel.layers.199999.weight    0x4  F32        0  keep: empty\n"), std::string::npos);
    }
  }
}

}  // namespace
