// Checkpoints streamed a piece at a time (checkpoint_stream.h): the same file as the in-memory
// reference quantize_checkpoint when a tensor fits one piece, the same codes when tensors are cut
// into row and column pieces, per-row and group maps found as the codes are, and broken inputs
// named. Shards and their index: test_sharded_checkpoint.cpp; which tensors are kept:
// test_kept_tensors.cpp; NaN and Inf: test_checkpoint_nonfinite.cpp.
#include <gtest/gtest.h>

#include <algorithm>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <regex>

#include <nlohmann/json.hpp>

#include "backend_cases.h"
#include "bf16_tensor.h"
#include "checkpoint_cases.h"
#include "nuq/checkpoint.h"
#include "nuq/checkpoint_stream.h"
#include "nuq/design.h"
#include "nuq/error.h"
#include "nuq/io/safetensors_stream.h"
#include "nuq/quantize_in_memory.h"
#include "nuq/sharded_checkpoint.h"
#include "temp_dir.h"

namespace nuq {
namespace {

namespace fs = std::filesystem;

using test::bytes_of;
using test::msptq2;
using test::shard;

TEST(CheckpointStream, OnePieceGivesTheInMemoryReferenceFileByteForByte) {
  test::TempDir dir;
  const io::TensorFile source = shard(1, "layers.0.");
  io::write_safetensors(dir.file("in.safetensors"), source);
  for (Normalisation n : {Normalisation::Global, Normalisation::PerTensor, Normalisation::PerChannel, Normalisation::None}) {
    StreamOptions options;
    options.normalisation = n;
    options.quantize_vectors = true;  // the reference quantizes every floating tensor
    const StreamReport report =
        quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("streamed.safetensors"), msptq2(), options, cpu_backend());
    io::write_safetensors(dir.file("reference.safetensors"),
                          quantize_checkpoint(source, "in", msptq2(), n, NonFinite::Reject, cpu_backend()));
    EXPECT_EQ(bytes_of(dir.file("streamed.safetensors")), bytes_of(dir.file("reference.safetensors"))) << to_string(n);
    EXPECT_EQ(report.tensors.size(), 3u);
    EXPECT_EQ(report.kept, std::vector<std::string>{"layers.0.step"});
    EXPECT_EQ(report.output_bytes, fs::file_size(dir.file("streamed.safetensors")));
  }
}

TEST(CheckpointStream, RowAndColumnPiecesGiveTheSameCodes) {
  test::TempDir dir;
  io::write_safetensors(dir.file("in.safetensors"), shard(2, ""));
  for (Normalisation n : {Normalisation::PerTensor, Normalisation::PerChannel}) {
    StreamOptions whole, pieces;
    whole.normalisation = pieces.normalisation = n;
    pieces.piece_bytes = 4 * 256;  // 256 weights: several rows of q_proj, column pieces of up_proj's rows
    const StreamReport a = quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("a.safetensors"), msptq2(), whole, cpu_backend());
    const StreamReport b = quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("b.safetensors"), msptq2(), pieces, cpu_backend());
    const QuantizedCheckpoint qa = read_quantized_checkpoint(io::read_safetensors(dir.file("a.safetensors")), "a");
    const QuantizedCheckpoint qb = read_quantized_checkpoint(io::read_safetensors(dir.file("b.safetensors")), "b");
    ASSERT_EQ(qa.quantized.size(), 2u);
    for (const auto& [name, t] : qa.quantized) {
      // Statistics joined piece by piece differ from whole ones in the last bits at most.
      const std::vector<float>& la = t.matrix.levels;
      const std::vector<float>& lb = qb.quantized.at(name).matrix.levels;
      ASSERT_EQ(la.size(), lb.size());
      for (std::size_t i = 0; i < la.size(); ++i) EXPECT_NEAR(la[i], lb[i], 1e-6 * std::abs(la[i]) + 1e-9) << name;
      EXPECT_EQ(t.matrix.codes.bytes, qb.quantized.at(name).matrix.codes.bytes) << name << " " << to_string(n);
    }
    EXPECT_NEAR(a.sqnr_ex_db, b.sqnr_ex_db, 1e-6);
    for (std::size_t i = 0; i < a.tensors.size(); ++i)
      EXPECT_NEAR(a.tensors[i].tensor.excess_kurtosis, b.tensors[i].tensor.excess_kurtosis, 1e-3 * std::abs(a.tensors[i].tensor.excess_kurtosis));
  }
}

// The per-tensor table's statistics are the tensor's own at any magnitude: the excess kurtosis
// against a double-precision reference (its FP32 fourth powers once left FP32's range: -3 reported
// at sigma 1e-30, -1.65 at 1e-12, inf at 1e12), SQNR, share inside and RMSE / sigma independent of
// the scale.
TEST(CheckpointStream, TheTableIsTheSameAtEveryMagnitudeOfTheWeights) {
  test::TempDir dir;
  io::TensorFile file;
  const std::vector<float> unit = test::draw(test::Law::Laplace, 64 * 96, 0.0, 1.0, 29);
  std::map<std::string, std::pair<double, std::vector<float>>> tensors;  // name: scale, weights
  for (double scale : {1e-40, 1e-36, 1e-30, 1e-12, 1e-6, 1.0, 1e6, 1e12, 1e30}) {
    std::vector<float> w(unit.size());
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = float((double(unit[i]) + 0.5) * scale);
    const std::string name = "scale" + std::to_string(tensors.size()) + ".weight";
    file.tensors[name] = io::f32_tensor({64, 96}, w);
    tensors[name] = {scale, w};
  }
  io::write_safetensors(dir.file("in.safetensors"), file);
  for (std::size_t piece_bytes : {std::size_t{0}, std::size_t{4 * 1000}}) {  // whole tensors, and pieces
    StreamOptions options;
    options.normalisation = Normalisation::PerTensor;
    if (piece_bytes) options.piece_bytes = piece_bytes;
    const StreamReport report =
        quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("out.safetensors"), msptq2(), options, cpu_backend());
    ASSERT_EQ(report.tensors.size(), tensors.size());
    const auto unit_scale = std::find_if(report.tensors.begin(), report.tensors.end(),
                                         [&](const StreamTensorReport& t) { return tensors.at(t.tensor.name).first == 1.0; });
    ASSERT_NE(unit_scale, report.tensors.end());
    for (const auto& t : report.tensors) {
      const auto& [scale, w] = tensors.at(t.tensor.name);
      const std::string what = t.tensor.name + " (scale " + std::to_string(scale) + "), pieces of " + std::to_string(piece_bytes);
      double mean = 0.0, m2 = 0.0, m4 = 0.0;
      for (float v : w) mean += double(v);
      mean /= double(w.size());
      for (float v : w) {
        const double d = double(v) - mean;
        m2 += d * d;
        m4 += d * d * d * d;
      }
      const double kurtosis = double(w.size()) * m4 / (m2 * m2) - 3.0;
      EXPECT_NEAR(t.tensor.excess_kurtosis, kurtosis, 1e-4 * std::abs(kurtosis)) << what;
      // Subnormal weights (1/sigma beyond FP32: the fourth moment in double) hold too few digits
      // for their codes to match the unit tensor's; their kurtosis is checked all the same.
      if (scale < 1e-38) continue;
      EXPECT_NEAR(t.tensor.sqnr_ex_db, unit_scale->tensor.sqnr_ex_db, 0.01) << what;
      EXPECT_NEAR(t.tensor.within, unit_scale->tensor.within, 0.05) << what;
      EXPECT_NEAR(t.tensor.rmse / scale, unit_scale->tensor.rmse, 1e-3 * unit_scale->tensor.rmse) << what;
    }
  }
}

TEST(CheckpointStream, PiecesSharedAmongThreadsGiveTheInMemoryCodes) {
  // 256 x 1024 BF16 weights in pieces of 128 rows: each piece is cut into one share of rows per
  // thread (read, widened, counted and quantized by that thread), the rows of a NaN included.
  test::TempDir dir;
  std::vector<float> w = test::draw(test::Law::Laplace, 256 * 1024, 0.01, 0.03, 9);
  w[70000] = std::numeric_limits<float>::quiet_NaN();
  io::TensorFile file;
  file.tensors["mlp.weight"] = test::bf16_tensor({256, 1024}, w);  // w truncated, as the file holds it
  io::write_safetensors(dir.file("in.safetensors"), file);
  for (Normalisation n : {Normalisation::PerTensor, Normalisation::PerChannel}) {
    StreamOptions options;
    options.normalisation = n;
    options.nonfinite = NonFinite::Skip;
    options.piece_bytes = 4 * 128 * 1024;
    const StreamReport report = quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("s.safetensors"), msptq2(),
                                                          options, cpu_backend());
    const QuantizedCheckpoint streamed =
        read_quantized_checkpoint(io::read_safetensors(dir.file("s.safetensors")), "s");
    const QuantizedCheckpoint reference =
        read_quantized_checkpoint(quantize_checkpoint(file, "in", msptq2(), n, NonFinite::Skip, cpu_backend()), "r");
    const QuantizedMatrix& a = streamed.quantized.at("mlp.weight").matrix;
    const QuantizedMatrix& b = reference.quantized.at("mlp.weight").matrix;
    EXPECT_EQ(a.codes.bytes, b.codes.bytes) << to_string(n);
    ASSERT_EQ(a.levels.size(), b.levels.size());
    for (std::size_t i = 0; i < a.levels.size(); ++i) EXPECT_NEAR(a.levels[i], b.levels[i], 1e-6 * std::abs(b.levels[i]));
    // SQNR_ex from the weights and their levels, in double, as an independent check of the totals.
    const std::vector<float> back = dequantize(a);
    double signal = 0.0, noise = 0.0;
    for (std::size_t i = 0; i < w.size(); ++i)
      if (std::isfinite(w[i])) signal += double(w[i]) * w[i], noise += (double(w[i]) - back[i]) * (double(w[i]) - back[i]);
    ASSERT_EQ(report.tensors.size(), 1u);
    EXPECT_NEAR(report.tensors[0].tensor.sqnr_ex_db, 10.0 * std::log10(signal / noise), 1e-6) << to_string(n);
    EXPECT_EQ(report.tensors[0].tensor.nonfinite, 1u);
  }
}

// The CPU backend as a device backend looks to the streamed quantizer: one call at a time, from
// one thread, which it records, so the pieces are read one ahead on a second thread.
class OneCallAtATime final : public Backend {
 public:
  std::string name() const override { return "one call at a time"; }
  WeightStats stats(const float* v, std::size_t n, const std::string& name, NonFinite nf) override {
    const Guard guard(*this);
    return cpu_backend().stats(v, n, name, nf);
  }
  QuantizeTotals quantize(const float* v, std::size_t r, std::size_t c, const QuantizeTable& t, std::uint8_t* out) override {
    const Guard guard(*this);
    return cpu_backend().quantize(v, r, c, t, out);
  }
  void dequantize(const std::uint8_t* p, std::size_t r, std::size_t c, const QuantizeTable& t, float* out) override {
    cpu_backend().dequantize(p, r, c, t, out);
  }
  void qgemm(const float* x, std::size_t m, const QuantizedMatrix& w, const float* b, float* y) override {
    cpu_backend().qgemm(x, m, w, b, y);
  }
  std::unique_ptr<PreparedWeights> prepare(const QuantizedMatrix& w) override { return cpu_backend().prepare(w); }
  void qgemm(const float* x, std::size_t m, const PreparedWeights& w, const float* b, float* y) override {
    cpu_backend().qgemm(x, m, w, b, y);
  }
  void gemm(const float* x, std::size_t m, const float* w, std::size_t r, std::size_t c, const float* b, float* y) override {
    cpu_backend().gemm(x, m, w, r, c, b, y);
  }
  std::atomic<int> calls{0}, overlapping{0};

 private:
  struct Guard {
    explicit Guard(OneCallAtATime& b) : backend(b) {
      if (backend.inside.fetch_add(1) != 0) ++backend.overlapping;
      ++backend.calls;
    }
    ~Guard() { --backend.inside; }
    OneCallAtATime& backend;
  };
  std::atomic<int> inside{0};
};

TEST(CheckpointStream, ADeviceBackendGetsPiecesReadAheadAndTheSameFile) {
  test::TempDir dir;
  io::TensorFile file = shard(3, "layers.0.");
  file.tensors["layers.0.down_proj.weight"] = io::f32_tensor({200, 512}, test::draw(test::Law::Laplace, 200 * 512, 0.0, 0.02, 4));
  io::write_safetensors(dir.file("in.safetensors"), file);
  // Per channel and in groups, the rows' maps are found by the device as the pieces are quantized.
  struct Config {
    Normalisation normalisation;
    std::size_t group_size;
  };
  for (const Config c : {Config{Normalisation::Global, 0}, Config{Normalisation::PerChannel, 0},
                         Config{Normalisation::PerChannel, 64}}) {
    StreamOptions options;
    options.normalisation = c.normalisation;
    options.group_size = c.group_size;
    if (c.group_size) options.skip = std::regex("q_proj|up_proj");  // rows of 40 and 300
    const std::size_t group_size = c.group_size;
    options.piece_bytes = 4 * 4096;  // 8 rows of down_proj a piece: 25 pieces, each one share on the CPU
    const std::string what = to_string(options.normalisation) + ", groups of " + std::to_string(group_size);
    OneCallAtATime device;
    quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("device.safetensors"), msptq2(), options, device);
    quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("cpu.safetensors"), msptq2(), options, cpu_backend());
    EXPECT_EQ(bytes_of(dir.file("device.safetensors")), bytes_of(dir.file("cpu.safetensors"))) << what;
    EXPECT_GT(device.calls.load(), 50) << what;
    EXPECT_EQ(device.overlapping.load(), 0) << what;
  }
  // A truncated file is an error with this backend too.
  std::filesystem::resize_file(dir.file("in.safetensors"), std::filesystem::file_size(dir.file("in.safetensors")) - 1);
  OneCallAtATime device;
  EXPECT_THROW(quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("x.safetensors"), msptq2(), StreamOptions{}, device),
               Error);
}

// Weights without spread: met as they are (no normalisation) there is no signal and some error,
// so both SQNRs are -inf, as for nuq's own models; per-tensor, per-channel and grouped maps store
// a constant tensor exactly (SQNR_ex +inf) and the design's SQNR_th does not apply (NaN).
TEST(CheckpointStream, TensorsWithoutSpreadHaveTheSqnrsTheirNormalisationGives) {
  test::TempDir dir;
  io::TensorFile file;
  file.tensors["zero.weight"] = io::f32_tensor({8, 64}, std::vector<float>(8 * 64, 0.0f));
  file.tensors["constant.weight"] = io::f32_tensor({8, 64}, std::vector<float>(8 * 64, 0.25f));
  io::write_safetensors(dir.file("in.safetensors"), file);
  const double inf = std::numeric_limits<double>::infinity();
  StreamOptions none, per_tensor;
  none.normalisation = Normalisation::None;
  per_tensor.normalisation = Normalisation::PerTensor;
  const StreamReport n = quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("n.safetensors"), msptq2(), none, cpu_backend());
  ASSERT_EQ(n.tensors.size(), 2u);
  for (const StreamTensorReport& r : n.tensors) {
    if (r.tensor.name != "zero.weight") continue;
    EXPECT_EQ(r.tensor.sqnr_ex_db, -inf);
    EXPECT_EQ(r.tensor.sqnr_th_db, -inf);
  }
  StreamOptions per_channel = per_tensor, grouped = per_tensor;
  per_channel.normalisation = grouped.normalisation = Normalisation::PerChannel;
  grouped.group_size = 32;
  for (const StreamOptions& o : {per_tensor, per_channel, grouped}) {
    const StreamReport r = quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("o.safetensors"), msptq2(), o, cpu_backend());
    fs::remove(dir.file("o.safetensors"));
    for (const StreamTensorReport& t : r.tensors) {
      EXPECT_EQ(t.tensor.sqnr_ex_db, inf) << t.tensor.name << " " << to_string(o.normalisation) << " " << o.group_size;
      EXPECT_TRUE(std::isnan(t.tensor.sqnr_th_db)) << t.tensor.name << " " << to_string(o.normalisation) << " " << t.tensor.sqnr_th_db;
      EXPECT_EQ(t.tensor.max_error, 0.0) << t.tensor.name;
    }
  }
}

// Groups of 128 along each row, 2-bit MSPTQ: about 2.25 bits per weight all in, the norm kept bit
// for bit, every weight restored as its group's mean + scale * level, and rows whose scales differ
// by 100x served far better than by one scale per tensor.
TEST(CheckpointStream, GroupsOf128CostUnder2Point3BitsAndFollowEachRunsScale) {
  test::TempDir dir;
  io::TensorFile file;
  std::vector<float> w = test::draw(test::Law::Laplace, 32 * 512, 0.0, 1.0, 5);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] *= (i % 512) < 256 ? 0.001f : 0.1f;  // two scales in each row
  file.tensors["mlp.weight"] = io::f32_tensor({32, 512}, w);
  file.tensors["norm.weight"] = io::f32_tensor({512}, test::draw(test::Law::Gauss, 512, 1.0, 0.01, 6));
  io::write_safetensors(dir.file("in.safetensors"), file);
  StreamOptions grouped, per_tensor;
  grouped.normalisation = Normalisation::PerChannel;
  grouped.group_size = 128;
  per_tensor.normalisation = Normalisation::PerTensor;
  const StreamReport g = quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("g.safetensors"), msptq2(), grouped, cpu_backend());
  const StreamReport t = quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("t.safetensors"), msptq2(), per_tensor, cpu_backend());
  ASSERT_EQ(g.tensors.size(), 1u);
  const double bits_per_weight = 8.0 * double(g.tensors[0].tensor.bytes_after) / double(w.size());
  EXPECT_LE(bits_per_weight, 2.3);
  EXPECT_NEAR(bits_per_weight, 2.0 + 32.0 / 128.0, 0.01);
  const io::TensorFile out = io::read_safetensors(dir.file("g.safetensors"));
  // The small half of each row: its own scale (grouped) against the large half's step (per tensor).
  auto small_half_sqnr_db = [&](const std::string& path) {
    const std::vector<float> back = io::to_floats(dequantize_checkpoint(io::read_safetensors(path), path).tensors.at("mlp.weight"), "w");
    double signal = 0.0, noise = 0.0;
    for (std::size_t i = 0; i < w.size(); ++i)
      if (i % 512 < 256) signal += double(w[i]) * w[i], noise += (double(w[i]) - back[i]) * (double(w[i]) - back[i]);
    return 10.0 * std::log10(signal / noise);
  };
  EXPECT_GT(small_half_sqnr_db(dir.file("g.safetensors")), 5.0);
  EXPECT_LT(small_half_sqnr_db(dir.file("t.safetensors")), 0.0);
  EXPECT_GT(t.sqnr_ex_db, 0.0);
  EXPECT_EQ(out.tensors.at("norm.weight").data, file.tensors.at("norm.weight").data);
  const QuantizedCheckpoint q = read_quantized_checkpoint(out, "g");
  const QuantizedTensor& tensor = q.quantized.at("mlp.weight");
  EXPECT_EQ(tensor.group_size, 128u);
  const std::vector<float> restored = dequantize(tensor);
  const std::vector<float> scales = io::to_floats(out.tensors.at("mlp.weight.scales"), "scales");
  const std::vector<float> levels = io::to_floats(out.tensors.at("mlp.weight.codebook"), "levels");
  for (std::size_t i = 0; i < restored.size(); i += 97) {  // each weight: mean + its group's scale * a level
    bool on_a_level = false;
    for (float level : levels) on_a_level |= restored[i] == group_level(tensor.mean, scales[i / 128], level);
    EXPECT_TRUE(on_a_level) << i;
  }
  StreamOptions ragged = grouped;
  ragged.group_size = 96;  // 512 is no multiple of 96
  EXPECT_THROW(quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("r.safetensors"), msptq2(), ragged, cpu_backend()),
               Error);
}

// Per channel and in groups, the maps of rows a piece holds whole are found as their codes are, in
// pass 2, and their scales or levels written into the room the file left for them before the codes;
// rows longer than a piece have theirs joined in pass 1. Either way every stored byte is the one the
// in-memory quantizer (the Python binding's) finds: pieces of two shares each, so the threads work
// on a window's shares at once, and tensors of several windows, a tensor of each kind in one file, and a kept F32 tensor whose name
// falls between the rooms.
// Tensors whose rows do not split into groups are named all at once (convolutions of 36 taps,
// Mamba's A_log of 16), with a --skip that keeps them, which then runs; nothing is written before.
TEST(CheckpointStream, TensorsThatDoNotSplitIntoGroupsAreNamedTogether) {
  test::TempDir dir;
  io::TensorFile file = shard(3, "");
  file.tensors["conv_in.weight"] = io::f32_tensor({8, 4, 3, 3}, test::draw(test::Law::Laplace, 8 * 36, 0.0, 0.02, 4));
  file.tensors["mixer.A_log"] = io::f32_tensor({8, 16}, test::draw(test::Law::Laplace, 8 * 16, 0.0, 0.02, 5));
  file.tensors["mixer(1).x"] = io::f32_tensor({8, 12}, test::draw(test::Law::Laplace, 8 * 12, 0.0, 0.02, 6));
  std::vector<float> mask(2 * 7 * 7);  // a mask is kept whatever its rows: not named
  for (std::size_t i = 0; i < mask.size(); ++i) mask[i] = i % 7 <= i / 7 % 7 ? 0.0f : -100.0f;
  file.tensors["layers.0.attn_mask"] = io::f32_tensor({2, 7, 7}, mask);
  io::write_safetensors(dir.file("in.safetensors"), file);
  StreamOptions options;
  options.normalisation = Normalisation::PerChannel;
  options.group_size = 24;  // q_proj's 40 columns do not split either; up_proj's 300 neither
  std::string message;
  try {
    quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("q.safetensors"), msptq2(), options, cpu_backend());
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_EQ(message, dir.file("in.safetensors") + ": the rows of 5 tensor(s) do not split into groups of 24: "
                     "'conv_in.weight', 'mixer(1).x', 'mixer.A_log', 'q_proj.weight', 'up_proj.weight'; keep them as "
                     "they are with --skip '^(conv_in\\.weight|mixer\\(1\\)\\.x|mixer\\.A_log|q_proj\\.weight|"
                     "up_proj\\.weight)$', or choose a group size that divides their rows");
  EXPECT_FALSE(fs::exists(dir.file("q.safetensors")));
  const std::size_t quote = message.find("--skip '") + 8;
  options.skip = skip_pattern(message.substr(quote, message.find('\'', quote) - quote));
  file.tensors["fits.weight"] = io::f32_tensor({4, 48}, test::draw(test::Law::Laplace, 4 * 48, 0.0, 0.02, 7));
  io::write_safetensors(dir.file("in.safetensors"), file);
  const StreamReport report =
      quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("q.safetensors"), msptq2(), options, cpu_backend());
  ASSERT_EQ(report.tensors.size(), 1u);
  EXPECT_EQ(report.tensors[0].tensor.name, "fits.weight");
  EXPECT_NE(std::find(report.kept.begin(), report.kept.end(), "layers.0.attn_mask"), report.kept.end());
  // A name a shell's single quotes cannot hold: no pattern to paste; a --skip given is to be joined.
  file.tensors["it's.weight"] = file.tensors.at("mixer.A_log");
  io::write_safetensors(dir.file("in.safetensors"), file);
  try {
    quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("q.safetensors"), msptq2(), options, cpu_backend());
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'it\'s.weight'; keep them as they are with --skip (joined with '|' to the --skip "
                                         "given), or choose"), std::string::npos) << e.what();
  }
}

TEST(CheckpointStream, MapsFoundAsTheCodesAreAreTheInMemoryQuantizers) {
  test::TempDir dir;
  std::vector<float> a = test::draw(test::Law::Laplace, 2304 * 256, 0.01, 1.0, 31);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] *= 0.05f + float(i / 256 % 7) + float(i % 256 / 128) * 3.0f;
  std::vector<float> c = test::draw(test::Law::Laplace, 2 * 131072, -0.02, 0.3, 32);
  io::TensorFile file;
  file.tensors["a.weight"] = io::f32_tensor({2304, 256}, a);
  // Rows of 48: whole in pieces of any size (a piece of columns holds 64 at least).
  file.tensors["b.weight"] = io::f32_tensor({40, 48}, test::draw(test::Law::Laplace, 40 * 48, 0.5, 2.0, 33));
  file.tensors["a.weight.z"] = io::f32_tensor({4}, {1.0f, 2.0f, 3.0f, 4.0f});  // kept, between the rooms
  file.tensors["c.weight"] = test::bf16_tensor({2, 131072}, c);
  io::write_safetensors(dir.file("in.safetensors"), file);
  struct Case {
    std::size_t group_size, piece_bytes;
  };
  // Per channel: a's rows whole (in 9 pieces, two windows), c's cut into columns; in pieces of 16
  // weights, a's cut too and b's whole. Groups of 128: every group whole, in large pieces and in
  // small ones (a share each). Groups of 256 in pieces of 128 weights: every group cut.
  for (const Case k : {Case{0, 4 * 65536}, Case{0, 4 * 16}, Case{128, 4 * 65536}, Case{128, 4 * 1024},
                       Case{256, 4 * 128}}) {
    const std::string what = "groups of " + std::to_string(k.group_size) + ", pieces of " + std::to_string(k.piece_bytes);
    StreamOptions options;
    options.normalisation = Normalisation::PerChannel;
    options.group_size = k.group_size;
    options.piece_bytes = k.piece_bytes;
    options.skip = std::regex(k.group_size ? "\\.z$|^b\\." : "\\.z$");  // b: rows of 48, no groups
    quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("s.safetensors"), msptq2(), options, cpu_backend());
    const io::TensorFile out = io::read_safetensors(dir.file("s.safetensors"));
    EXPECT_EQ(out.tensors.at("a.weight.z").data, file.tensors.at("a.weight.z").data) << what;
    const QuantizedCheckpoint streamed = read_quantized_checkpoint(out, "s");
    InMemoryOptions in_memory;
    in_memory.normalisation = Normalisation::PerChannel;
    in_memory.group_size = k.group_size;
    in_memory.piece_bytes = k.piece_bytes;
    for (const auto& [name, source] : file.tensors) {
      if (name == "a.weight.z" || (k.group_size && name == "b.weight")) continue;
      const TensorInMemory t{source.data.data(), source.dtype, source.shape, name};
      const WeightStats own = in_memory_stats(t, msptq2(), in_memory, cpu_backend());
      const QuantizedTensor reference = quantize_in_memory(t, msptq2(), own, own, in_memory, cpu_backend());
      const QuantizedTensor& q = streamed.quantized.at(name);
      EXPECT_EQ(q.matrix.codes.bytes, reference.matrix.codes.bytes) << name << ", " << what;
      EXPECT_EQ(q.matrix.levels, reference.matrix.levels) << name << ", " << what;
      EXPECT_EQ(q.scales, reference.scales) << name << ", " << what;
      EXPECT_EQ(q.scales.size(), k.group_size ? source.shape[0] * source.shape[1] / std::int64_t(k.group_size) : 0) << what;
      EXPECT_EQ(q.matrix.levels.size(), k.group_size ? 0 : std::size_t(source.shape[0]) * 4) << what;
    }
  }
}

// Dequantized from file to file a band of rows at a time: the bytes of the in-memory dequantizer's
// result, for every kind of table and every band; a file whose tensor is both stored and described
// is refused, and a damaged level is named with the rows it was read in.
TEST(CheckpointStream, DequantizedATensorAtATimeAsInMemory) {
  test::TempDir dir;
  io::write_safetensors(dir.file("in.safetensors"), shard(4, "layers.0."));
  struct Case {
    Normalisation normalisation;
    std::size_t group_size;
    bool uniform16;
  };
  for (const Case c : {Case{Normalisation::Global, 0, false}, Case{Normalisation::PerChannel, 0, false},
                       Case{Normalisation::PerTensor, 0, true}, Case{Normalisation::PerChannel, 40, false}}) {
    StreamOptions options;
    options.normalisation = c.normalisation;
    options.group_size = c.group_size;
    if (c.group_size) options.skip = std::regex("up_proj");  // rows of 300: no groups of 40
    DesignSpec spec;
    spec.method = c.uniform16 ? Method::Uniform : Method::Msptq;
    if (c.uniform16) spec.bits = 12;
    quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("q.safetensors"), design(spec).codebook, options,
                              cpu_backend());
    DequantizeReport in_memory;
    const io::TensorFile expected = dequantize_checkpoint(io::read_safetensors(dir.file("q.safetensors")), "q", &in_memory);
    const std::vector<std::uint8_t> expected_bytes = io::serialize_safetensors(expected);
    // Whole tensors, a row a band, and bands that do not divide the rows (7 rows of 256 floats).
    for (const std::size_t band_bytes : {kDequantizeBandBytes, std::size_t{1}, std::size_t{7 * 1024 + 1}}) {
      const DequantizeReport streamed =
          dequantize_checkpoint_file(dir.file("q.safetensors"), dir.file("d.safetensors"), {io::DType::F32, band_bytes});
      EXPECT_EQ(bytes_of(dir.file("d.safetensors")),
                std::string(reinterpret_cast<const char*>(expected_bytes.data()), expected_bytes.size()))
          << to_string(c.normalisation) << " " << c.group_size << ", bands of " << band_bytes << " bytes";
      EXPECT_EQ(streamed.restored, in_memory.restored);
      EXPECT_EQ(streamed.copied, in_memory.copied);
    }
  }
  io::TensorFile damaged = io::read_safetensors(dir.file("q.safetensors"));
  damaged.tensors["layers.0.q_proj.weight"] = io::f32_tensor({1}, {0.0f});  // described, and stored as it is
  io::write_safetensors(dir.file("damaged.safetensors"), damaged);
  try {
    dequantize_checkpoint_file(dir.file("damaged.safetensors"), dir.file("x.safetensors"));
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("also describes it as quantized"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir.file("x.safetensors")));
  // Per channel, row 50's table holds a NaN: refused whole or in bands, the error counting as the file does.
  StreamOptions per_channel;
  per_channel.normalisation = Normalisation::PerChannel;
  quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("q.safetensors"), msptq2(), per_channel, cpu_backend());
  io::TensorFile nan_level = io::read_safetensors(dir.file("q.safetensors"));
  io::Tensor& table = nan_level.tensors.at("layers.0.q_proj.weight.codebook");
  ASSERT_EQ(table.shape, (std::vector<std::int64_t>{96, 4}));
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(table.data.data() + (50 * 4 + 2) * sizeof(float), &nan, sizeof nan);
  io::write_safetensors(dir.file("nan.safetensors"), nan_level);
  for (const std::size_t band_bytes : {kDequantizeBandBytes, std::size_t{1}}) {
    try {
      dequantize_checkpoint_file(dir.file("nan.safetensors"), dir.file("x.safetensors"), {io::DType::F32, band_bytes});
      FAIL() << "accepted, bands of " << band_bytes;
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("q_proj.weight'.codebook: level "), std::string::npos) << what;
      EXPECT_NE(what.find("every level must be finite"), std::string::npos) << what;
      EXPECT_NE(what.find("level 202 is nan"), std::string::npos) << what;  // row 50's level 2, as the file has it
      EXPECT_EQ(what.find("(in rows"), std::string::npos) << what;
    }
    EXPECT_FALSE(fs::exists(dir.file("x.safetensors")));
  }
}

// A quantized tensor of no weights but 2^60 rows ([2^60, 0], as a file of 376 bytes may hold) is
// restored at once: its empty rows, taken a band at a time, were 2^34 bands, each parsing the file's
// description again (a hang).
TEST(CheckpointStream, ATensorOfNoWeightsButManyRowsIsRestoredAtOnce) {
  test::TempDir dir;
  const std::int64_t rows = std::int64_t{1} << 60;
  const nlohmann::json description = {
      {"version", 1},
      {"tensors", {{"w", {{"shape", {rows, 0}}, {"dtype", "F32"}, {"rows", rows}, {"cols", 0}, {"bits", 2}}}}}};
  std::string header = nlohmann::json{
      {"__metadata__", {{"nuq.quantized", description.dump()}}},
      {"w.codebook", {{"dtype", "F32"}, {"shape", {1, 4}}, {"data_offsets", {0, 16}}}},
      {"w.codes", {{"dtype", "U8"}, {"shape", {rows, 0}}, {"data_offsets", {16, 16}}}}}.dump();
  header.resize((header.size() + 7) / 8 * 8, ' ');
  {
    std::ofstream out(dir.file("empty.safetensors"), std::ios::binary);
    const std::uint64_t length = header.size();
    out.write(reinterpret_cast<const char*>(&length), sizeof length);
    out << header;
    const float levels[4] = {-1.5f, -0.5f, 0.5f, 1.5f};
    out.write(reinterpret_cast<const char*>(levels), sizeof levels);
  }
  const DequantizeReport report = dequantize_checkpoint_file(dir.file("empty.safetensors"), dir.file("d.safetensors"));
  EXPECT_EQ(report.restored, std::vector<std::string>{"w"});
  const io::SafetensorsReader restored(dir.file("d.safetensors"));
  EXPECT_EQ(restored.layout().tensors.at("w").shape, (std::vector<std::int64_t>{rows, 0}));
}

// Weights near +-FLT_MAX put the outer levels beyond float32: refused, naming the tensor, in every
// normalisation, rather than a file of infinite levels that no reader takes back.
TEST(CheckpointStream, LevelsBeyondFloat32AreRefused) {
  test::TempDir dir;
  io::TensorFile file;
  std::vector<float> huge(64);
  for (std::size_t i = 0; i < huge.size(); ++i) huge[i] = (i * 7 % 3 ? 3.4e38f : -3.4e38f);
  file.tensors["w"] = io::f32_tensor({8, 8}, huge);
  io::write_safetensors(dir.file("in.safetensors"), file);
  for (Normalisation n : {Normalisation::Global, Normalisation::PerTensor, Normalisation::PerChannel}) {
    StreamOptions options;
    options.normalisation = n;
    try {
      quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("q.safetensors"), msptq2(), options, cpu_backend());
      ADD_FAILURE() << to_string(n) << ": accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("tensor 'w': level 0 of the codebook is"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("beyond float32"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(dir.file("q.safetensors")));
  }
}

TEST(CheckpointStream, BrokenInputsAreNamed) {
  test::TempDir dir;
  auto message = [&](const std::string& input, const std::string& output) {
    try {
      quantize_checkpoint_files(input, output, msptq2(), StreamOptions{}, cpu_backend());
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  // A folder without an index holds every shard its names number, from 1 or from 0.
  fs::create_directories(dir.file("numbered"));
  for (const char* name : {"m-00000-of-00002.safetensors", "m-00001-of-00002.safetensors"})
    io::write_safetensors(dir.file(std::string("numbered/") + name), shard(7, name));
  EXPECT_EQ(checkpoint_shards(dir.file("numbered")).size(), 2u);
  io::write_safetensors(dir.file("numbered/x-1-of-99999999999999999999.safetensors"), shard(8, "x"));
  EXPECT_NO_THROW(checkpoint_shards(dir.file("numbered")));  // past 9 digits: not a numbered name
  io::write_safetensors(dir.file("numbered/y-1-of-999999999.safetensors"), shard(8, "y"));
  EXPECT_NE(message(dir.file("numbered"), dir.file("o")).find("shard 000000002 of 999999999"), std::string::npos);
  std::ofstream(dir.file("escape.json")) << R"({"weight_map": {"w": "../secret.safetensors"}})";
  EXPECT_NE(message(dir.file("escape.json"), dir.file("o")).find("is not a file in the index's folder"), std::string::npos);
  // (read as its own shard, it was "a JSON file, not safetensors")
  std::ofstream(dir.file("itself.json")) << R"({"weight_map": {"w": "itself.json"}})";
  EXPECT_NE(message(dir.file("itself.json"), dir.file("o")).find("itself.json: weight_map['w'] names the index itself"),
            std::string::npos);
  std::ofstream(dir.file("nomap.json")) << R"({"metadata": {}})";
  EXPECT_NE(message(dir.file("nomap.json"), dir.file("o")).find("no weight_map"), std::string::npos);
  fs::create_directories(dir.file("empty"));
  EXPECT_NE(message(dir.file("empty"), dir.file("o")).find("neither"), std::string::npos);
  io::write_safetensors(dir.file("in.safetensors"), shard(3, ""));
  EXPECT_NE(message(dir.file("in.safetensors"), dir.file("in.safetensors")).find("is the input itself"), std::string::npos);
  StreamOptions vectors_only;
  vectors_only.skip = std::regex("proj");
  EXPECT_THROW(quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("o"), msptq2(), vectors_only, cpu_backend()),
               Error);  // nothing left to quantize
  quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("q.safetensors"), msptq2(), StreamOptions{}, cpu_backend());
  EXPECT_NE(message(dir.file("q.safetensors"), dir.file("o")).find("already quantized"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir.file("o")));
}

}  // namespace
}  // namespace nuq
