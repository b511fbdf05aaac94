// Scenarios of the command line that the hostile-inputs table (test_cli_hostile.cpp) cannot hold
// in one row: folders of shards left by interrupted runs, a folder of PyTorch shards, train and
// reproduce refusing what they cannot use before any training, a report that cannot be written,
// and the help text's conventions.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "nuq/io/idx.h"
#include "nuq/io/safetensors.h"
#include "nuq/io/safetensors_stream.h"
#include "nuq/model.h"
#include "nuq/quantized_file.h"
#include "temp_dir.h"

namespace nuq {
namespace {

using test::CommandResult;
using test::run_nuq;

constexpr int kOk = 0, kUserError = 1;

// A folder of shards a run left half-written (interrupted: no index, shards missing, or new shards
// beside an older run's) is refused by dequantize, never restored into a part of a model; a new
// run into a folder first removes the index an older run left there.
TEST(InterruptedOutputs, FoldersOfShardsMustBeWholeAndFromOneRun) {
  test::TempDir dir;
  std::filesystem::create_directories(dir.file("model"));
  nlohmann::json weight_map = nlohmann::json::object();
  for (int s = 1; s <= 2; ++s) {
    const std::string name = "model-0000" + std::to_string(s) + "-of-00002.safetensors";
    io::TensorFile shard;
    std::vector<float> w(32 * 16);
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = float(std::sin(0.3 * double(i + 1000 * s)));
    shard.tensors["layers." + std::to_string(s) + ".weight"] = io::f32_tensor({32, 16}, w);
    io::write_safetensors(dir.file("model/" + name), shard);
    weight_map["layers." + std::to_string(s) + ".weight"] = name;
  }
  std::ofstream(dir.file("model/model.safetensors.index.json")) << nlohmann::json{{"weight_map", weight_map}}.dump();
  const std::string d = dir.path().string();
  ASSERT_EQ(run_nuq("quantize " + d + "/model -o " + d + "/a -m msptq").status, kOk);
  ASSERT_EQ(run_nuq("quantize " + d + "/model -o " + d + "/b -m sptq --normalise per-tensor").status, kOk);
  ASSERT_EQ(run_nuq("dequantize " + d + "/a -o " + d + "/a-restored").status, kOk);

  std::filesystem::remove(dir.file("a/model.safetensors.index.json"));  // as an interrupted run leaves it
  ASSERT_EQ(run_nuq("dequantize " + d + "/a -o " + d + "/whole").status, kOk);  // every numbered shard is there
  std::filesystem::copy_file(dir.file("b/model-00002-of-00002.safetensors"), dir.file("a/model-00002-of-00002.safetensors"),
                             std::filesystem::copy_options::overwrite_existing);
  CommandResult r = run_nuq("dequantize " + d + "/a -o " + d + "/mixed");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("quantized by another run"), std::string::npos) << r.output;
  // One run's shard under two names: its tensors would be restored twice.
  std::filesystem::copy_file(dir.file("a/model-00001-of-00002.safetensors"), dir.file("a/model-00002-of-00002.safetensors"),
                             std::filesystem::copy_options::overwrite_existing);
  r = run_nuq("dequantize " + d + "/a -o " + d + "/twice");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("model-00002-of-00002.safetensors: tensor 'layers.1.weight.codebook' is also in"), std::string::npos)
      << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("twice")));
  std::filesystem::remove(dir.file("a/model-00002-of-00002.safetensors"));
  r = run_nuq("dequantize " + d + "/a -o " + d + "/half");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("shard 00002 of 00002 (model-00002-of-00002.safetensors) is missing"), std::string::npos)
      << r.output;

  r = run_nuq("quantize " + d + "/model -o " + d + "/failed --skip .");  // fails before writing anything
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("no tensor to quantize"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("failed"))) << "a failed run left the folder it made";

  // Restored shards record their run: a dequantize interrupted over an older output is refused too.
  ASSERT_EQ(run_nuq("dequantize " + d + "/b -o " + d + "/b-restored").status, kOk);
  std::filesystem::remove(dir.file("a-restored/model.safetensors.index.json"));
  ASSERT_EQ(run_nuq("quantize " + d + "/a-restored -o " + d + "/again").status, kOk);  // one run: fine
  const auto copy_shard_2 = [&](const std::string& from) {
    std::filesystem::copy_file(dir.file(from + "/model-00002-of-00002.safetensors"),
                               dir.file("a-restored/model-00002-of-00002.safetensors"),
                               std::filesystem::copy_options::overwrite_existing);
  };
  copy_shard_2("b-restored");  // another run's restored shard
  r = run_nuq("quantize " + d + "/a-restored -o " + d + "/mixed");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("model-00002-of-00002.safetensors was restored from quantize run "), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("an interrupted nuq dequantize over an older output"), std::string::npos) << r.output;
  copy_shard_2("model");  // an original shard beside a restored one: not judged
  r = run_nuq("quantize " + d + "/a-restored -o " + d + "/assembled");
  EXPECT_EQ(r.status, kOk) << r.output;
  EXPECT_EQ(io::SafetensorsReader(dir.file("assembled/model-00001-of-00002.safetensors")).layout().metadata.count(
                kRestoredFromKey),
            0u)
      << "a quantized file claims to be restored";

}

// A Hugging Face folder of PyTorch shards (pytorch_model-0000N-of-0000M.bin and its index) is
// named for what it is, whether given as the folder or as its index.
TEST(CliHostile, PyTorchShardsAreNamedAsSuch) {
  test::TempDir dir;
  std::filesystem::create_directories(dir.file("hf"));
  std::ofstream(dir.file("hf/pytorch_model-00001-of-00001.bin")) << "PK\x03\x04";
  std::ofstream(dir.file("hf/pytorch_model.bin.index.json"))
      << R"({"weight_map": {"lm_head.weight": "pytorch_model-00001-of-00001.bin"}})";
  const std::string d = dir.path().string();
  CommandResult r = run_nuq("quantize " + d + "/hf -o " + d + "/q");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("it holds pytorch_model"), std::string::npos) << r.output;
  r = run_nuq("quantize " + d + "/hf/pytorch_model.bin.index.json -o " + d + "/q");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("'pytorch_model-00001-of-00001.bin' is another tool's file (PyTorch, GGUF), not safetensors"), std::string::npos)
      << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("q")));
}

// Twelve images of side x side and their labels as <root>/mnist/{train,t10k}-*-ubyte.
void write_tiny_mnist(const std::string& root, std::uint32_t side) {
  const std::string mnist = root + "/mnist";
  std::filesystem::create_directories(mnist);
  io::IdxArray images{io::IdxType::U8, {12, side, side}, std::vector<std::uint8_t>(12 * side * side)};
  for (std::size_t i = 0; i < images.bytes.size(); ++i) images.bytes[i] = std::uint8_t((i * 37) % 256);
  const io::IdxArray labels{io::IdxType::U8, {12}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1}};
  for (const char* split : {"train", "t10k"}) {
    io::write_idx(mnist + "/" + split + "-images-idx3-ubyte", images);
    io::write_idx(mnist + "/" + split + "-labels-idx1-ubyte", labels);
  }
}

// From a hostile review of train and reproduce: images the networks cannot take, outputs over
// the data, file names that are not UTF-8, a cached model that is another, a report path that
// cannot be written (each refused before any training), and a range with an empty field.
TEST(CliHostile, TrainAndReproduceRefuseWhatTheyCannotUse) {
  test::TempDir dir;
  const std::string d = dir.path().string();
  write_tiny_mnist(d + "/small", 10);
  CommandResult r = run_nuq("train --data " + d + "/small --epochs 1 -o " + d + "/m.safetensors");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("train-images-idx3-ubyte: the images are 10x10; nuq's networks take 28x28"), std::string::npos)
      << r.output;

  write_tiny_mnist(d + "/data", 28);
  const std::string labels = d + "/data/mnist/t10k-labels-idx1-ubyte";
  const auto before = std::filesystem::file_size(labels);
  r = run_nuq("train --data " + d + "/data --epochs 1 -o " + labels);
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("is the input itself"), std::string::npos) << r.output;
  EXPECT_EQ(std::filesystem::file_size(labels), before);

  r = run_nuq("train --data " + d + "/data --epochs 1 --json -o '" + d + "/m\xff.safetensors'");
  ASSERT_EQ(r.status, kOk) << r.output;
  const nlohmann::json j = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  EXPECT_NE(j.at("output").get<std::string>().find("m\xef\xbf\xbd.safetensors"), std::string::npos);  // U+FFFD

  std::filesystem::create_directories(d + "/out/models");
  Model cnn = make_model(Architecture::Cnn, 1);
  cnn.dataset = "mnist";
  save_model(d + "/out/models/mnist-mlp-seed1-epochs1.safetensors", cnn);  // --epochs 1: its own cache
  const std::string reproduce = "reproduce --paper mathematics2022 --dataset mnist --model mlp --no-figures --epochs 1 --data " +
                                d + "/data --out " + d + "/out";
  r = run_nuq(reproduce);
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("mnist-mlp-seed1-epochs1.safetensors: holds a mnist cnn, not the mnist mlp its name says"),
            std::string::npos)
      << r.output;
  std::filesystem::remove(d + "/out/models/mnist-mlp-seed1-epochs1.safetensors");
  std::filesystem::create_directories(d + "/out/report.json");
  r = run_nuq(reproduce);
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("report.json"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(d + "/out/models/mnist-mlp-seed1-epochs1.safetensors")) << "trained before refusing";

  // What the run needs is checked before any training: the Fashion-MNIST of the full run (this
  // data folder holds MNIST alone), a models/ or quantized/ that is a file, a model that would be
  // written through a symbolic link, a name too long to write its temporary file beside.
  std::filesystem::remove_all(d + "/out");
  const std::string full = "reproduce --paper mathematics2022 --no-figures --epochs 1 --data " + d + "/data --out " + d + "/out";
  r = run_nuq(full);
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find(d + "/data/fashion: no such folder; run scripts/fetch-data"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(d + "/out")) << "left the folders it made before finding no data";
  std::filesystem::remove_all(d + "/out");
  std::filesystem::create_directories(d + "/out");
  for (const char* folder : {"models", "quantized"}) {
    { std::ofstream(d + "/out/" + folder) << "a file"; }
    r = run_nuq(reproduce);
    EXPECT_EQ(r.status, kUserError) << folder;
    EXPECT_NE(r.output.find(d + "/out/" + folder + ": cannot create the folder"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("training"), std::string::npos) << r.output;
    std::filesystem::remove(d + "/out/" + folder);
  }
  std::filesystem::create_directories(d + "/out/models");
  std::filesystem::create_symlink(d + "/nowhere", d + "/out/models/mnist-mlp-seed1-epochs1.safetensors");
  r = run_nuq(reproduce);
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("mnist-mlp-seed1-epochs1.safetensors: will not replace it: it is a symbolic link"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("training"), std::string::npos) << r.output;
  std::filesystem::remove(d + "/out/models/mnist-mlp-seed1-epochs1.safetensors");
  { std::ofstream(d + "/out/models/mnist-mlp-seed1-epochs1.safetensors") << "a damaged cache"; }
  r = run_nuq(reproduce);
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("(the cached model of this run: remove it, or give --retrain)"), std::string::npos) << r.output;
  // A plotting script asked for through the environment is checked as --plots is, before the work.
  const char* developers = std::getenv("NUQ_PLOTS");
  const std::string kept = developers ? developers : "";
  setenv("NUQ_PLOTS", (d + "/no-plots.py").c_str(), 1);
  r = run_nuq("reproduce --paper mathematics2022 --dataset mnist --model mlp --epochs 1 --data " + d + "/data --out " + d + "/out");
  if (developers) setenv("NUQ_PLOTS", kept.c_str(), 1); else unsetenv("NUQ_PLOTS");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("$NUQ_PLOTS=" + d + "/no-plots.py names no script"), std::string::npos) << r.output;
  // (249 bytes and the shortest suffix, ".tmp.<pid>.<n>" of a one-digit pid, are over 255.)
  r = run_nuq("train --data " + d + "/data --epochs 1 -o " + d + "/" + std::string(246, 'a') + ".st");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find(".st: a file name of 249 bytes is too long to write"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("bytes; shorten it by "), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("epoch"), std::string::npos) << r.output;

  // --resume with nothing to resume, and a killed run's checkpoint replaced: said before training.
  r = run_nuq("train --data " + d + "/data --epochs 1 --resume -o " + d + "/fresh.safetensors");
  ASSERT_EQ(r.status, kOk) << r.output;
  EXPECT_NE(r.output.find("no checkpoint " + d + "/fresh.safetensors.checkpoint to resume from"), std::string::npos)
      << r.output;
  { std::ofstream(d + "/fresh.safetensors.checkpoint") << "progress of a killed run"; }
  r = run_nuq("train --data " + d + "/data --epochs 1 -o " + d + "/fresh.safetensors");
  ASSERT_EQ(r.status, kOk) << r.output;
  EXPECT_LT(r.output.find("warning: " + d + "/fresh.safetensors.checkpoint holds a killed run's progress"),
            r.output.find("epoch  1/1"))
      << r.output;

  // Weights whose products overflow float32: no class can be read from NaN outputs (all were
  // taken for class 0, and an accuracy reported).
  Model huge = make_model(Architecture::Mlp, 1);
  huge.dataset = "mnist";
  for (float& w : huge.at("fc1.weight").values) w = 3e38f;
  save_model(d + "/huge.safetensors", huge);
  r = run_nuq("eval " + d + "/huge.safetensors --data " + d + "/data");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find(d + "/huge.safetensors: the network's output for image 0 is "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("no class can be read from it"), std::string::npos) << r.output;

  for (const char* command : {"mismatch --range=-30:30: --csv", "design --sweep 1:2:"}) {
    r = run_nuq(command);
    EXPECT_EQ(r.status, kUserError) << command;
    EXPECT_NE(r.output.find("ends with ':' (an empty field)"), std::string::npos) << r.output;
  }
}

// Another tool's checkpoint of many GB, given where one of nuq's networks is read whole (eval, and
// train --resume's checkpoint), is refused from its header before its data is read: a sparse file
// of 18 GiB, over the whole-file limit, stands for it (read first, it was refused only as too
// large, after a read of up to 16 GiB for a smaller one).
TEST(CliHostile, AnotherToolsLargeCheckpointIsRefusedFromItsHeader) {
  test::TempDir dir;
  const std::string d = dir.path().string();
  const std::uint64_t data_bytes = std::uint64_t{18} << 30;
  std::string header = nlohmann::json{{"model.embed_tokens.weight",
                                       {{"dtype", "F32"}, {"shape", {data_bytes / 4 / 4096, 4096}},
                                        {"data_offsets", {0, data_bytes}}}}}.dump();
  header.resize((header.size() + 7) / 8 * 8, ' ');
  const std::string big = d + "/llm.safetensors";
  {
    std::ofstream out(big, std::ios::binary);
    const std::uint64_t length = header.size();  // little-endian, as on every host nuq builds for
    out.write(reinterpret_cast<const char*>(&length), sizeof length);
    out << header;
  }
  std::filesystem::resize_file(big, 8 + header.size() + data_bytes);  // sparse: no disk taken
  CommandResult r = run_nuq("eval " + big + " --dataset mnist");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find(big + ": no nuq.architecture in __metadata__ (not a model written by nuq train"),
            std::string::npos) << r.output;
  write_tiny_mnist(d + "/data", 28);
  std::filesystem::create_hard_link(big, d + "/m.safetensors.checkpoint");
  r = run_nuq("train --data " + d + "/data --epochs 1 --resume -o " + d + "/m.safetensors");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find(d + "/m.safetensors.checkpoint: not a training checkpoint (no nuq.checkpoint metadata)"),
            std::string::npos) << r.output;
  // A file that says it is one of nuq's networks but holds GBs more (a tensor of 1 GiB beside
  // nothing else) is refused from its size before it is read into memory, by every command that
  // reads a network whole.
  const std::uint64_t junk_bytes = std::uint64_t{1} << 30;
  std::string junk_header = nlohmann::json{{"__metadata__", {{"nuq.architecture", "mlp"}, {"nuq.dataset", "mnist"}}},
                                           {"junk", {{"dtype", "F32"}, {"shape", {junk_bytes / 4}},
                                                     {"data_offsets", {0, junk_bytes}}}}}.dump();
  junk_header.resize((junk_header.size() + 7) / 8 * 8, ' ');
  const std::string grown = d + "/grown.safetensors";
  {
    std::ofstream out(grown, std::ios::binary);
    const std::uint64_t length = junk_header.size();
    out.write(reinterpret_cast<const char*>(&length), sizeof length);
    out << junk_header;
  }
  std::filesystem::resize_file(grown, 8 + junk_header.size() + junk_bytes);
  for (const std::string& command : {"eval " + grown, "quantize " + grown + " -o " + d + "/q.safetensors",
                                    "bitrate --sqnr-min 30 --model " + grown}) {
    r = run_nuq(command);
    EXPECT_EQ(r.status, kUserError) << command;
    EXPECT_NE(r.output.find(grown + ": " + std::to_string(8 + junk_header.size() + junk_bytes) +
                            " bytes, more than a file of nuq's mlp can hold"),
              std::string::npos) << command << "\n" << r.output;
  }
  // A folder given to eval (of shards, say) is named as one, with what eval takes instead.
  r = run_nuq("eval " + d + " --dataset mnist");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find(d + ": a folder; `nuq eval` runs one of nuq's networks, a single .safetensors file"),
            std::string::npos) << r.output;
}

TEST(CliOutput, AReportThatCannotBeWrittenFailsTheRun) {
  EXPECT_EQ(run_nuq("theory >/dev/full").status, kUserError);  // no space: the report was lost
  EXPECT_EQ(run_nuq("theory >/dev/null").status, kOk);
  for (const char* help : {"--help", "design --help", "--version"}) {  // the help too
    EXPECT_EQ(run_nuq(std::string(help) + " >/dev/full").status, kUserError) << help;
    EXPECT_EQ(run_nuq(std::string(help) + " >/dev/null").status, kOk) << help;
  }
}

TEST(CliHelp, EveryCommandWritesRangesOneWayAndNoFlagDefaults) {
  for (const char* command : {"", "design", "theory", "devices", "reproduce", "train", "quantize", "dequantize", "eval",
                              "mismatch", "bitrate"}) {
    const CommandResult r = run_nuq(std::string(command) + " --help");
    EXPECT_EQ(r.status, kOk) << command;
    for (const char* stray : {"{false}", "{true}", "1..16"})
      EXPECT_EQ(r.output.find(stray), std::string::npos) << command << " --help shows " << stray << "\n" << r.output;
  }
  EXPECT_NE(run_nuq("quantize --help").output.find("[1 - 16]"), std::string::npos);
}

TEST(CliHelp, DevicesExplainsAMissingGpuPlainly) {
  const CommandResult r = run_nuq("devices");
  EXPECT_EQ(r.status, kOk) << r.output;
  EXPECT_EQ(r.output.find("driver version is insufficient"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace nuq
