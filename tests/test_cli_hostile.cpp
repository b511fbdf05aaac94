// The command line under a new user's mistakes and hostile inputs, one table row each: every row
// checks the exit status (README, "Exit status"), a message that names the problem, and that no
// file in the working folder changed (contents and kinds) and no temporary file was left behind.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoint_cases.h"
#include "cli_runner.h"
#include "nuq/checkpoint.h"
#include "nuq/design.h"
#include "nuq/io/safetensors.h"
#include "nuq/model.h"
#include "nuq/ptq.h"
#include "nuq/quantized_file.h"
#include "temp_dir.h"

namespace nuq {
namespace {

using test::CommandResult;
using test::run_nuq;

constexpr int kOk = 0, kUserError = 1;

// Every entry of a folder: its kind, and for regular files the size and a hash of the bytes. Equal
// snapshots mean that nothing was created, removed, replaced or changed. (A hash, not the bytes:
// the folder holds 14 MB of models, and a copy of it per snapshot, two snapshots a case, made this
// the slowest test of the sanitizer build.)
std::map<std::string, std::string> snapshot(const std::filesystem::path& folder) {
  std::map<std::string, std::string> entries;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(folder)) {
    struct stat info {};
    ::lstat(entry.path().c_str(), &info);
    std::string state = std::to_string(info.st_mode & S_IFMT);
    if (S_ISREG(info.st_mode)) {
      const std::string bytes = test::bytes_of(entry.path().string());
      state += ":" + std::to_string(bytes.size()) + ":" + std::to_string(std::hash<std::string>{}(bytes));
    }
    entries[entry.path().string()] = std::move(state);
  }
  return entries;
}

// The folder every case runs against: models, checkpoints, broken files and odd nodes.
class HostileInputs : public ::testing::Test {
 protected:
  void SetUp() override {
    Model model = make_model(Architecture::Mlp, 3);
    model.dataset = "fashion";
    save_model(file("fp32.safetensors"), model);
    ::link(file("fp32.safetensors").c_str(), file("hardlink.safetensors").c_str());
    ::symlink(file("fp32.safetensors").c_str(), file("symlink.safetensors").c_str());
    ::mkfifo(file("fifo").c_str(), 0600);
    std::filesystem::create_directories(file("folder"));
    std::filesystem::create_directories(file("shards"));
    test::write_two_shards(file("shards"));
    std::ofstream(file("notes.txt")) << "not a safetensors file\n";

    io::TensorFile extra = io::read_safetensors(file("fp32.safetensors"));
    extra.tensors["fc4.weight"] = io::f32_tensor({3, 3}, std::vector<float>(9, 1.0f));  // not the MLP's
    io::write_safetensors(file("extra-tensor.safetensors"), extra);

    model.dataset.clear();  // as written by an older nuq
    save_model(file("no-dataset.safetensors"), model);
    Model broken = make_model(Architecture::Mlp, 3);
    broken.parameters[0].values[784 + 7] = std::numeric_limits<float>::quiet_NaN();
    save_model(file("nan-weight.safetensors"), broken);

    // A foreign checkpoint, quantized, and three ways a quantized checkpoint can be damaged.
    io::TensorFile checkpoint;
    std::vector<float> weights(64 * 48);
    for (std::size_t i = 0; i < weights.size(); ++i) weights[i] = std::sin(0.37 * double(i));
    checkpoint.tensors["layer.weight"] = io::f32_tensor({64, 48}, weights);
    checkpoint.tensors["layer.bias"] = io::f32_tensor({64}, std::vector<float>(64, 0.25f));
    io::write_safetensors(file("ckpt.safetensors"), checkpoint);
    const Codebook codebook = design(DesignSpec{}).codebook;
    const io::TensorFile quantized =
        quantize_checkpoint(checkpoint, "ckpt", codebook, Normalisation::PerTensor, NonFinite::Reject, cpu_backend());
    io::write_safetensors(file("ckpt-2bit.safetensors"), quantized);
    io::TensorFile damaged = quantized;
    damaged.tensors["layer.weight.codebook"] = io::f32_tensor({1, 4}, {-1.f, std::nanf(""), 0.5f, 1.f});
    io::write_safetensors(file("nan-codebook.safetensors"), damaged);
    damaged = quantized;
    damaged.tensors["layer.weight.codes"].shape = {32, 24};  // same 768 bytes, another shape
    io::write_safetensors(file("reshaped-codes.safetensors"), damaged);
    damaged = quantized;
    nlohmann::json description = nlohmann::json::parse(damaged.metadata["nuq.quantized"]);
    description["tensors"].erase("layer.bias");
    damaged.metadata["nuq.quantized"] = description.dump();
    io::write_safetensors(file("undescribed.safetensors"), damaged);
  }

  std::string file(const std::string& name) const { return dir_.file(name); }

  // "{d}" in a case stands for the folder.
  std::string expand(std::string arguments) const {
    for (std::size_t at; (at = arguments.find("{d}")) != std::string::npos;) arguments.replace(at, 3, dir_.path().string());
    return arguments;
  }

  test::TempDir dir_;
};

struct Case {
  const char* arguments;
  int status;
  const char* message;  // must appear in the output
};

const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      // Parsing: every mistake is a user error (status 1), never CLI11's 100-127.
      {"", kUserError, "subcommand"},
      {"design --bogus", kUserError, "--bogus"},
      {"design --bits 0", kUserError, "--bits"},
      {"design --bits 17", kUserError, "--bits"},
      {"design --method sptq3", kUserError, "sptq3"},
      {"quantize {d}/fp32.safetensors -o {d}/q.safetensors -b 40", kUserError, "--bits"},
      {"quantize -o {d}/q.safetensors", kUserError, "input is required"},
      {"train --seed -1 -o {d}/m.safetensors", kUserError, "--seed"},
      {"reproduce --seed -5 --out {d}/run", kUserError, "--seed"},
      {"eval {d}/fp32.safetensors --dataset cifar", kUserError, "cifar"},
      // Outputs: never an input, never anything but a regular file or a new path.
      {"quantize {d}/fp32.safetensors -o {d}/fp32.safetensors", kUserError, "is the input itself"},
      {"quantize {d}/fp32.safetensors -o {d}/hardlink.safetensors", kUserError, "is the input file"},
      {"quantize {d}/fp32.safetensors -o {d}/symlink.safetensors", kUserError, "symbolic link"},
      {"quantize {d}/fp32.safetensors -o {d}/fifo", kUserError, "FIFO"},
      {"quantize {d}/fp32.safetensors -o /dev/null", kUserError, "character device"},
      {"quantize {d}/fp32.safetensors -o {d}/folder", kUserError, "directory"},
      {"quantize {d}/fp32.safetensors -o ''", kUserError, "-o: an empty value"},
      {"quantize {d}/fp32.safetensors -o {d}/missing/q.safetensors", kUserError, "No such file or directory"},
      {"dequantize {d}/ckpt-2bit.safetensors -o {d}/ckpt-2bit.safetensors", kUserError, "is the input itself"},
      {"dequantize {d}/ckpt-2bit.safetensors -o /dev/null", kUserError, "character device"},
      {"train -o {d}/folder", kUserError, "directory"},
      {"eval {d}/fp32.safetensors --predictions {d}/fp32.safetensors", kUserError, "is the input itself"},
      {"eval {d}/fp32.safetensors --predictions {d}/hardlink.safetensors", kUserError, "is the input file"},
      {"reproduce --out {d}/notes.txt/run", kUserError, "cannot create the folder"},
      {"reproduce --out ''", kUserError, "--out: an empty value"},
      // Inputs: the reason, not a number from a failed size query or a hang on a FIFO.
      {"quantize {d}/folder -o {d}/q.safetensors", kUserError, "neither model.safetensors.index.json nor"},
      {"quantize {d}/ckpt.safetensors -o {d}/q.safetensors --skip '('", kUserError, "--skip '(': not a regular"},
      {"quantize {d}/fp32.safetensors -o {d}/q.safetensors --skip fc1", kUserError, "quantized whole (Algorithm 1"},
      {"quantize {d}/ckpt.safetensors -o {d}/q.safetensors --skip .", kUserError, "no tensor to quantize"},
      {"quantize {d}/ckpt-2bit.safetensors -o {d}/q.safetensors", kUserError, "already quantized"},
      {"quantize {d}/ckpt.safetensors -o {d}/q.safetensors --group-size 16 --normalise per-tensor", kUserError,
       "cannot be combined with --normalise per-tensor"},
      {"quantize {d}/ckpt.safetensors -o {d}/q.safetensors --group-size 40", kUserError, "do not split into groups"},
      {"quantize {d}/ckpt.safetensors -o {d}/q.safetensors -m uniform -b 12 --group-size 16", kUserError,
       "groups of 16 weights take codebooks of up to 256 levels (8-bit codes); this one's codes are stored at 16 bits "
       "(a width of 9 to 16 is stored as 16); quantize this design without groups"},
      {"quantize {d}/ckpt.safetensors -o {d}/q.safetensors -m lloyd-max --xmax 2", kUserError,
       "lloyd-max places every threshold and level itself (the Lloyd iteration); a given x_max (--xmax, --support)"},
      {"quantize {d}/ckpt.safetensors -o {d}/no-folder/q.safetensors", kUserError,
       "q.safetensors: cannot write there: the folder"},
      {"quantize {d}/fp32.safetensors -o {d}/q.safetensors --group-size 16", kUserError, "--group-size are for other"},
      {"quantize {d}/fifo -o {d}/q.safetensors", kUserError, "it is a FIFO"},
      {"quantize {d}/absent.safetensors -o {d}/q.safetensors", kUserError, "No such file or directory"},
      {"quantize {d}/notes.txt -o {d}/q.safetensors", kUserError, "notes.txt: header length"},
      {"eval {d}/folder", kUserError, "folder: a folder; `nuq eval` runs one of nuq's networks"},
      {"eval {d}/no-dataset.safetensors", kUserError, "does not record the data set"},
      // A broken model is named as such before any data is looked for (the folder holds none).
      {"eval {d}/nan-weight.safetensors --dataset mnist --data {d}/folder", kUserError, "nan-weight.safetensors: tensor 'fc1.weight'"},
      {"eval {d}/nan-codebook.safetensors --dataset mnist --data {d}/folder", kUserError, "nan-codebook.safetensors: "},
      {"quantize {d}/nan-weight.safetensors -o {d}/q.safetensors", kUserError, "tensor 'fc1.weight' element [1, 7] is nan; `nuq quantize --nonfinite saturate`"},
      {"quantize {d}/extra-tensor.safetensors -o {d}/q.safetensors", kUserError,
       "tensor 'fc4.weight' is not a parameter of nuq's mlp"},
      // dequantize refuses what it cannot restore, and says so.
      {"dequantize {d}/nan-codebook.safetensors -o {d}/out.safetensors", kUserError, "every level must be finite"},
      {"dequantize {d}/reshaped-codes.safetensors -o {d}/out.safetensors", kUserError, "got U8 [32x24]"},
      {"dequantize {d}/undescribed.safetensors -o {d}/out.safetensors", kUserError, "does not describe 'layer.bias'"},
      // Numbers that make no sense.
      {"design --xmax 1e300", kUserError, "standard deviations"},
      {"design --sigma 1e300", kUserError, "is outside [1e-100, 1e+100]"},
      {"design --sigma 0", kUserError, "sigma must be finite and positive"},
      {"design -m sptq --xmax 1e-320", kUserError, "standard deviations (sigma = 1); at least 1e-06 make sense"},
      {"design -m uniform -b 4 --xmax 1e-9 --sigma 2", kUserError, "at least 1e-06 make sense"},
      {"design -m mulaw --mu 1e-320", kUserError, "mu = 9.999888672e-321; at least 1e-06"},
      {"design --xmax nan", kUserError, "x_max must be finite and positive"},
      {"quantize {d}/fp32.safetensors -o {d}/q.safetensors --xmax 1e300", kUserError, "standard deviations"},
      {"quantize {d}/ckpt.safetensors -o {d}/q.safetensors --support case1", kUserError,
       "--support case1 is x_max at the weights' extremes, which only nuq's own models are quantized by"},
      {"quantize {d}/ckpt.safetensors -o {d}/q.safetensors --support max-abs", kUserError, "give --xmax, or a region"},
      {"quantize {d}/fp32.safetensors -o {d}/q.safetensors --xmax 2 --support 3delta", kUserError, "not both"},
      {"quantize {d}/fp32.safetensors -o {d}/q.safetensors --support ''", kUserError, "--support: an empty value"},
      {"mismatch --range=0:1 --step 0", kUserError, "--step"},
      {"mismatch --range=0:1 --step nan", kUserError, "--step"},
      {"mismatch --range=0:30 --step 1e-9", kUserError, "more than"},
      // Options that contradict each other: refused, never one of them silently dropped.
      {"mismatch --range=1:2:0.5 --step 0.25", kUserError, "gives its own step"},
      {"bitrate --sqnr-min 30 --range=-3:0:1 --step 2", kUserError, "gives its own step"},
      {"mismatch --csv --json", kUserError, "--csv excludes --json"},
      {"design --sweep 0.3:2:0.1 --trace", kUserError, "--trace excludes --sweep"},
      {"design --sweep 0.3:2:0.1 --xmax 1", kUserError, "--xmax excludes --sweep"},
      {"theory --check --tolerance nan", kUserError, "--tolerance"},
      {"theory --tolerance -1", kUserError, "--tolerance"},
      // At a tolerance no row meets, every SQNR_th row says so where it is printed
      {"theory --tolerance 0", kOk, "+0.0000  no\n"},
      {"bitrate --range=-30:0", kUserError, "give --sqnr-min"},
      {"bitrate --sqnr-min -inf --range=-30:0", kUserError, "--sqnr-min must be a finite number of dB, got -inf"},
      {"bitrate --sqnr-min nan", kUserError, "--sqnr-min must be a finite number of dB, got nan"},
      {"bitrate --sqnr-min 30 --range=-30:0 --model {d}/fp32.safetensors", kUserError, "--range or --model, not both"},
      {"eval {d}/fp32.safetensors --predictions ''", kUserError, "--predictions: an empty value"},
      {"bitrate --sqnr-min 500 --range=-30:0", kUserError, "lower the floor"},
      {"bitrate --sqnr-min 40 --range=0:60", kUserError, "overload"},
      {"bitrate --sqnr-min 60 --range=-40:0", kUserError, "granular noise"},
      // Short of bits, not of floor: 12 bits keep 30 dB at the design's own variance (it said "lower the floor")
      {"bitrate --sqnr-min 30 --range=0:0 --max-bits 4", kUserError, "(granular noise: each bit gains about 6 dB; "
                                                                     "raise --max-bits)"},
      {"bitrate --sqnr-min 30 --range=0:0 --max-bits 1", kUserError, "no rate up to 1 bit keeps"},
      // Options that do not apply are refused for the right reason.
      {"design -m sptq --alpha 0", kUserError, "alpha scales the ternary quantizer only"},
      {"design -m uniform -N -1", kUserError, "--levels: '-1' is not in 2 to 65536"},
      // A typo is named as one, not as a number out of range.
      {"design -b two", kUserError, "--bits: 'two' is not a whole number"},
      {"mismatch -b 2.5 --range=-10:0", kUserError, "--bits: '2.5' is not a whole number"},
      {"train --epochs 10x -o {d}/m.safetensors", kUserError, "--epochs: '10x' is not a whole number"},
      {"reproduce --seeds 101 --out {d}/run", kUserError, "--seeds: '101' is not in 1 to 100"},
      {"design -m lloyd-max --optimizer iterative", kUserError, "does not apply to it"},
      {"design -m lloyd-max --trace", kUserError, "lloyd-max records no x_max iterates"},
      {"bitrate --sqnr-min 30 --model {d}/ckpt-2bit.safetensors", kUserError, "already quantized; its weights are codes (`nuq dequantize`"},
      {"bitrate --sqnr-min 30 --range=-30:0 --per-tensor", kUserError, "take the weights of --model"},
      {"bitrate --sqnr-min 30 --range=-30:0 --skip lm_head", kUserError, "take the weights of --model"},
      {"bitrate --sqnr-min 30 --range=-30:0 --measure", kUserError, "take the weights of --model"},
      {"bitrate --sqnr-min 30 --model {d}/ckpt.safetensors --step 5", kUserError, "--step is the step of --range"},
      {"train --data '' -o {d}/m.safetensors", kUserError, "--data: an empty value"},
      {"eval {d}/fp32.safetensors --data ''", kUserError, "--data: an empty value"},
      {"reproduce --data '' --out {d}/run", kUserError, "--data: an empty value"},
      // Every option given an empty value, whatever its type (CLI11 read some as the default, some as 0)
      {"design -m sptq --xmax ''", kUserError, "--xmax: an empty value"},
      // A design scaled to a tiny sigma in digits, not six decimals of zeros
      {"design -m sptq --sigma 1e-7", kOk, "x_max         2.55133e-07 (iterative"},
      {"design --sweep=", kUserError, "--sweep: an empty value"},
      {"theory --tolerance ''", kUserError, "--tolerance: an empty value"},
      {"bitrate --sqnr-min 30 --model ''", kUserError, "--model: an empty value"},
      {"reproduce --no-figures --plots {d}/notes.txt --out {d}/run", kUserError, "--no-figures excludes --plots"},
      {"bitrate --sqnr-min 30 --range=-10:0 --min-bits 5 --max-bits 4", kUserError, "--min-bits 5 is above --max-bits 4"},
      // The checks the two curve commands share name the command that was run
      {"bitrate --sqnr-min 40 --range=-300:0", kUserError, "bitrate: |20 log10(sigma/sigma_ref)| above 200 dB"},
      {"mismatch --range=-300:0", kUserError, "mismatch: |20 log10(sigma/sigma_ref)| above 200 dB"},
      // Work counted in levels evaluated, not points: refused up front rather than computed for hours.
      {"design -m mulaw -b 16 --sweep 1:20:0.00002", kUserError, "950001 points times 65536 levels is 6.2e+10"},
      {"mismatch -b 16 --range=-200:200 --step 0.0041", kUserError, "97562 points times 65536 levels"},
      {"bitrate --sqnr-min 40 --range=-30:30 --step 0.0007", kUserError, "85716 points times 131070 levels"},
      {"bitrate --sqnr-min 30 --model {d}/ckpt.safetensors --skip ''", kUserError, "--skip: an empty value"},
      {"bitrate --sqnr-min 30 --model {d}/ckpt.safetensors --skip .", kUserError, "no tensor to quantize"},
      {"bitrate --sqnr-min 30 --model {d}/fp32.safetensors --skip .", kUserError, "quantized whole"},
      {"bitrate --sqnr-min 30 --model {d}/q.safetensors", kUserError, "No such file"},
      {"quantize {d}/ckpt.safetensors -o {d}/q.safetensors --skip ''", kUserError, "--skip: an empty value"},
      // A file whose end cannot be sought, read whole by eval, or whose stat says 0 bytes though it reads
      // some (the header readers): said so, not "cannot open: Invalid argument" or "too short"
      {"eval /proc/self/maps", kUserError, "/proc/self/maps: cannot tell its size"},
      {"inspect /proc/self/maps", kUserError, "/proc/self/maps: cannot tell its size"},
      {"quantize /proc/self/maps -o {d}/maps.safetensors", kUserError, "/proc/self/maps: cannot tell its size"},
      // '-' is standard output to most tools; nuq would have written a file named '-'
      {"quantize {d}/ckpt.safetensors -o -", kUserError, "--output: '-' is not read as standard output"},
      {"dequantize {d}/ckpt-2bit.safetensors -o -", kUserError, "--output: '-' is not read as standard output"},
      {"reproduce --out -", kUserError, "--out: '-' is not read as standard output"},
      {"design -m sptq --mu 5", kUserError, "mu belongs to the mulaw quantizer"},
      {"design -m sptq --mu 255", kUserError, "--mu belongs to the mulaw quantizer, not sptq"},  // its default, given
      {"design -m msptq -N 4", kUserError, "msptq has 4 levels of its own, got levels = 4"},  // its own count, given
      {"design -m sptq --epsilon 10", kUserError, "epsilon = 10 is above 1"},
      {"design -m sptq --epsilon 1", kOk, "(iterative, 1 iteration)"},
      {"quantize {d}/ckpt.safetensors -o {d}/q.safetensors -m uniform -b 4 --alpha 1", kUserError,
       "--alpha scales the ternary quantizer only, not uniform"},
      {"design -m ternary --alpha 0", kUserError, "alpha must be finite and positive"},
      {"design -m ternary --xmax 3 --alpha 1e300", kUserError, "alpha * x_max = 3e+300 standard deviations"},
      {"reproduce --paper itc2021 --dataset fashion --out {d}/run", kUserError, "apply to mathematics2022"},
      {"reproduce --paper itc2021 --seeds 3 --out {d}/run", kUserError, "apply to mathematics2022"},
      {"design -m lloyd-max --xmax 2", kUserError, "a given x_max does not apply to it"},
      {"design -m uniform -b 16 -N 3", kUserError, "--levels 3 are coded in 2 bits, not --bits 16"},
      {"design -m lloyd-max -N 8 --json", kOk, "\"levels_count\": 8"},
      {"design -m lloyd-max -b 3 -N 8 --json", kOk, "\"levels_count\": 8"},
      {"design -m uniform -N 5 --json", kOk, "\"bits\": 3"},
      {"design -m lloyd-max --init 0.5", kUserError, "--init belongs to the iterative rule; lloyd-max here uses the lloyd"},
      {"design -m uniform --xmax 3 --epsilon 1e-3", kUserError, "--epsilon belongs to the iterative rule"},
      {"design --epsilon 1e-300", kUserError, "no convergence to 1e-300: iterate "},
      {"train --seed 99999999999999999999 -o {d}/m.safetensors", kUserError, "is above 18446744073709551615"},
      {"reproduce --seed 18446744073709551615 --seeds 2 --out {d}/run", kUserError, "runs past the largest seed"},
      {"reproduce --plots {d}/no-such-plots.py --out {d}/run", kUserError, "--plots names no script"},
      {"reproduce --bench {d}/no-such-results --out {d}/run", kUserError, "--bench names no folder"},
      // inspect reads headers: the same checks as every reader, and options only where they apply.
      {"inspect {d}/fifo", kUserError, "it is a FIFO"},
      {"inspect {d}/notes.txt", kUserError, "not a safetensors file"},
      {"inspect {d}/folder", kUserError, "neither model.safetensors.index.json nor .safetensors files"},
      // A folder of outputs is made as a file would be: in a folder that is there, not a new tree.
      {"quantize {d}/shards -o {d}/typo/deep/out", kUserError, "out: cannot write there: the folder "},
      {"quantize {d}/shards -o {d}/notes.txt/out", kUserError, "cannot write there: "},
      {"quantize {d}/shards -o {d}/notes.txt", kUserError, "is not a folder"},
      {"inspect {d}/undescribed.safetensors", kUserError, "undescribed.safetensors"},
      {"inspect {d}/ckpt-2bit.safetensors --skip bias", kUserError, "already quantized"},
      {"inspect {d}/fp32.safetensors --quantize-vectors", kUserError, "quantized whole"},
      {"inspect {d}/ckpt.safetensors --skip '('", kUserError, "not a regular expression"},
      {"inspect {d}/ckpt.safetensors --json", kOk, "\"kept_because\": \"fewer than two dimensions"},
      {"inspect {d}/fp32.safetensors", kOk, "one of nuq's networks"},
      {"inspect {d}/ckpt-2bit.safetensors", kOk, "bits per weight"},
      // Questions with an answer exit 0.
      {"mismatch --range=0:0.00001 --step 0.000001 --csv", kOk, "mismatch_db"},
      {"--help", kOk, "Exit status"},
  };
  return all;
}

TEST_F(HostileInputs, EveryCaseExitsAsDocumentedAndChangesNoFile) {
  ASSERT_GE(cases().size(), 40u);
  for (const Case& c : cases()) {
    const std::string arguments = expand(c.arguments);
    const auto before = snapshot(dir_.path());
    const CommandResult r = run_nuq(arguments);
    EXPECT_EQ(r.status, c.status) << arguments << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << arguments << "\nexpected: " << c.message << "\n" << r.output;
    if (c.status != kOk) {
      EXPECT_NE(r.output.find("nuq: error: "), std::string::npos) << arguments << ": " << r.output;
    }
    EXPECT_EQ(snapshot(dir_.path()), before) << arguments << ": a file changed";
  }
  struct stat null_device {};
  ASSERT_EQ(::stat("/dev/null", &null_device), 0);
  EXPECT_TRUE(S_ISCHR(null_device.st_mode)) << "/dev/null is no longer a device";
}

TEST_F(HostileInputs, EvalTakesTheDatasetTheModelRecords) {
  // The data are not needed to see the choice: the message names the folder it looked in.
  const CommandResult r = run_nuq("eval " + file("fp32.safetensors") + " --data " + file("folder"));
  EXPECT_EQ(r.status, kUserError);
  EXPECT_NE(r.output.find("fashion"), std::string::npos) << r.output;
  const CommandResult other = run_nuq("eval " + file("fp32.safetensors") + " --dataset mnist --data " + file("folder"));
  EXPECT_NE(other.output.find("was trained on fashion; testing it on mnist"), std::string::npos) << other.output;
}

TEST_F(HostileInputs, QuantizedModelsKeepTheDataset) {
  const CommandResult r = run_nuq("quantize " + file("fp32.safetensors") + " -o " + file("q.safetensors"));
  ASSERT_EQ(r.status, kOk) << r.output;
  EXPECT_EQ(io::read_safetensors(file("q.safetensors")).metadata.at("nuq.dataset"), "fashion");
  EXPECT_EQ(load_quantized(file("q.safetensors")).dataset, "fashion");
}

TEST_F(HostileInputs, DequantizeCountsWhatItRestoredAndCopied) {
  const CommandResult r =
      run_nuq("dequantize " + file("ckpt-2bit.safetensors") + " -o " + file("back.safetensors") + " --json");
  ASSERT_EQ(r.status, kOk) << r.output;
  const nlohmann::json j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j.at("restored"), nlohmann::json({"layer.bias", "layer.weight"}));
  EXPECT_TRUE(j.at("copied").empty());
}

}  // namespace
}  // namespace nuq
