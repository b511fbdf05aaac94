// The output folder of a sharded checkpoint (sharded_checkpoint.h): an output written over stays
// whole until every new shard is on the disk, a folder that holds another model or that another
// run is writing is refused before anything is read, and the index's name is checked as every
// output's is.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoint_cases.h"
#include "cli_runner.h"
#include "nuq/checkpoint_stream.h"
#include "nuq/error.h"
#include "nuq/io/safetensors_stream.h"
#include "nuq/normalisation.h"
#include "nuq/quantized_file.h"
#include "nuq/sharded_checkpoint.h"
#include "temp_dir.h"

namespace nuq {
namespace {

namespace fs = std::filesystem;
using test::bytes_of;
using test::CommandResult;
using test::run_nuq;
constexpr int kOk = 0, kUserError = 1;

// Every file in `folder`, name -> bytes.
std::map<std::string, std::string> files_in(const std::string& folder) {
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::directory_iterator(folder)) files[entry.path().filename().string()] = bytes_of(entry.path().string());
  return files;
}

// Two shards in <dir>/model quantized to <dir>/out: the output a later run writes over, its files.
std::map<std::string, std::string> quantized_output(test::TempDir& dir) {
  fs::create_directories(dir.file("model"));
  test::write_two_shards(dir.file("model"));
  quantize_checkpoint_files(dir.file("model"), dir.file("out"), test::msptq2(), {}, cpu_backend());
  return files_in(dir.file("out"));
}

// A shard's output written with one tensor `name` of four floats, handed to `checkpoint` unfinished.
void hold_a_shard(ShardedCheckpoint& checkpoint, std::size_t s, const std::string& name) {
  auto writer = std::make_unique<io::SafetensorsWriter>(
      checkpoint.output(s), std::map<std::string, std::string>{},
      std::vector<std::pair<std::string, io::TensorEntry>>{{name, io::TensorEntry{io::DType::F32, {4}}}});
  const float values[4] = {1.0f, 2.0f, 3.0f, 4.0f};
  writer->append(values, sizeof values);
  checkpoint.add_tensor(name, s);
  checkpoint.add_tensor_bytes(sizeof values);
  checkpoint.hold(s, std::move(writer));
}

TEST(ShardedOutput, AnOutputWrittenOverStaysWholeUntilEveryShardIsHeldAndPublished) {
  test::TempDir dir;
  const std::map<std::string, std::string> before = quantized_output(dir);
  ASSERT_EQ(before.size(), 3u);
  {  // a run that ends (an error, a signal) with one shard written and synced, the other not
    ShardedCheckpoint checkpoint(dir.file("model"), dir.file("out"));
    hold_a_shard(checkpoint, 1, "b");
    EXPECT_EQ(files_in(dir.file("out")).size(), 4u) << "the held shard is a temporary beside the old files";
  }
  EXPECT_EQ(files_in(dir.file("out")), before) << "the earlier output changed, or a temporary was left";

  {  // both held, then published: the new files in place, the new index naming them
    ShardedCheckpoint checkpoint(dir.file("model"), dir.file("out"));
    hold_a_shard(checkpoint, 1, "b");
    hold_a_shard(checkpoint, 0, "a");
    EXPECT_EQ(files_in(dir.file("out")).size(), 5u);
    EXPECT_EQ(checkpoint.publish(), dir.file("out/model.safetensors.index.json"));
  }
  const std::map<std::string, std::string> after = files_in(dir.file("out"));
  ASSERT_EQ(after.size(), 3u);
  EXPECT_EQ(io::SafetensorsReader(dir.file("out/model-00001-of-00002.safetensors")).layout().tensors.count("a"), 1u);
  EXPECT_EQ(io::SafetensorsReader(dir.file("out/model-00002-of-00002.safetensors")).layout().tensors.count("b"), 1u);
  const nlohmann::json index = nlohmann::json::parse(after.at("model.safetensors.index.json"));
  EXPECT_EQ(index["weight_map"], (nlohmann::json{{"a", "model-00001-of-00002.safetensors"},
                                                  {"b", "model-00002-of-00002.safetensors"}}));
  EXPECT_EQ(index["metadata"]["total_size"], 32);

  // A run into a folder it made, ended before its index: neither the folder nor a file is left.
  { ShardedCheckpoint checkpoint(dir.file("model"), dir.file("new")); hold_a_shard(checkpoint, 0, "a"); }
  EXPECT_FALSE(fs::exists(dir.file("new")));
}

// The new index is written before any file is put in place: a disk too full for it (here a
// file-size limit only the index passes, its names many and long) fails the run while the output it
// was to replace is whole, old index included.
TEST(ShardedOutput, AnIndexThatCannotBeWrittenLeavesTheOutputItWritesOverWhole) {
  test::TempDir dir;
  const std::map<std::string, std::string> before = quantized_output(dir);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::signal(SIGXFSZ, SIG_IGN);
    int code = 3;
    try {
      ShardedCheckpoint checkpoint(dir.file("model"), dir.file("out"));
      hold_a_shard(checkpoint, 1, "b");
      hold_a_shard(checkpoint, 0, "a");
      for (int t = 0; t < 400; ++t) checkpoint.add_tensor(std::string(200, 'n') + std::to_string(t), t % 2);
      const struct rlimit limit {32768, 32768};  // the shards are written; the index of 80 KB is not
      ::setrlimit(RLIMIT_FSIZE, &limit);
      checkpoint.publish();
    } catch (const Error& e) {
      code = std::string(e.what()).find("model.safetensors.index.json: writing failed: File too large") !=
                     std::string::npos ? 7 : 5;
    }
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 7) << "status " << status;
  EXPECT_EQ(files_in(dir.file("out")), before) << "the old output changed, or a temporary was left";
}

// Runs that fail part way, after a shard's output is written: here a file-size limit that the
// second shard written exceeds (quantize writes the shards last to first, dequantize first to
// last). The output each writes over is as it was, and no temporary is left.
TEST(ShardedOutput, ARunThatFailsAfterWritingAShardLeavesTheOutputItWritesOverWhole) {
  test::TempDir dir;
  fs::create_directories(dir.file("model"));
  const auto values = [](std::size_t n, double step) {
    std::vector<float> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = float(std::sin(double(i) * step)) * 0.05f;
    return v;
  };
  io::TensorFile first, second;  // 1 MB kept as it is, then 2 MB quantized to 128 KB
  first.tensors["layers.1.mlp.weight"] = io::f32_tensor({64, 96}, values(64 * 96, 0.3));
  first.tensors["layers.1.norm.weight"] = io::f32_tensor({250000}, values(250000, 0.7));
  second.tensors["layers.2.mlp.weight"] = io::f32_tensor({512, 1024}, values(512 * 1024, 0.11));
  io::write_safetensors(dir.file("model/model-00001-of-00002.safetensors"), first);
  io::write_safetensors(dir.file("model/model-00002-of-00002.safetensors"), second);
  const std::string d = dir.path().string();
  ASSERT_EQ(run_nuq("quantize " + d + "/model -o " + d + "/out").status, kOk);
  ASSERT_EQ(run_nuq("dequantize " + d + "/out -o " + d + "/restored").status, kOk);
  const std::map<std::string, std::string> out = files_in(dir.file("out")), restored = files_in(dir.file("restored"));

  CommandResult r = run_nuq("quantize " + d + "/model -o " + d + "/out -m uniform -b 2", "prlimit --fsize=300000");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("out/model-00001-of-00002.safetensors: writing failed: File too large"), std::string::npos)
      << r.output;
  EXPECT_EQ(files_in(dir.file("out")), out) << "a failed quantize changed the output it was to replace";

  ASSERT_EQ(run_nuq("quantize " + d + "/model -o " + d + "/other -m uniform -b 2").status, kOk);
  r = run_nuq("dequantize " + d + "/other -o " + d + "/restored", "prlimit --fsize=1500000");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("restored/model-00002-of-00002.safetensors: writing failed: File too large"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(files_in(dir.file("restored")), restored) << "a failed dequantize changed the output it was to replace";
}

// A folder is written over by a run like the one that wrote it: quantized shards by quantize,
// restored ones by dequantize. The original model under the same shard names is refused, not
// written over (`nuq dequantize llama-2bit -o llama` replaced its weights, and a run cut short
// between renames left a mix of restored and original shards that every reader took for a model).
TEST(ShardedOutput, AFolderIsWrittenOverOnlyByARunLikeTheOneThatWroteIt) {
  test::TempDir dir;
  const std::map<std::string, std::string> quantized = quantized_output(dir), model = files_in(dir.file("model"));
  const std::string d = dir.path().string();
  CommandResult r = run_nuq("dequantize " + d + "/out -o " + d + "/model");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("model-00001-of-00002.safetensors: this run would write over it, and nuq dequantize did not "
                          "write it (it was not restored from codes: the original model?)"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(files_in(dir.file("model")), model);
  ASSERT_EQ(run_nuq("dequantize " + d + "/out -o " + d + "/restored").status, kOk);
  const std::map<std::string, std::string> restored = files_in(dir.file("restored"));
  r = run_nuq("quantize " + d + "/model -o " + d + "/restored");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("nuq quantize did not write it (it holds no quantized tensors"), std::string::npos)
      << r.output;
  EXPECT_EQ(files_in(dir.file("restored")), restored);
  // Each written over by a run like its own.
  EXPECT_EQ(run_nuq("dequantize " + d + "/out -o " + d + "/restored --dtype bf16").status, kOk);
  EXPECT_NE(files_in(dir.file("restored")), restored);
  EXPECT_EQ(run_nuq("quantize " + d + "/model -o " + d + "/out -m uniform -b 2").status, kOk);
  EXPECT_NE(files_in(dir.file("out")), quantized);
}

// An output file left read-only (0444) is replaced and keeps its mode; a sharded output keeps its
// index. Run as a user other than root, whose writes no mode stops: the temporary took the mode at
// once, so a shard held closed could not be opened again as it was published, after the old index
// was removed (the folder was left without one; a single file could not be replaced at all).
TEST(ShardedOutput, AReadOnlyOutputIsReplacedKeepingItsMode) {
  std::string as_user;  // (a prefix of the command)
  if (::geteuid() == 0) {
    if (!fs::exists("/usr/bin/setpriv")) GTEST_SKIP() << "run as root, without setpriv to run as another user";
    as_user = "setpriv --reuid=65534 --regid=65534 --clear-groups";
    if (run_nuq("--version", as_user).status != kOk) GTEST_SKIP() << "nobody (65534) cannot run " << NUQ_BINARY;
  }
  test::TempDir dir;
  fs::create_directories(dir.file("model"));
  test::write_two_shards(dir.file("model"));
  fs::permissions(dir.path(), fs::perms::all);
  fs::permissions(dir.file("model"), fs::perms::all);
  const std::string d = dir.path().string(), shard = "/model-00001-of-00002.safetensors";
  if (!as_user.empty() && std::system((as_user + " test -w " + d + "/model").c_str()) != 0)
    GTEST_SKIP() << "nobody (65534) cannot write in " << d;
  for (const std::string& output : {d + "/out", d + "/one.safetensors"}) {
    SCOPED_TRACE(output);
    const std::string input = output == d + "/out" ? d + "/model" : d + "/model" + shard;
    const std::string written = output == d + "/out" ? output + shard : output;
    CommandResult r = run_nuq("quantize " + input + " -o " + output, as_user);
    ASSERT_EQ(r.status, kOk) << r.output;
    const std::string before = bytes_of(written);
    fs::permissions(written, fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
    r = run_nuq("quantize " + input + " -o " + output + " -m uniform -b 2", as_user);
    EXPECT_EQ(r.status, kOk) << r.output;
    EXPECT_NE(bytes_of(written), before);  // the new run's
    EXPECT_EQ(fs::status(written).permissions() & fs::perms::all,
              fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
    if (output == d + "/out") {
      EXPECT_TRUE(fs::exists(output + "/model.safetensors.index.json"));
    }
  }
}

// A checkpoint in one file or in shards whose order is not its tensors' names' quantizes to the
// same bits: every statistic is joined in name order (joined shard by shard, the global mean moved
// in its last digit, and with it the run's fingerprint that dequantize records).
TEST(ShardedOutput, AShardingOfACheckpointQuantizesAsItsOneFile) {
  test::TempDir dir;
  fs::create_directories(dir.file("model"));
  io::TensorFile whole;
  const char* names[] = {"z.weight", "a.weight", "m.weight", "c.weight"};  // one a shard, not in name order
  for (int s = 0; s < 4; ++s) {
    io::TensorFile shard;
    const std::vector<float> w = test::draw(test::Law::Laplace, 40 * (24 + s), 0.03 * (s + 1), 0.011 * (s + 2), 60 + s);
    shard.tensors[names[s]] = whole.tensors[names[s]] = io::f32_tensor({40, 24 + s}, w);
    io::write_safetensors(dir.file("model/model-0000" + std::to_string(s + 1) + "-of-00004.safetensors"), shard);
  }
  io::write_safetensors(dir.file("whole.safetensors"), whole);
  for (const Normalisation normalisation : {Normalisation::Global, Normalisation::PerTensor, Normalisation::PerChannel}) {
    StreamOptions options;
    options.normalisation = normalisation;
    fs::remove_all(dir.file("out"));
    const StreamReport sharded = quantize_checkpoint_files(dir.file("model"), dir.file("out"), test::msptq2(), options, cpu_backend());
    const StreamReport one = quantize_checkpoint_files(dir.file("whole.safetensors"), dir.file("one.safetensors"),
                                                       test::msptq2(), options, cpu_backend());
    const std::string what = to_string(normalisation);
    EXPECT_EQ(sharded.stats.mean, one.stats.mean) << what;
    EXPECT_EQ(sharded.stats.stddev(), one.stats.stddev()) << what;
    EXPECT_EQ(sharded.sqnr_ex_db, one.sqnr_ex_db) << what;
    const io::SafetensorsReader single(dir.file("one.safetensors"));
    nlohmann::json expected = nlohmann::json::parse(single.layout().metadata.at("nuq.quantized"));
    const io::TensorFile from_one = io::read_safetensors(dir.file("one.safetensors"));
    for (int s = 0; s < 4; ++s) {
      const std::string shard = dir.file("out/model-0000" + std::to_string(s + 1) + "-of-00004.safetensors");
      nlohmann::json described = nlohmann::json::parse(io::SafetensorsReader(shard).layout().metadata.at("nuq.quantized"));
      EXPECT_EQ(described["mean"], expected["mean"]) << what << ", shard " << s;
      EXPECT_EQ(described["stddev"], expected["stddev"]) << what << ", shard " << s;
      for (const auto& [name, t] : io::read_safetensors(shard).tensors)
        EXPECT_EQ(t.data, from_one.tensors.at(name).data) << what << ", " << name;
    }
  }
}

// A shard whose tensors are all kept (norms only, a skipped head, another tool's FP8 weights)
// names the grouped run it belongs to as the others do: every command reads the folder back.
TEST(ShardedOutput, AShardWithoutAQuantizedTensorBelongsToItsGroupedRun) {
  test::TempDir dir;
  fs::create_directories(dir.file("model"));
  for (int s = 0; s < 3; ++s) {
    io::TensorFile shard;
    if (s == 1) shard.tensors["norm.weight"] = io::f32_tensor({32}, test::draw(test::Law::Laplace, 32, 1.0, 0.1, 7));
    else shard.tensors["w" + std::to_string(s) + ".weight"] = io::f32_tensor({16, 32}, test::draw(test::Law::Laplace, 512, 0.0, 0.02, s));
    io::write_safetensors(dir.file("model/model-0000" + std::to_string(s + 1) + "-of-00003.safetensors"), shard);
  }
  const std::string d = dir.path().string();
  for (const auto& [what, size] : std::vector<std::pair<std::string, int>>{{"--group-size 8", 8},
                                                                          {"--group-size 16 --skip w2", 16}}) {
    fs::remove_all(dir.file("out"));
    fs::remove_all(dir.file("restored"));
    CommandResult r = run_nuq("quantize " + d + "/model -o " + d + "/out " + what);
    ASSERT_EQ(r.status, kOk) << what << r.output;
    std::set<std::string> runs;
    for (int s = 0; s < 3; ++s) {
      const io::SafetensorsReader shard(dir.file("out/model-0000" + std::to_string(s + 1) + "-of-00003.safetensors"));
      const auto described = nlohmann::json::parse(shard.layout().metadata.at("nuq.quantized"));
      EXPECT_EQ(described.value("group_sizes", nlohmann::json()), nlohmann::json::array({size})) << what << ", shard " << s;
      runs.insert(quantized_run(shard.layout().metadata, "shard"));
    }
    EXPECT_EQ(runs.size(), 1u) << what;
    r = run_nuq("inspect " + d + "/out");
    EXPECT_EQ(r.status, kOk) << what << r.output;
    r = run_nuq("dequantize " + d + "/out -o " + d + "/restored");
    ASSERT_EQ(r.status, kOk) << what << r.output;
    std::set<std::string> restored_from;
    for (int s = 0; s < 3; ++s)
      restored_from.insert(io::SafetensorsReader(dir.file("restored/model-0000" + std::to_string(s + 1) + "-of-00003.safetensors"))
                               .layout().metadata.at("nuq.restored_from"));
    EXPECT_EQ(restored_from.size(), 1u) << what;
    fs::remove(dir.file("restored/model.safetensors.index.json"));  // read as a folder of shards: compared
    r = run_nuq("inspect " + d + "/restored");
    EXPECT_EQ(r.status, kOk) << what << r.output;
  }
  // A recorded list that its own tensors' sizes are not among, or no list of whole sizes, is refused.
  const std::string first = dir.file("out/model-00001-of-00003.safetensors");
  const io::TensorFile written = io::read_safetensors(first);
  for (const char* recorded : {"[8]", "\"abc\"", "[16, 16]", "[-16, 16]", "[]"}) {
    io::TensorFile tampered = written;
    nlohmann::json described = nlohmann::json::parse(tampered.metadata.at("nuq.quantized"));
    described["group_sizes"] = nlohmann::json::parse(recorded);
    tampered.metadata["nuq.quantized"] = described.dump();
    io::write_safetensors(first, tampered);
    const CommandResult r = run_nuq("inspect " + first);
    EXPECT_EQ(r.status, kUserError) << recorded << r.output;
    EXPECT_NE(r.output.find("group_sizes " + nlohmann::json::parse(recorded).dump() + " is not the ascending list"),
              std::string::npos) << r.output;
  }
}

TEST(ShardedOutput, AFolderHoldingAnotherModelIsRefusedBeforeAnythingIsRead) {
  test::TempDir dir;
  fs::create_directories(dir.file("model"));
  test::write_two_shards(dir.file("model"));
  const std::string d = dir.path().string();
  ASSERT_EQ(run_nuq("quantize " + d + "/model -o " + d + "/out").status, kOk);
  // Written over by the same checkpoint again, with another design: this run's names only.
  CommandResult r = run_nuq("quantize " + d + "/model -o " + d + "/out -m uniform -b 8");
  ASSERT_EQ(r.status, kOk) << r.output;
  std::ofstream(dir.file("out/config.json")) << "{}";  // what a user copies beside the shards is no model
  ASSERT_EQ(run_nuq("quantize " + d + "/model -o " + d + "/out").status, kOk);

  // Another model: three shards and their index. Its files stay as they were.
  fs::create_directories(dir.file("other"));
  for (int s = 1; s <= 3; ++s)
    fs::copy_file(dir.file("model/model-00001-of-00002.safetensors"),
                  dir.file("other/model-0000" + std::to_string(s) + "-of-00003.safetensors"));
  std::ofstream(dir.file("other/model.safetensors.index.json"))
      << R"({"weight_map": {"layers.1.mlp.weight": "model-00001-of-00003.safetensors"}})";
  const std::map<std::string, std::string> other = files_in(dir.file("other"));
  r = run_nuq("quantize " + d + "/model -o " + d + "/other");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("--output " + d + "/other: holds another model's files (model-00001-of-00003.safetensors, "
                          "model-00002-of-00003.safetensors, model-00003-of-00003.safetensors)"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(files_in(dir.file("other")), other);
  r = run_nuq("dequantize " + d + "/out -o " + d + "/other");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("holds another model's files"), std::string::npos) << r.output;
  EXPECT_EQ(files_in(dir.file("other")), other);

  // An index at this run's index name that maps a file this run would not write, even one not there.
  const std::map<std::string, std::string> out = files_in(dir.file("out"));
  std::ofstream(dir.file("out/model.safetensors.index.json")) << R"({"weight_map": {"x": "elsewhere.safetensors"}})";
  r = run_nuq("quantize " + d + "/model -o " + d + "/out");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("holds another model's files (elsewhere.safetensors)"), std::string::npos) << r.output;
  std::ofstream(dir.file("out/model.safetensors.index.json")) << "not JSON";
  r = run_nuq("quantize " + d + "/model -o " + d + "/out");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("holds model.safetensors.index.json, which is not an index this run would write over"),
            std::string::npos)
      << r.output;
  // A shard of another numbering, or another index, beside this run's names.
  std::ofstream(dir.file("out/model.safetensors.index.json")) << out.at("model.safetensors.index.json");
  for (const std::string stray : {"model-00003-of-00003.safetensors", "other.safetensors.index.json"}) {
    std::ofstream(dir.file("out/" + stray)) << "x";
    r = run_nuq("quantize " + d + "/model -o " + d + "/out");
    EXPECT_EQ(r.status, kUserError);
    EXPECT_NE(r.output.find("holds another model's files (" + stray + ")"), std::string::npos) << r.output;
    fs::remove(dir.file("out/" + stray));
  }
  EXPECT_EQ(files_in(dir.file("out")), out);
  // Single files are no shards of a model: an adapter, Mistral's consolidated weights, macOS's ._
  // files beside the shards are left as they are.
  for (const std::string single : {"adapter_model.safetensors", "consolidated.safetensors",
                                   "._model-00001-of-00002.safetensors"})
    std::ofstream(dir.file("out/" + single)) << single;
  r = run_nuq("quantize " + d + "/model -o " + d + "/out");
  EXPECT_EQ(r.status, kOk) << r.output;
  EXPECT_EQ(bytes_of(dir.file("out/consolidated.safetensors")), "consolidated.safetensors");
}

TEST(ShardedOutput, AFolderAnotherRunIsWritingIsRefused) {
  test::TempDir dir;
  fs::create_directories(dir.file("model"));
  test::write_two_shards(dir.file("model"));
  {
    const ShardedCheckpoint writing(dir.file("model"), dir.file("out"));
    try {
      const ShardedCheckpoint second(dir.file("model"), dir.file("out"));
      ADD_FAILURE() << "a second writer of the folder was let in";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("another nuq run is writing this folder"), std::string::npos) << e.what();
    }
    CommandResult r = run_nuq("quantize " + dir.path().string() + "/model -o " + dir.path().string() + "/out");
    EXPECT_EQ(r.status, kUserError);
    EXPECT_NE(r.output.find("another nuq run is writing this folder"), std::string::npos) << r.output;
  }
  const ShardedCheckpoint after(dir.file("model"), dir.file("out"));  // the lock goes with its run
}

TEST(ShardedOutput, TheIndexNameAndTheFolderNameAreCheckedBeforeTheWork) {
  test::TempDir dir;
  fs::create_directories(dir.file("model"));
  test::write_two_shards(dir.file("model"));
  const std::string d = dir.path().string();
  fs::create_directories(dir.file("out"));
  std::ofstream(dir.file("target")) << "kept";
  fs::create_symlink(dir.file("target"), dir.file("out/model.safetensors.index.json"));
  CommandResult r = run_nuq("quantize " + d + "/model -o " + d + "/out");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("out/model.safetensors.index.json: will not replace it: it is a symbolic link"),
            std::string::npos)
      << r.output;
  EXPECT_TRUE(fs::is_symlink(dir.file("out/model.safetensors.index.json")));
  EXPECT_EQ(files_in(dir.file("out")).size(), 1u) << "a shard was written before the index's name was checked";
  fs::remove(dir.file("out/model.safetensors.index.json"));
  fs::create_directories(dir.file("out/model.safetensors.index.json/inside"));
  r = run_nuq("quantize " + d + "/model -o " + d + "/out");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("will not replace it: it is a directory"), std::string::npos) << r.output;

  fs::create_symlink(dir.file("nowhere"), dir.file("dangling"));
  r = run_nuq("quantize " + d + "/model -o " + d + "/dangling");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("--output " + d + "/dangling: is a symbolic link to nothing"), std::string::npos) << r.output;
  r = run_nuq("quantize " + d + "/model -o " + d + "/q.safetensors");
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("a folder named .safetensors would be read as a file"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir.file("q.safetensors")));
}

}  // namespace
}  // namespace nuq
