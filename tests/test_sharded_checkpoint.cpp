// Sharded checkpoints streamed (checkpoint_stream.h, sharded_checkpoint.h): a folder or its index
// in gives the same shards and a new index out, and an index that disagrees with its shards'
// headers is followed by the headers.
#include <gtest/gtest.h>

#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <regex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoint_cases.h"
#include "nuq/checkpoint.h"
#include "nuq/checkpoint_stream.h"
#include "nuq/error.h"
#include "nuq/io/safetensors_stream.h"
#include "nuq/sharded_checkpoint.h"
#include "temp_dir.h"

namespace nuq {
namespace {

namespace fs = std::filesystem;
using test::bytes_of;
using test::msptq2;
using test::shard;

TEST(CheckpointStream, ShardsAndIndexInGiveShardsAndIndexOut) {
  test::TempDir dir;
  fs::create_directories(dir.file("model"));
  nlohmann::json weight_map = nlohmann::json::object();
  for (int s = 1; s <= 2; ++s) {
    const std::string file = "model-0000" + std::to_string(s) + "-of-00002.safetensors";
    const io::TensorFile t = shard(10 * s, "layers." + std::to_string(s) + ".");
    io::write_safetensors(dir.file("model/" + file), t);
    for (const auto& [name, tensor] : t.tensors) weight_map[name] = file;
  }
  std::ofstream(dir.file("model/model.safetensors.index.json"))
      << nlohmann::json{{"metadata", {{"total_size", 1}, {"format", "pt"}, {"nested", {{"list", {1, 2}}}}}},
                        {"weight_map", weight_map}}
             .dump();
  StreamOptions options;
  options.skip = std::regex("up_proj");
  const StreamReport report =
      quantize_checkpoint_files(dir.file("model/model.safetensors.index.json"), dir.file("out"), msptq2(), options, cpu_backend());
  // The norms (1-D) and the up projections (--skip) are kept, in their own dtype, bit for bit.
  EXPECT_EQ(report.tensors.size(), 2u);
  EXPECT_EQ(report.kept.size(), 6u);
  const nlohmann::json index = nlohmann::json::parse(std::ifstream(dir.file("out/model.safetensors.index.json")));
  std::uint64_t total = 0;
  // The sizes reported are the files' as they are on disk, both indexes included.
  std::uintmax_t input_bytes = fs::file_size(dir.file("model/model.safetensors.index.json"));
  std::uintmax_t output_bytes = fs::file_size(dir.file("out/model.safetensors.index.json"));
  for (int s = 1; s <= 2; ++s) {
    const std::string file = "model-0000" + std::to_string(s) + "-of-00002.safetensors";
    input_bytes += fs::file_size(dir.file("model/" + file));
    output_bytes += fs::file_size(dir.file("out/" + file));
    const io::TensorFile in = io::read_safetensors(dir.file("model/" + file));
    const io::TensorFile out = io::read_safetensors(dir.file("out/" + file));
    total += io::SafetensorsReader(dir.file("out/" + file)).data_size();  // headers excluded, as HF counts
    for (const auto& [name, tensor] : out.tensors) EXPECT_EQ(index["weight_map"][name], file) << name;
    const std::string prefix = "layers." + std::to_string(s) + ".";
    for (const char* kept : {"norm.weight", "up_proj.weight", "step"}) {
      EXPECT_EQ(out.tensors.at(prefix + kept).dtype, in.tensors.at(prefix + kept).dtype) << kept;
      EXPECT_EQ(out.tensors.at(prefix + kept).data, in.tensors.at(prefix + kept).data) << kept;
    }
    // Each shard is a whole quantized file on its own.
    const io::TensorFile restored = dequantize_checkpoint(out, file);
    EXPECT_EQ(restored.tensors.at(prefix + "q_proj.weight").shape, (std::vector<std::int64_t>{96, 40}));
  }
  EXPECT_EQ(index["metadata"]["total_size"].get<std::uint64_t>(), total);
  EXPECT_EQ(report.input_bytes, input_bytes);
  EXPECT_EQ(report.output_bytes, output_bytes);
  // The files written, in the shards' order and then the index, although pass 2 writes the last
  // shard first.
  EXPECT_EQ(report.outputs, (std::vector<std::string>{dir.file("out/model-00001-of-00002.safetensors"),
                                                      dir.file("out/model-00002-of-00002.safetensors"),
                                                      dir.file("out/model.safetensors.index.json")}));
  EXPECT_EQ(index["metadata"]["format"], "pt");  // the input index's metadata is carried over
  EXPECT_EQ(index["metadata"]["nested"]["list"], nlohmann::json({1, 2}));
  // The index is streamed out as it is read, laid out as nlohmann's dump(2) lays it out.
  EXPECT_EQ(bytes_of(dir.file("out/model.safetensors.index.json")), index.dump(2) + "\n");
  // A folder in, the same as its index.
  const StreamReport folder = quantize_checkpoint_files(dir.file("model"), dir.file("out2"), msptq2(), options, cpu_backend());
  EXPECT_EQ(bytes_of(dir.file("out/model-00001-of-00002.safetensors")), bytes_of(dir.file("out2/model-00001-of-00002.safetensors")));
  EXPECT_EQ(folder.sqnr_ex_db, report.sqnr_ex_db);

  // An index of another name (diffusers' diffusion_pytorch_model.safetensors.index.json) is found
  // in its folder, and the new one takes its name, which its readers look for; a folder of two
  // such indexes (two models) is the user's to choose from.
  fs::rename(dir.file("model/model.safetensors.index.json"), dir.file("model/diffusion_pytorch_model.safetensors.index.json"));
  const StreamReport renamed = quantize_checkpoint_files(dir.file("model"), dir.file("out3"), msptq2(), options, cpu_backend());
  EXPECT_EQ(renamed.outputs.back(), dir.file("out3/diffusion_pytorch_model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir.file("out3/model.safetensors.index.json")));
  EXPECT_EQ(bytes_of(dir.file("out3/diffusion_pytorch_model.safetensors.index.json")),
            bytes_of(dir.file("out/model.safetensors.index.json")));
  fs::copy_file(dir.file("model/diffusion_pytorch_model.safetensors.index.json"),
                dir.file("model/consolidated.safetensors.index.json"));
  try {
    quantize_checkpoint_files(dir.file("model"), dir.file("out4"), msptq2(), options, cpu_backend());
    ADD_FAILURE() << "a folder of two indexes was read as one model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("a folder of 2 indexes (consolidated.safetensors.index.json, "
                                         "diffusion_pytorch_model.safetensors.index.json)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(dir.file("out4")));
}

// Without global normalisation each shard's two passes run in turn, and the headers before the
// last are written with placeholders and rewritten at the end: every shard holds the tensors that
// quantizing it alone gives, bit for bit, and records the statistics of the whole checkpoint's
// quantized weights (as global normalisation's run records them). A NaN in the last shard stops
// the run before anything lands: no shard, no temporary, the old index kept.
TEST(CheckpointStream, ShardByShardGivesEachShardsOwnTensorsAndTheWholesStatistics) {
  test::TempDir dir;
  fs::create_directories(dir.file("model"));
  const int kShards = 3;
  const auto file_of = [](int s) { return "model-0000" + std::to_string(s) + "-of-00003.safetensors"; };
  for (int s = 1; s <= kShards; ++s) {
    io::TensorFile t = shard(20 * s, "layers." + std::to_string(s) + ".");
    // Shards of different magnitudes, so that the whole's statistics are no one shard's.
    std::vector<float> w = test::draw(test::Law::Laplace, 64 * 48, 0.1 * s, 0.01 * s * s, 40 + s);
    t.tensors["layers." + std::to_string(s) + ".o_proj.weight"] = io::f32_tensor({64, 48}, w);
    io::write_safetensors(dir.file("model/" + file_of(s)), t);
  }
  const auto header = [](const std::string& path) {
    return nlohmann::json::parse(io::SafetensorsReader(path).layout().metadata.at("nuq.quantized"));
  };
  const std::regex rows_of_300("up_proj");  // no groups of 8 in them
  StreamOptions global;
  global.skip = rows_of_300;
  quantize_checkpoint_files(dir.file("model"), dir.file("global"), msptq2(), global, cpu_backend());
  const nlohmann::json whole = header(dir.file("global/" + file_of(1)));
  struct Case {
    Normalisation normalisation;
    std::size_t group_size;
  };
  for (const Case c : {Case{Normalisation::PerTensor, 0}, Case{Normalisation::PerChannel, 0},
                       Case{Normalisation::PerChannel, 8}, Case{Normalisation::None, 0}}) {
    StreamOptions options;
    options.normalisation = c.normalisation;
    options.group_size = c.group_size;
    options.skip = rows_of_300;
    const std::string what = to_string(c.normalisation) + ", groups of " + std::to_string(c.group_size);
    fs::remove_all(dir.file("out"));
    const StreamReport report = quantize_checkpoint_files(dir.file("model"), dir.file("out"), msptq2(), options, cpu_backend());
    EXPECT_GT(report.statistics_seconds, 0.0) << what;
    EXPECT_GT(report.quantize_seconds, 0.0) << what;
    for (int s = 1; s <= kShards; ++s) {
      const std::string shard_out = dir.file("out/" + file_of(s));
      quantize_checkpoint_files(dir.file("model/" + file_of(s)), dir.file("alone.safetensors"), msptq2(), options,
                                cpu_backend());
      const io::TensorFile together = io::read_safetensors(shard_out);
      const io::TensorFile alone = io::read_safetensors(dir.file("alone.safetensors"));
      ASSERT_EQ(together.tensors.size(), alone.tensors.size()) << what;
      for (const auto& [name, t] : alone.tensors) {
        EXPECT_EQ(together.tensors.at(name).data, t.data) << name << ", " << what;
        EXPECT_EQ(together.tensors.at(name).shape, t.shape) << name << ", " << what;
      }
      nlohmann::json mine = header(shard_out), own = header(dir.file("alone.safetensors"));
      EXPECT_EQ(mine["tensors"], own["tensors"]) << what;  // each tensor's own map
      EXPECT_EQ(mine["mean"], whole["mean"]) << what << ", shard " << s;
      EXPECT_EQ(mine["stddev"], whole["stddev"]) << what << ", shard " << s;
      EXPECT_NE(mine["mean"], own["mean"]) << what << ", shard " << s;
      // Each shard a whole quantized file, its data where its header says.
      EXPECT_EQ(dequantize_checkpoint(together, shard_out).tensors.size(), dequantize_checkpoint(alone, "alone").tensors.size());
    }
    EXPECT_EQ(report.stats.mean, whole["mean"].get<double>()) << what;
  }
  // A NaN in the last shard: the first two were written (to temporaries) before it was met.
  io::TensorFile broken = io::read_safetensors(dir.file("model/" + file_of(3)));
  std::vector<float> w = io::to_floats(broken.tensors.at("layers.3.o_proj.weight"), "w");
  w.back() = std::numeric_limits<float>::quiet_NaN();
  broken.tensors["layers.3.o_proj.weight"] = io::f32_tensor({64, 48}, w);
  io::write_safetensors(dir.file("model/" + file_of(3)), broken);
  const std::string old_index = bytes_of(dir.file("out/model.safetensors.index.json"));
  for (int s = 1; s <= kShards; ++s) fs::remove(dir.file("out/" + file_of(s)));
  StreamOptions per_tensor;
  per_tensor.normalisation = Normalisation::PerTensor;
  EXPECT_THROW(quantize_checkpoint_files(dir.file("model"), dir.file("out"), msptq2(), per_tensor, cpu_backend()), Error);
  std::vector<std::string> left;
  for (const auto& entry : fs::directory_iterator(dir.file("out"))) left.push_back(entry.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{"model.safetensors.index.json"});
  EXPECT_EQ(bytes_of(dir.file("out/model.safetensors.index.json")), old_index);
}

// A checkpoint of many shards shard by shard holds a descriptor for each input, as two passes do,
// and none for the outputs waiting for their headers (set aside): 80 shards run within a limit of
// the descriptors open now plus 80 and a few.
TEST(CheckpointStream, ManyShardsShardByShardHoldNoDescriptorForTheWaitingOutputs) {
  test::TempDir dir;
  fs::create_directories(dir.file("model"));
  const int kShards = 80;
  for (int s = 0; s < kShards; ++s) {
    io::TensorFile t;
    t.tensors["layers." + std::to_string(s) + ".weight"] =
        io::f32_tensor({8, 16}, test::draw(test::Law::Laplace, 8 * 16, 0.0, 1.0 + s, 100 + s));
    char name[64];
    std::snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, kShards);
    io::write_safetensors(dir.file(std::string("model/") + name), t);
  }
  std::size_t open_now = 0;
  for ([[maybe_unused]] const auto& fd : fs::directory_iterator("/proc/self/fd")) ++open_now;
  rlimit before{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &before), 0);
  rlimit tight = before;
  tight.rlim_cur = std::min<rlim_t>(before.rlim_cur, rlim_t(open_now + kShards + 12));
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &tight), 0);
  StreamOptions options;
  options.normalisation = Normalisation::PerTensor;
  std::string error;
  try {
    quantize_checkpoint_files(dir.file("model"), dir.file("out"), msptq2(), options, cpu_backend());
  } catch (const std::exception& e) {
    error = e.what();
  }
  setrlimit(RLIMIT_NOFILE, &before);
  EXPECT_EQ(error, "");
  std::size_t shards = 0;
  for (const auto& entry : fs::directory_iterator(dir.file("out"))) shards += entry.path().extension() == ".safetensors";
  EXPECT_EQ(shards, std::size_t(kShards));
}

// An index that disagrees with its shards' headers (such indexes are on the Hub, and other tools
// load them) is followed as they follow it, by the headers: every disagreement is named for the
// caller's warning, every tensor the shards hold is quantized or kept, and the new index lists
// exactly what the new shards hold.
// A quantized tensor is stored under its name and a suffix (.codes, then .codebook, .grid or
// .scales): a name the input already has, in the same shard or in another, would give two tensors
// one name (and an index that maps it to one file). It is refused, naming both files, before
// anything is written, whatever the normalisation (two passes rename each output shard as it is
// done; shard by shard keeps them temporaries to the end), and an earlier output stays as it was.
TEST(CheckpointStream, StoredNamesThatATensorOfAnyShardHasAreRefusedBeforeAnythingIsWritten) {
  test::TempDir dir;
  const auto laplace = [](std::vector<std::int64_t> shape, std::uint32_t seed) {
    return io::f32_tensor(shape, test::draw(test::Law::Laplace, std::size_t(shape[0] * shape[1]), 0.0, 0.02, seed));
  };
  io::TensorFile one;
  one.tensors["w"] = laplace({16, 32}, 1);
  one.tensors["w.codes"] = laplace({4, 8}, 2);
  io::write_safetensors(dir.file("one.safetensors"), one);
  const auto refused = [&](const std::string& input, const std::string& output, const StreamOptions& options,
                           const std::string& message) {
    try {
      quantize_checkpoint_files(input, output, msptq2(), options, cpu_backend());
      ADD_FAILURE() << input << ": accepted";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), message) << input;
    }
  };
  refused(dir.file("one.safetensors"), dir.file("q.safetensors"), StreamOptions{},
          dir.file("one.safetensors") + ": tensor 'w' cannot be stored: the checkpoint already has a 'w.codes'");
  EXPECT_FALSE(fs::exists(dir.file("q.safetensors")));

  // Two shards: w in the first; w.codes, or w.scales in groups, in the second (each a weight too).
  for (const char* taken : {"w.codes", "w.scales"}) {
    const std::string folder = dir.file(std::string("in-") + taken);
    fs::create_directories(folder);
    io::TensorFile first, second;
    first.tensors["w"] = laplace({16, 32}, 3);
    first.tensors["v"] = laplace({16, 32}, 4);
    second.tensors[taken] = laplace({4, 32}, 5);
    second.tensors["u"] = laplace({16, 32}, 6);
    io::write_safetensors(folder + "/model-00001-of-00002.safetensors", first);
    io::write_safetensors(folder + "/model-00002-of-00002.safetensors", second);
    const bool groups = std::string(taken) == "w.scales";  // (groups take per-channel normalisation)
    for (Normalisation normalisation : groups ? std::vector<Normalisation>{Normalisation::PerChannel}
                                              : std::vector<Normalisation>{Normalisation::Global, Normalisation::PerTensor}) {
      StreamOptions options;
      options.normalisation = normalisation;
      if (groups) options.group_size = 16;
      const std::string out = folder + "-out";
      refused(folder, out, options,
              folder + "/model-00001-of-00002.safetensors: tensor 'w' cannot be stored: the checkpoint already has a '" +
                  taken + "' (in " + folder + "/model-00002-of-00002.safetensors)");
      EXPECT_FALSE(fs::exists(out)) << taken;
      // Skipped, w is kept as it is: no clash.
      options.skip = std::regex("^w$");
      const StreamReport report = quantize_checkpoint_files(folder, out, msptq2(), options, cpu_backend());
      EXPECT_EQ(report.tensors.size(), 3u) << taken;  // v, u and the second shard's own
      const std::string before = bytes_of(out + "/model-00002-of-00002.safetensors");
      options.skip.reset();
      refused(folder, out, options,
              folder + "/model-00001-of-00002.safetensors: tensor 'w' cannot be stored: the checkpoint already has a '" +
                  taken + "' (in " + folder + "/model-00002-of-00002.safetensors)");
      EXPECT_EQ(bytes_of(out + "/model-00002-of-00002.safetensors"), before) << taken;
      EXPECT_TRUE(fs::exists(out + "/model.safetensors.index.json")) << taken;
      fs::remove_all(out);
    }
  }
  // The other way round (w.codes in the first shard, w in the second), shard by shard too: refused
  // before pass 1, not after the first shard's work. A mask (kept) stores nothing: no clash.
  const std::string reverse = dir.file("reverse");
  fs::create_directories(reverse);
  io::TensorFile first, second;
  first.tensors["w.codes"] = laplace({4, 32}, 7);
  first.tensors["m"] = io::f32_tensor({2, 2}, {1.0f, 0.0f, 1.0f, 1.0f});  // a causal mask of 0 and 1
  second.tensors["w"] = laplace({16, 32}, 8);
  second.tensors["m.codes"] = laplace({4, 32}, 9);
  io::write_safetensors(reverse + "/model-00001-of-00002.safetensors", first);
  io::write_safetensors(reverse + "/model-00002-of-00002.safetensors", second);
  for (Normalisation normalisation : {Normalisation::Global, Normalisation::PerTensor}) {
    StreamOptions options;
    options.normalisation = normalisation;
    refused(reverse, reverse + "-out", options,
            reverse + "/model-00002-of-00002.safetensors: tensor 'w' cannot be stored: the checkpoint already has a "
                      "'w.codes' (in " + reverse + "/model-00001-of-00002.safetensors)");
    EXPECT_FALSE(fs::exists(reverse + "-out"));
    options.skip = std::regex("^w$");
    const StreamReport report = quantize_checkpoint_files(reverse, reverse + "-out", msptq2(), options, cpu_backend());
    EXPECT_EQ(report.kept, (std::vector<std::string>{"m", "w"}));
    fs::remove_all(reverse + "-out");
  }
}

TEST(CheckpointStream, AnIndexThatDisagreesWithItsShardsIsFollowedByTheHeaders) {
  test::TempDir dir;
  fs::create_directories(dir.file("model"));
  nlohmann::json weight_map = nlohmann::json::object();
  std::size_t tensors = 0;
  for (int s = 1; s <= 2; ++s) {
    const std::string file = "model-0000" + std::to_string(s) + "-of-00002.safetensors";
    const io::TensorFile t = shard(10 * s, "layers." + std::to_string(s) + ".");
    io::write_safetensors(dir.file("model/" + file), t);
    for (const auto& [name, tensor] : t.tensors) weight_map[name] = file, ++tensors;
  }
  const std::string index = dir.file("model/model.safetensors.index.json");
  const std::string second = "model-00002-of-00002.safetensors";
  std::ofstream(index) << nlohmann::json{{"weight_map", weight_map}}.dump();
  EXPECT_TRUE(checkpoint_warnings(index).empty());
  weight_map["mtp.fc.weight"] = second;                   // listed, held by no shard
  weight_map["layers.1.norm.weight"] = second;            // listed in the wrong shard
  weight_map.erase("layers.2.norm.weight");               // held, not listed
  std::ofstream(index) << nlohmann::json{{"weight_map", weight_map}}.dump();
  const std::vector<std::string> found = checkpoint_warnings(dir.file("model"));
  const auto names = [&](const std::string& text) {
    return std::any_of(found.begin(), found.end(), [&](const std::string& line) { return line.find(text) != std::string::npos; });
  };
  EXPECT_EQ(found.size(), 3u);
  EXPECT_TRUE(names("puts 'mtp.fc.weight' in " + second + ", which does not hold it: no shard read holds it, so "
                    "there is no such tensor to read"));
  EXPECT_TRUE(names("puts 'layers.1.norm.weight' in " + second + ", but model-00001-of-00002.safetensors holds it"));
  EXPECT_TRUE(names(second + " holds tensor 'layers.2.norm.weight', which the weight_map does not list"));
  const StreamReport report = quantize_checkpoint_files(index, dir.file("out"), msptq2(), StreamOptions{}, cpu_backend());
  EXPECT_EQ(report.tensors.size() + report.kept.size(), tensors);
  const nlohmann::json written = nlohmann::json::parse(std::ifstream(dir.file("out/model.safetensors.index.json")));
  EXPECT_TRUE(checkpoint_warnings(dir.file("out")).empty());
  EXPECT_EQ(written["weight_map"]["layers.1.norm.weight"], "model-00001-of-00002.safetensors");
  EXPECT_FALSE(written["weight_map"].contains("mtp.fc.weight"));
}

// A folder without an index reads its .safetensors files but those that are no shards of its
// model: macOS's ._ files always, and beside the model a PEFT adapter and Mistral's consolidated
// copy, each said; alone, an adapter or a consolidated file is the model.
TEST(CheckpointStream, AFolderWithoutAnIndexLeavesAdaptersConsolidatedCopiesAndMacOsFiles) {
  test::TempDir dir;
  fs::create_directories(dir.file("model"));
  io::write_safetensors(dir.file("model/model.safetensors"), shard(1, "model."));
  io::write_safetensors(dir.file("model/adapter_model.safetensors"), shard(2, "base_model.lora_A."));
  io::write_safetensors(dir.file("model/consolidated.safetensors"), shard(3, "layers.0."));
  std::ofstream(dir.file("model/._model.safetensors")) << "\x00\x05\x16\x07 Mac OS X";  // AppleDouble, no safetensors
  EXPECT_EQ(checkpoint_shards(dir.file("model")), std::vector<std::string>{dir.file("model/model.safetensors")});
  const std::vector<std::string> warned = checkpoint_warnings(dir.file("model"));
  ASSERT_EQ(warned.size(), 3u);
  EXPECT_EQ(warned[0], dir.file("model") + ": ._model.safetensors is not read as a shard of the model (macOS's "
                       "metadata of another file)");
  EXPECT_NE(warned[1].find("adapter_model.safetensors is not read as a shard of the model (an adapter"), std::string::npos);
  EXPECT_NE(warned[2].find("consolidated.safetensors is not read as a shard of the model (Mistral's"), std::string::npos);
  const StreamReport report = quantize_checkpoint_files(dir.file("model"), dir.file("out"), msptq2(), StreamOptions{}, cpu_backend());
  ASSERT_FALSE(report.tensors.empty());
  for (const auto& t : report.tensors) EXPECT_EQ(t.tensor.name.rfind("model.", 0), 0u) << t.tensor.name;
  fs::remove(dir.file("model/model.safetensors"));  // no model beside them: the adapter and the copy are read
  EXPECT_EQ(checkpoint_shards(dir.file("model")), (std::vector<std::string>{dir.file("model/adapter_model.safetensors"),
                                                                           dir.file("model/consolidated.safetensors")}));
  EXPECT_EQ(checkpoint_warnings(dir.file("model")).size(), 1u);
  // Beside a file of another name (Mistral's own lora.safetensors) nothing says which is the
  // model: every file is read, as before.
  io::write_safetensors(dir.file("model/lora.safetensors"), shard(4, "lora."));
  EXPECT_EQ(checkpoint_shards(dir.file("model")).size(), 3u);
  for (const char* name : {"adapter_model", "consolidated", "lora"}) fs::remove(dir.file("model/") + name + ".safetensors");
  try {  // only macOS's file: said so
    checkpoint_shards(dir.file("model"));
    ADD_FAILURE() << "a folder of ._ files was read";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nor .safetensors files but ._model.safetensors (macOS's metadata"),
              std::string::npos) << e.what();
  }
}

// An index is read with the bounds of a header: a key named twice (which would drop a tensor
// silently) and nesting that no index has are refused; "./" before a shard's name is that shard
// (transformers joins the name to the folder); a safetensors file beside the index that it names
// for no tensor is not read, and said.
TEST(CheckpointStream, AnIndexIsReadWithBoundsAndItsShardNamesAsTransformersReadsThem) {
  test::TempDir dir;
  fs::create_directories(dir.file("model"));
  io::write_safetensors(dir.file("model/a.safetensors"), shard(3, "a."));
  io::write_safetensors(dir.file("model/b.safetensors"), shard(5, "b."));
  const std::string index = dir.file("model/model.safetensors.index.json");
  const auto write_index = [&](const std::string& text) { std::ofstream(index) << text; };
  const std::string a_entries = R"("a.q_proj.weight": "./a.safetensors", "a.up_proj.weight": "a.safetensors",
      "a.norm.weight": "././a.safetensors", "a.step": "a.safetensors")";
  write_index(R"({"metadata": {}, "weight_map": {)" + a_entries + R"(, "b.step": "a.safetensors", "b.step": "b.safetensors"}})");
  EXPECT_THROW(
      {
        try {
          checkpoint_shards(index);
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find(index + ": names 'b.step' twice"), std::string::npos) << e.what();
          throw;
        }
      },
      Error);
  write_index(R"({"metadata": {"x": )" + std::string(100000, '[') + std::string(100000, ']') + R"(}, "weight_map": {}})");
  EXPECT_THROW(
      {
        try {
          checkpoint_shards(index);
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("nested deeper than 16 levels"), std::string::npos) << e.what();
          throw;
        }
      },
      Error);
  // Only a's tensors, named with "./": b.safetensors is beside it, unnamed, and not read.
  write_index(R"({"metadata": {}, "weight_map": {)" + a_entries + "}}");
  EXPECT_EQ(checkpoint_shards(index), std::vector<std::string>{dir.file("model/a.safetensors")});
  const std::vector<std::string> warnings = checkpoint_warnings(index);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(warnings[0], index + ": names no tensor in b.safetensors beside it; that file is not read (nor do other tools read it)");
  const StreamReport report = quantize_checkpoint_files(index, dir.file("out"), msptq2(), StreamOptions{}, cpu_backend());
  EXPECT_EQ(report.tensors.size(), 2u);  // a's two matrices: b's are not read
  EXPECT_EQ(report.kept.size(), 2u);
  // A shard the index names that is not there: said of the index, before any shard is opened.
  write_index(R"({"metadata": {}, "weight_map": {"x.weight": "c.safetensors", )" + a_entries + "}}");
  try {
    checkpoint_shards(index);
    ADD_FAILURE() << "a missing shard was not said";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), index + ": its weight_map names c.safetensors, which is not beside it (a shard "
                                             "missing from a download or a copy, or a broken link?)");
  }
}

// An index is read by one SAX pass (index_entries.h): values the format does not define are
// skipped without a tree of them, metadata beyond 2^20 values is refused, and an index that is
// one value or whose weight_map maps a tensor to no file name is refused by name.
TEST(CheckpointStream, AnIndexIsReadWithoutATreeOfIt) {
  test::TempDir dir;
  fs::create_directories(dir.file("model"));
  io::write_safetensors(dir.file("model/a.safetensors"), shard(3, "a."));
  const std::string index = dir.file("model/model.safetensors.index.json");
  const auto refusal = [&](const std::string& text) -> std::string {
    std::ofstream(index) << text;
    try {
      checkpoint_shards(index);
    } catch (const Error& e) {
      return e.what();
    }
    return "accepted";
  };
  const std::string a_entries = R"("a.q_proj.weight": "a.safetensors", "a.up_proj.weight": "a.safetensors",
      "a.norm.weight": "a.safetensors", "a.step": "a.safetensors")";
  std::string junk = R"({"peer": [)";
  for (int i = 0; i < 1'000'000; ++i) junk += "{},";
  junk += R"({}], "metadata": {"total_size": 1, "tags": {"x": [1, 2.5, null, true, "y"]}}, "weight_map": {)" + a_entries + "}}";
  EXPECT_EQ(refusal(junk), "accepted");
  const StreamReport report = quantize_checkpoint_files(index, dir.file("out"), msptq2(), StreamOptions{}, cpu_backend());
  EXPECT_EQ(report.tensors.size(), 2u);
  const nlohmann::json written = nlohmann::json::parse(std::ifstream(dir.file("out/model.safetensors.index.json")));
  EXPECT_EQ(written["metadata"]["tags"], nlohmann::json::parse(R"({"x": [1, 2.5, null, true, "y"]})"));
  EXPECT_FALSE(written.contains("peer"));

  std::string many = R"({"metadata": {"x": [)";
  for (int i = 0; i < (1 << 20); ++i) many += "0,";
  many += R"(0]}, "weight_map": {)" + a_entries + "}}";
  EXPECT_EQ(refusal(many), index + ": its metadata holds more than 1048576 values (an index's metadata is total_size and "
                                   "perhaps a few fields more)");
  EXPECT_EQ(refusal(R"("weight_map")"), index + ": no weight_map object (not a safetensors index)");
  EXPECT_EQ(refusal(R"({"weight_map": [["a.step", "a.safetensors"]]})"), index + ": no weight_map object (not a "
                                                                                 "safetensors index)");
  EXPECT_EQ(refusal(R"({"weight_map": {"a.step": ["a.safetensors"]}})"), index + ": weight_map['a.step'] is not a file "
                                                                                 "name");
  EXPECT_EQ(refusal(R"({"weight_map": {"": "a.safetensors", "": 1}})"), index + ": names '' twice in one object");
}

}  // namespace
}  // namespace nuq
