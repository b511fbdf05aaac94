// The `nuq` binary as a user runs it: help, JSON output, CSV traces, and clear errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <cmath>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "nuq/checkpoint.h"
#include "nuq/io/idx.h"
#include "nuq/io/safetensors.h"
#include "nuq/io/safetensors_stream.h"
#include "nuq/mismatch.h"
#include "nuq/model.h"
#include "nuq/ptq.h"
#include "checkpoint_cases.h"
#include "cli_runner.h"
#include "sanitizer_build.h"
#include "temp_dir.h"

namespace {

using nuq::test::CommandResult;
using nuq::test::run_nuq;

TEST(Cli, HelpListsTheCommands) {
  const CommandResult r = run_nuq("--help");
  EXPECT_EQ(r.status, 0);
  for (const char* command : {"design", "theory", "devices", "inspect", "quantize", "dequantize", "eval"})
    EXPECT_NE(r.output.find(command), std::string::npos) << command;
  EXPECT_EQ(run_nuq("design --help").status, 0);
  EXPECT_EQ(run_nuq("theory --help").status, 0);
  // nuq's own options pass through every command, and its help says so.
  for (const char* command : {"quantize", "design", "reproduce"}) {
    const CommandResult help = run_nuq(std::string(command) + " --help");
    EXPECT_NE(help.output.find("--threads N"), std::string::npos) << command << ": " << help.output;
  }
}

TEST(Cli, NoCommandIsAnError) { EXPECT_NE(run_nuq("").status, 0); }

TEST(Cli, DesignJsonIsTheSptqOptimum) {
  const CommandResult r = run_nuq("design --method sptq --json");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_NEAR(j.at("sqnr_db").get<double>(), 6.9790, 1e-4);
  EXPECT_EQ(j.at("codebook").at("iterations"), 40);
  EXPECT_EQ(j.at("trace").size(), 41u);
  EXPECT_EQ(j.at("codebook").at("levels").size(), 4u);
  // Algorithm 1's own parameter, x_max = 3 Delta (Table 2: Delta = 0.8504), in both outputs.
  EXPECT_NEAR(j.at("delta").get<double>(), j.at("codebook").at("xmax").get<double>() / 3, 1e-15);
  EXPECT_NEAR(j.at("delta").get<double>(), 0.8504, 5e-5);
  EXPECT_NE(run_nuq("design --method sptq").output.find("Delta         0.850442 (x_max = 3 Delta)"), std::string::npos);
  EXPECT_EQ(run_nuq("design --method uniform --json").output.find("\"delta\""), std::string::npos);
}

TEST(Cli, TraceIsCsvWithEveryIterate) {
  const CommandResult r = run_nuq("design --method sptq --init 0.6535 --trace");
  ASSERT_EQ(r.status, 0) << r.output;
  std::istringstream lines(r.output);
  std::string header, line;
  std::getline(lines, header);
  EXPECT_EQ(header, "iteration,delta,xmax,distortion,sqnr_db");
  int rows = 0;
  while (std::getline(lines, line)) ++rows;
  EXPECT_EQ(rows, 42);  // Delta(0) and 41 iterates (Table 2)
}

// Where the design's parameter is x_max itself, the column is named once (pandas would read a
// second "xmax" as "xmax.1").
TEST(Cli, CsvColumnsAreNamedOnce) {
  for (const char* command : {"design -m uniform --sweep 1:2", "design -m uniform --optimizer iterative --trace"}) {
    const CommandResult r = run_nuq(command);
    ASSERT_EQ(r.status, 0) << r.output;
    const std::string header = r.output.substr(0, r.output.find('\n'));
    EXPECT_EQ(header.find("xmax"), header.rfind("xmax")) << command << ": " << header;
  }
}

TEST(Cli, SweepIsCsvOverTheRange) {
  const CommandResult r = run_nuq("design --method msptq --sweep 0.5:1.5:0.1");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.rfind("delta,xmax,distortion,granular,overload,sqnr_db", 0), 0u);
  int rows = -1;
  for (char c : r.output) rows += c == '\n';
  EXPECT_EQ(rows, 11);
}

// A sweep's rows are written as they are made: 300,000 points held as one JSON tree took 215 MB
// (CSV) and 350 MB (--json); the points themselves take 15 MB.
TEST(Cli, ALongSweepIsWrittenWithoutHoldingItsRows) {
  namespace test = nuq::test;
  if (test::kAddressSanitizer) GTEST_SKIP() << "AddressSanitizer's shadow memory counts in the resident set";
  test::TempDir dir;
  const auto [short_status, short_kib] = test::run_nuq_measured({"design", "--sweep", "1:2"}, dir.file("out"));
  ASSERT_EQ(short_status, 0);
  for (const bool json : {false, true}) {
    SCOPED_TRACE(json ? "--json" : "CSV");
    std::vector<std::string> arguments{"design", "-m", "sptq", "--sweep", "0.1:0.4:0.000001"};
    if (json) arguments.push_back("--json");
    const auto [status, kib] = test::run_nuq_measured(arguments, dir.file("out"));
    const std::string output = test::read_text(dir.file("out"));
    ASSERT_EQ(status, 0) << output.substr(0, 2000);
    EXPECT_LT(kib - short_kib, 64 * 1024) << "peak resident set in KiB: " << kib << ", of a sweep of 2 points "
                                          << short_kib;
    if (json) {
      const nlohmann::json shown = nlohmann::json::parse(output);
      ASSERT_EQ(shown.at("sweep").size(), 300001u);
      EXPECT_NEAR(shown.at("sweep").back().at("parameter").get<double>(), 0.4, 1e-12);
    } else {
      EXPECT_EQ(std::count(output.begin(), output.end(), '\n'), 300002);
    }
  }
}

// A run's memory grows with the header it writes, not several headers' worth. Quantizing 100,000
// small tensors peaked at 8.3 times the output's header above a one-tensor run while the header's
// parts were built as trees and copies (the description's tree, the metadata's copy and dump, the
// planned entries' copy); 4.5 times once they are text written once and let go.
TEST(Cli, QuantizingManyTensorsAndReadingThemBackHoldAFewTimesTheHeader) {
  namespace test = nuq::test;
  namespace io = nuq::io;
  if (test::kAddressSanitizer) GTEST_SKIP() << "AddressSanitizer's shadow memory counts in the resident set";
  test::TempDir dir;
  io::TensorFile small, many;
  std::vector<float> weights(32);
  for (std::size_t i = 0; i < weights.size(); ++i) weights[i] = std::sin(float(i) * 1.7f);
  small.tensors["w"] = io::f32_tensor({4, 8}, weights);
  constexpr int kTensors = 100000;
  for (int i = 0; i < kTensors; ++i) {
    weights[std::size_t(i) % weights.size()] += 0.01f;
    many.tensors["model.layers." + std::to_string(i) + ".weight"] = io::f32_tensor({4, 8}, weights);
  }
  io::write_safetensors(dir.file("small.safetensors"), small);
  io::write_safetensors(dir.file("many.safetensors"), many);
  many = {};
  // Every run before this process reads the output: a child's peak counts the pages it shares
  // with its parent at the fork.
  const auto run = [&](std::vector<std::string> arguments) {
    const auto [status, kib] = test::run_nuq_measured(std::move(arguments), dir.file("out"));
    EXPECT_EQ(status, 0) << test::read_text(dir.file("out")).substr(0, 2000);
    return kib;
  };
  // The lower of two runs: twice in many, each the first run after a rebuild, a run peaked about
  // 114 MB higher, which no run on its own or beside busy cores repeated.
  const auto lower_of_two = [&](const std::vector<std::string>& arguments) {
    return std::min(run(arguments), run(arguments));
  };
  const long small_kib = run({"quantize", dir.file("small.safetensors"), "-o", dir.file("small-q.safetensors")});
  const long kib = lower_of_two({"quantize", dir.file("many.safetensors"), "-o", dir.file("many-q.safetensors")});
  // Reading it back: inspect peaked at 7.0 times the header while the description's parsed list of
  // tensors was held beside the layout made from it, 4.7 times once each entry was let go as read;
  // now each entry is kept only as its text as it is parsed (quantized_layout).
  const long small_inspect_kib = run({"inspect", dir.file("small-q.safetensors")});
  const long inspect_kib = lower_of_two({"inspect", dir.file("many-q.safetensors")});
  const std::string listed = test::read_text(dir.file("out"));
  EXPECT_NE(listed.find("\nmodel.layers.99999.weight "), std::string::npos) << listed.substr(0, 2000);
  const io::SafetensorsReader written(dir.file("many-q.safetensors"));
  EXPECT_EQ(written.layout().tensors.size(), std::size_t(2 * kTensors));  // codes and a table each
  EXPECT_EQ(nlohmann::json::parse(written.layout().metadata.at("nuq.quantized")).at("tensors").size(),
            std::size_t(kTensors));
  const double header_kib = double(written.file_size() - written.data_size()) / 1024;
  EXPECT_LT(double(kib - small_kib), 6 * header_kib)
      << "peak resident set in KiB: " << kib << ", of one tensor " << small_kib << "; the header " << header_kib;
  EXPECT_LT(double(inspect_kib - small_inspect_kib), 6 * header_kib)
      << "inspect's peak resident set in KiB: " << inspect_kib << ", of one tensor " << small_inspect_kib;
}

TEST(Cli, TheoryCheckPassesAndJsonParses) {
  const CommandResult text = run_nuq("theory --check");
  EXPECT_EQ(text.status, 0) << text.output;
  EXPECT_NE(text.output.find("0 mismatch(es)"), std::string::npos);
  const CommandResult json = run_nuq("theory --json");
  ASSERT_EQ(json.status, 0);
  EXPECT_EQ(nlohmann::json::parse(json.output).at("mismatches"), 0);
}

TEST(Cli, DevicesAlwaysAnswers) {
  const CommandResult r = run_nuq("devices --json");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_TRUE(j.contains("cuda_compiled"));
  EXPECT_TRUE(j.at("devices").is_array());
}

// The CPU's threads: OpenMP's count (here OMP_NUM_THREADS's) unless --threads, given before the
// command or among its options, chooses one; `nuq devices` shows the count the run uses.
TEST(Cli, ThreadsAreOpenMpsUnlessChosen) {
  const auto threads_of = [](const CommandResult& r) {
    EXPECT_EQ(r.status, 0) << r.output;
    return nlohmann::json::parse(r.output).at("cpu").at("threads").get<int>();
  };
  EXPECT_EQ(threads_of(run_nuq("devices --json", "OMP_NUM_THREADS=3")), 3);
  EXPECT_EQ(threads_of(run_nuq("--threads 2 devices --json", "OMP_NUM_THREADS=3")), 2);
  EXPECT_EQ(threads_of(run_nuq("devices --json --threads 1", "OMP_NUM_THREADS=3")), 1);
  const CommandResult text = run_nuq("--threads 2 devices");
  ASSERT_EQ(text.status, 0) << text.output;
  EXPECT_EQ(text.output.rfind("CPU: ", 0), 0u) << text.output;
  EXPECT_NE(text.output.find("(2 threads)"), std::string::npos) << text.output;
  for (const char* bad : {"--threads 0 devices", "--threads 1025 devices", "--threads two devices", "devices --threads"}) {
    const CommandResult r = run_nuq(bad);
    EXPECT_EQ(r.status, 1) << bad << ": " << r.output;
    EXPECT_NE(r.output.find("--threads"), std::string::npos) << bad << ": " << r.output;
  }
}

// cuBLAS is opened when first used, not at start (kernels/cublas_library.cuh): the dynamic
// loader's own log (LD_DEBUG=files) shows which libraries a run opened. `nuq devices` opens it on
// purpose and says which file it found.
TEST(Cli, CublasIsOpenedOnlyWhenUsed) {
  const CommandResult design = run_nuq("design -m sptq --json", "LD_DEBUG=files");
  ASSERT_EQ(design.status, 0) << design.output;
  EXPECT_EQ(design.output.find("libcublas"), std::string::npos) << design.output;
  const CommandResult devices = run_nuq("devices --json");
  ASSERT_EQ(devices.status, 0) << devices.output;
  const auto j = nlohmann::json::parse(devices.output);
  if (!j.at("cuda_compiled").get<bool>()) {
    EXPECT_FALSE(j.contains("cublas")) << devices.output;
    return;
  }
  ASSERT_TRUE(j.contains("cublas")) << devices.output;  // this machine has the toolkit it was built with
  EXPECT_NE(j.at("cublas").get<std::string>().find("libcublas.so."), std::string::npos) << devices.output;
  const CommandResult traced = run_nuq("devices", "LD_DEBUG=files");
  EXPECT_NE(traced.output.find("libcublas.so."), std::string::npos) << traced.output;
  EXPECT_NE(traced.output.find("\ncuBLAS: "), std::string::npos) << traced.output;
}

TEST(Cli, BadInputGivesAClearErrorAndNonZeroStatus) {
  struct Case {
    const char* arguments;
    const char* message;
  };
  for (const Case& c : {Case{"design --method sptq3", "sptq3"},
                        Case{"design --method sptq --bits 3", "two-bit design"},
                        Case{"design --xmax -2", "x_max must be finite and positive"},
                        Case{"design --sweep 1:0.5", "--sweep"},
                        Case{"design --sweep a:b:c", "not a number"},
                        Case{"design --method uniform --trace", "--trace"},
                        Case{"design --method mulaw --optimizer iterative", "no iterative rule"}}) {
    const CommandResult r = run_nuq(c.arguments);
    EXPECT_NE(r.status, 0) << c.arguments;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.arguments << ": " << r.output;
  }
}

// Integer options are read in decimal whatever their leading zeros: the value checked against the
// bounds is the value used (CLI11 alone reads "0100" as octal 64 and refuses "09").
TEST(Cli, WholeNumbersAreDecimal) {
  CommandResult r = run_nuq("design -m uniform -N 0100 --json");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output).at("codebook").at("levels_count"), 100);
  r = run_nuq("design -m uniform -b 09");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("9 (512 levels)"), std::string::npos) << r.output;
  r = run_nuq("design -m uniform -b 017");  // seventeen, not octal 15
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("--bits: '017' is not in 1 to 16"), std::string::npos) << r.output;
}

TEST(Cli, MismatchAndBitrateAgreeWithTheLibrary) {
  const CommandResult r = run_nuq("mismatch --bits 10 --range=-20:0:10 --json");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  const auto curve = nuq::mismatch_curve(nuq::mismatch_design(10), -20.0, 0.0, 10.0);
  ASSERT_EQ(j.at("points").size(), curve.size());
  for (std::size_t i = 0; i < curve.size(); ++i)
    EXPECT_NEAR(j["points"][i]["sqnr_db"].get<double>(), curve[i].sqnr_db, 1e-9);
  const CommandResult b = run_nuq("bitrate --sqnr-min 35 --range=-25:0 --json");
  ASSERT_EQ(b.status, 0) << b.output;
  EXPECT_EQ(nlohmann::json::parse(b.output).at("bits").get<int>(), nuq::choose_bit_rate(35.0, -25.0, 0.0)->bits);
  const CommandResult bad = run_nuq("bitrate --sqnr-min 35 --range=0:-25");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.output.find("--range"), std::string::npos) << bad.output;
  // FROM:FROM is one point: the mismatch at -23 dB alone, and the rate that covers it.
  const CommandResult one = run_nuq("mismatch --bits 12 --range=-23:-23 --json");
  ASSERT_EQ(one.status, 0) << one.output;
  const auto point = nlohmann::json::parse(one.output).at("points");
  ASSERT_EQ(point.size(), 1u);
  EXPECT_NEAR(point[0]["sqnr_db"].get<double>(), nuq::mismatch_curve(nuq::mismatch_design(12), -23.0, -23.0, 1.0)[0].sqnr_db,
              1e-9);
  const CommandResult rate = run_nuq("bitrate --sqnr-min 40 --range=-23:-23 --json");
  ASSERT_EQ(rate.status, 0) << rate.output;
  EXPECT_EQ(nlohmann::json::parse(rate.output).at("bits").get<int>(), nuq::choose_bit_rate(40.0, -23.0, -23.0)->bits);
  // The table's sigma keeps its digits far below the design's variance (it printed 0.000000 there).
  const CommandResult text = run_nuq("mismatch --bits 12 --range=-200:-160 --step 40");
  ASSERT_EQ(text.status, 0) << text.output;
  EXPECT_NE(text.output.find(" 1e-10 "), std::string::npos) << text.output;
  EXPECT_NE(text.output.find(" 1e-08 "), std::string::npos) << text.output;
}

}  // namespace

namespace nuq {
namespace {

// --device: cpu always works; cuda works where a device is visible and otherwise fails saying
// why; auto falls back to the CPU and then writes exactly what --device cpu writes.
TEST(Cli, DeviceChoiceOnQuantize) {
  test::TempDir dir;
  const std::string model = dir.file("mlp.safetensors");
  save_model(model, make_model(Architecture::Mlp, 4));
  const CommandResult devices = run_nuq("devices --json");
  ASSERT_EQ(devices.status, 0) << devices.output;
  const bool have_gpu = !nlohmann::json::parse(devices.output).at("devices").empty();

  const CommandResult cpu = run_nuq("quantize " + model + " -o " + dir.file("cpu.safetensors") + " --device cpu");
  ASSERT_EQ(cpu.status, 0) << cpu.output;
  EXPECT_NE(cpu.output.find("(on cpu)"), std::string::npos) << cpu.output;
  const CommandResult cuda = run_nuq("quantize " + model + " -o " + dir.file("cuda.safetensors") + " --device cuda");
  if (have_gpu) {
    EXPECT_EQ(cuda.status, 0) << cuda.output;
    EXPECT_NE(cuda.output.find("(on cuda:0"), std::string::npos) << cuda.output;
  } else {
    EXPECT_NE(cuda.status, 0);
    EXPECT_NE(cuda.output.find("device cuda: "), std::string::npos) << cuda.output;
    const CommandResult automatic = run_nuq("quantize " + model + " -o " + dir.file("auto.safetensors"));
    ASSERT_EQ(automatic.status, 0) << automatic.output;
    EXPECT_NE(automatic.output.find("(on cpu)"), std::string::npos) << automatic.output;
    std::ifstream a(dir.file("cpu.safetensors"), std::ios::binary), b(dir.file("auto.safetensors"), std::ios::binary);
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(a), {}), std::string(std::istreambuf_iterator<char>(b), {}));
  }
  EXPECT_NE(run_nuq("quantize " + model + " -o x --device gpu").status, 0);
}

TEST(Cli, PerChannelQuantizeAndEval) {
  test::TempDir dir;
  const std::string model = dir.file("mlp.safetensors"), out = dir.file("q.safetensors");
  save_model(model, make_model(Architecture::Mlp, 6));
  const CommandResult q = run_nuq("quantize " + model + " -o " + out + " --normalise per-channel --device cpu --json");
  ASSERT_EQ(q.status, 0) << q.output;
  const nlohmann::json report = nlohmann::json::parse(q.output);
  EXPECT_EQ(report.at("normalisation"), "per-channel");
  EXPECT_EQ(report.at("outputs"), nlohmann::json::array({out}));  // as a checkpoint's report lists them
  // Glorot-uniform rows are uniform, not Laplacian: SQNR_ex well above 0 but below the Laplacian's.
  EXPECT_GT(report.at("sqnr_ex_db").get<double>(), 5.0);
  EXPECT_EQ(load_quantized(out).tensors.at("fc2.weight").matrix.levels.size(), 512u * 4u);
  const CommandResult wide = run_nuq("quantize " + model + " -o " + dir.file("u.safetensors") +
                                     " --normalise per-channel --method uniform --bits 12");
  EXPECT_NE(wide.status, 0);
  EXPECT_NE(wide.output.find("up to 8 bits"), std::string::npos) << wide.output;
}

// A nuq model's metadata goes through quantize and dequantize: how it was trained (what `nuq
// reproduce` checks before reusing it) and a user's own keys, as a checkpoint's do.
TEST(Cli, AModelsMetadataSurvivesQuantizeAndDequantize) {
  test::TempDir dir;
  Model model = make_model(Architecture::Mlp, 7);
  model.dataset = "fashion";
  model.training = R"({"batch":64,"epochs":3})";
  model.metadata = {{"user.note", "fine-tuned"}, {"license", "mit"}};
  save_model(dir.file("m.safetensors"), model);
  ASSERT_EQ(run_nuq("quantize " + dir.file("m.safetensors") + " -o " + dir.file("q.safetensors")).status, 0);
  ASSERT_EQ(run_nuq("dequantize " + dir.file("q.safetensors") + " -o " + dir.file("d.safetensors")).status, 0);
  for (const char* name : {"q.safetensors", "d.safetensors"}) {
    const auto metadata = io::read_safetensors(dir.file(name)).metadata;
    EXPECT_EQ(metadata.at("nuq.training"), model.training) << name;
    EXPECT_EQ(metadata.at("nuq.dataset"), "fashion") << name;
    EXPECT_EQ(metadata.at("user.note"), "fine-tuned") << name;
    EXPECT_EQ(metadata.at("license"), "mit") << name;
  }
  const Model restored = load_model(dir.file("d.safetensors"));
  EXPECT_EQ(restored.training, model.training);
  EXPECT_EQ(restored.metadata, model.metadata);
}

// A checkpoint takes every support region given in sigmas (the paper's cases 3-5: 3delta, Hui,
// Jayant; 3delta-mod, ternary's, scaled by --alpha once) as nuq's own models do: the x_max the
// rule gives, and the codes a run at that --xmax writes.
TEST(Cli, ACheckpointTakesSupportRegionsInSigmas) {
  test::TempDir dir;
  io::TensorFile checkpoint;
  std::vector<float> w(16 * 64);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = float(std::sin(double(i) * 1.7)) * 0.05f;
  checkpoint.tensors["layers.0.mlp.weight"] = io::f32_tensor({16, 64}, w);
  io::write_safetensors(dir.file("m.safetensors"), checkpoint);
  const struct {
    std::string design, region;
    double xmax, alpha;  // the rule's x_max (NaN: not checked here), and --alpha
  } cases[] = {{"-m sptq", "case3", 2.5513, 1.0},
               {"-m sptq", "hui", 1.9605, 1.0},
               {"-m msptq", "case5", 2.1748, 1.0},
               {"-m msptq", "3delta-mod", std::nan(""), 1.0},
               {"-m ternary --alpha 0.5", "ternary", 0.5 * 3.0 / std::sqrt(2.0), 0.5}};
  for (const auto& c : cases) {
    const std::string what = c.design + " --support " + c.region;
    const CommandResult given = run_nuq("quantize " + dir.file("m.safetensors") + " -o " + dir.file("s.safetensors") +
                                        " " + c.design + " --support " + c.region + " --json");
    ASSERT_EQ(given.status, 0) << what << ": " << given.output;
    const double chosen = nlohmann::json::parse(given.output).at("codebook").at("xmax").get<double>();
    if (!std::isnan(c.xmax)) {
      EXPECT_NEAR(chosen, c.xmax, 1e-4) << what;
    }
    std::ostringstream at;  // --xmax is scaled by --alpha as the rule's x_max is
    at.precision(17);
    at << chosen / c.alpha;
    const CommandResult same = run_nuq("quantize " + dir.file("m.safetensors") + " -o " + dir.file("x.safetensors") +
                                       " " + c.design + " --xmax " + at.str() + " --json");
    ASSERT_EQ(same.status, 0) << same.output;
    EXPECT_NEAR(nlohmann::json::parse(same.output).at("codebook").at("xmax").get<double>(), chosen, 1e-12) << what;
    EXPECT_EQ(io::read_safetensors(dir.file("s.safetensors")).tensors.at("layers.0.mlp.weight.codes").data,
              io::read_safetensors(dir.file("x.safetensors")).tensors.at("layers.0.mlp.weight.codes").data)
        << what;
  }
}

// --nonfinite saturate on a checkpoint: the text report says how many weights were saturated, and
// where, as it does for nuq's own models; --json counts them per tensor.
TEST(Cli, SaturatedWeightsOfACheckpointAreCountedInTheReport) {
  test::TempDir dir;
  io::TensorFile checkpoint;
  std::vector<float> w(32 * 64);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = float(std::sin(double(i))) * 0.05f;
  w[3] = std::numeric_limits<float>::quiet_NaN();
  w[70] = std::numeric_limits<float>::infinity();
  w[900] = -std::numeric_limits<float>::infinity();
  std::vector<float> finite(w.size());
  for (std::size_t i = 0; i < finite.size(); ++i) finite[i] = float(std::cos(double(i))) * 0.05f;
  checkpoint.tensors["layers.0.mlp.weight"] = io::f32_tensor({32, 64}, w);
  checkpoint.tensors["layers.1.mlp.weight"] = io::f32_tensor({32, 64}, finite);
  io::write_safetensors(dir.file("m.safetensors"), checkpoint);
  const CommandResult text = run_nuq("quantize " + dir.file("m.safetensors") + " -o " + dir.file("q.safetensors") +
                                     " --normalise per-tensor --nonfinite saturate");
  ASSERT_EQ(text.status, 0) << text.output;
  EXPECT_NE(text.output.find("3 non-finite weight(s) saturated (left out of every statistic): layers.0.mlp.weight 3\n"),
            std::string::npos) << text.output;
  const CommandResult json = run_nuq("quantize " + dir.file("m.safetensors") + " -o " + dir.file("j.safetensors") +
                                     " --normalise per-tensor --nonfinite saturate --json");
  ASSERT_EQ(json.status, 0) << json.output;
  const nlohmann::json report = nlohmann::json::parse(json.output);
  std::map<std::string, int> counts;
  for (const auto& t : report.at("tensors")) counts[t.at("name").get<std::string>()] = t.at("nonfinite").get<int>();
  EXPECT_EQ(counts, (std::map<std::string, int>{{"layers.0.mlp.weight", 3}, {"layers.1.mlp.weight", 0}}));
  const CommandResult clean = run_nuq("quantize " + dir.file("q.safetensors") + " -o " + dir.file("x.safetensors"));
  EXPECT_EQ(clean.status, 1);  // already quantized; and a run without NaNs prints no such line:
  const CommandResult none = run_nuq("quantize " + dir.file("m.safetensors") + " -o " + dir.file("k.safetensors") +
                                     " --skip layers.0 --nonfinite saturate");
  ASSERT_EQ(none.status, 0) << none.output;
  EXPECT_EQ(none.output.find("non-finite"), std::string::npos) << none.output;
}

TEST(Cli, DequantizeAShardedCheckpointIntoAFolder) {
  test::TempDir dir;
  std::filesystem::create_directories(dir.file("model"));
  nuq::test::write_two_shards(dir.file("model"));
  ASSERT_EQ(run_nuq("quantize " + dir.file("model") + " -o " + dir.file("q") + " --group-size 32").status, 0);
  const CommandResult restored = run_nuq("dequantize " + dir.file("q/model.safetensors.index.json") + " -o " +
                                         dir.file("d") + " --json");
  ASSERT_EQ(restored.status, 0) << restored.output;
  const nlohmann::json report = nlohmann::json::parse(restored.output);
  EXPECT_EQ(report.at("restored").size(), 2u);
  EXPECT_EQ(report.at("copied").size(), 2u);
  EXPECT_EQ(report.at("outputs").size(), 3u);
  const nlohmann::json index = nlohmann::json::parse(std::ifstream(dir.file("d/model.safetensors.index.json")));
  std::uint64_t total = 0;
  for (int s = 1; s <= 2; ++s) {
    const std::string file = "model-0000" + std::to_string(s) + "-of-00002.safetensors";
    const io::TensorFile alone = dequantize_checkpoint(io::read_safetensors(dir.file("q/" + file)), file);
    const io::TensorFile got = io::read_safetensors(dir.file("d/" + file));
    ASSERT_EQ(got.tensors.size(), 2u);
    for (const auto& [name, tensor] : alone.tensors) {
      EXPECT_EQ(got.tensors.at(name).dtype, io::DType::F32) << name;
      EXPECT_EQ(got.tensors.at(name).data, tensor.data) << name;
      EXPECT_EQ(index["weight_map"][name], file) << name;
    }
    total += io::SafetensorsReader(dir.file("d/" + file)).data_size();  // headers excluded, as HF counts
  }
  EXPECT_EQ(index["metadata"]["total_size"].get<std::uint64_t>(), total);
  // A folder of shards cannot go into a file, nor over its own shards; nothing is written then.
  const CommandResult into_file = run_nuq("dequantize " + dir.file("q") + " -o " + dir.file("d/model-00001-of-00002.safetensors"));
  EXPECT_EQ(into_file.status, 1) << into_file.output;
  const CommandResult over_input = run_nuq("dequantize " + dir.file("q") + " -o " + dir.file("q"));
  EXPECT_EQ(over_input.status, 1) << over_input.output;
  EXPECT_NE(over_input.output.find("is the input itself"), std::string::npos) << over_input.output;
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.file("q")), {}), 3);
}

// What scripts/gpu-check's interop step relies on: `nuq dequantize` restores a quantized model as
// the FP32 file PyTorch loads, and `nuq eval --predictions` writes each test image's class, the
// same classes the library's quantized network predicts.
TEST(Cli, DequantizeAModelAndEvalPredictions) {
  test::TempDir dir;
  const std::string model = dir.file("mlp.safetensors"), q = dir.file("q.safetensors"), d = dir.file("d.safetensors");
  save_model(model, make_model(Architecture::Mlp, 7));
  ASSERT_EQ(run_nuq("quantize " + model + " -o " + q + " -m msptq --device cpu").status, 0);
  const CommandResult restored = run_nuq("dequantize " + q + " -o " + d);
  ASSERT_EQ(restored.status, 0) << restored.output;
  const Model expected = dequantize_model(load_quantized(q)), got = load_model(d);
  ASSERT_EQ(got.parameters.size(), expected.parameters.size());
  for (std::size_t i = 0; i < got.parameters.size(); ++i)
    EXPECT_EQ(got.parameters[i].values, expected.parameters[i].values) << got.parameters[i].name;

  // Twelve 28 x 28 test images of varied pixels as IDX files in <data>/mnist.
  const std::string mnist = dir.file("mnist");
  std::filesystem::create_directories(mnist);
  io::IdxArray images{io::IdxType::U8, {12, 28, 28}, std::vector<std::uint8_t>(12 * 784)};
  for (std::size_t i = 0; i < images.bytes.size(); ++i) images.bytes[i] = std::uint8_t((i * 37 + i / 784 * 11) % 256);
  io::write_idx(mnist + "/t10k-images-idx3-ubyte", images);
  io::write_idx(mnist + "/t10k-labels-idx1-ubyte", io::IdxArray{io::IdxType::U8, {12}, std::vector<std::uint8_t>(12, 3)});
  const std::string predictions = dir.file("classes.txt");
  const CommandResult eval =
      run_nuq("eval " + q + " --dataset mnist --data " + dir.path().string() + " --device cpu --predictions " + predictions);
  ASSERT_EQ(eval.status, 0) << eval.output;
  std::ifstream in(predictions);
  std::vector<std::uint8_t> written;
  for (int c; in >> c;) written.push_back(std::uint8_t(c));
  EXPECT_EQ(written, quantized_predictions(load_quantized(q), io::load_split(mnist, "t10k")));

  // The report names the weights' form in the file: a model restored in BF16 is not called FP32.
  EXPECT_EQ(eval.output.rfind("quantized model ", 0), 0u) << eval.output;
  const std::string half = dir.file("bf16.safetensors"), data = " --dataset mnist --data " + dir.path().string() + " --device cpu";
  ASSERT_EQ(run_nuq("dequantize " + q + " -o " + half + " --dtype bf16").status, 0);
  for (const auto& [file, weights] : {std::pair{d, "FP32"}, std::pair{half, "BF16"}}) {
    const CommandResult text = run_nuq("eval " + file + data), json = run_nuq("eval " + file + data + " --json");
    ASSERT_EQ(text.status, 0) << text.output;
    EXPECT_EQ(text.output.rfind(std::string(weights) + " model ", 0), 0u) << text.output;
    ASSERT_EQ(json.status, 0) << json.output;
    EXPECT_EQ(nlohmann::json::parse(json.output).at("weights"), weights) << json.output;
  }
}

}  // namespace
}  // namespace nuq
