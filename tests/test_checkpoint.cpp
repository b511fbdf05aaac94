// Arbitrary safetensors checkpoints: every floating tensor (F32, F16, BF16) quantized with the
// codes the reference rule gives, other tensors copied, the file read back and dequantized; the
// CLI end to end; a broken quantized checkpoint named in the error.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "backend_cases.h"
#include "bf16_tensor.h"
#include "nuq/checkpoint.h"
#include "nuq/design.h"
#include "nuq/error.h"
#include "nuq/grouped.h"
#include "nuq/model.h"
#include "nuq/ptq.h"
#include "nuq/quantize_in_memory.h"
#include "nuq/quantized_file.h"
#include "nuq/packed.h"
#include "nuq/quantize_table.h"
#include "temp_dir.h"

namespace nuq {
namespace {

using test::bf16_tensor;

// F16 bytes of values exactly representable in F16.
io::Tensor f16_tensor(std::vector<std::int64_t> shape, const std::vector<std::uint16_t>& halves) {
  io::Tensor t;
  t.dtype = io::DType::F16;
  t.shape = std::move(shape);
  for (std::uint16_t h : halves) {  // little-endian (two push_backs: GCC 12 misreads an inserted list)
    t.data.push_back(std::uint8_t(h));
    t.data.push_back(std::uint8_t(h >> 8));
  }
  return t;
}

struct Fixture {
  io::TensorFile file;
  std::vector<float> attention, embedding;
  Fixture() {
    attention = test::draw(test::Law::Laplace, 64 * 48, 0.001, 0.03, 1);
    embedding = test::draw(test::Law::Gauss, 100 * 16, 0.0, 0.1, 2);
    file.tensors["layers.0.attention.weight"] = io::f32_tensor({64, 48}, attention);
    file.tensors["embed.weight"] = bf16_tensor({100, 16}, embedding);
    // F16: 1.0, -2.0, 0.5, 0 (0x3C00, 0xC000, 0x3800, 0x0000) and a subnormal 2^-24 (0x0001).
    file.tensors["norm.weight"] = f16_tensor({5}, {0x3C00, 0xC000, 0x3800, 0x0000, 0x0001});
    io::Tensor steps;
    steps.dtype = io::DType::I64;
    steps.shape = {1};
    steps.data = {7, 0, 0, 0, 0, 0, 0, 0};
    file.tensors["step"] = steps;
    file.metadata["format"] = "pt";
  }
};

Codebook sptq2() {
  DesignSpec spec;
  spec.method = Method::Sptq;
  spec.bits = 2;
  return design(spec).codebook;
}

TEST(Checkpoint, EveryFloatingTensorQuantizedWithTheReferenceCodes) {
  const Fixture f;
  const Codebook codebook = sptq2();
  CheckpointReport report;
  const io::TensorFile q = quantize_checkpoint(f.file, "ckpt", codebook, Normalisation::PerTensor, NonFinite::Reject,
                                               cpu_backend(), &report);
  ASSERT_EQ(report.tensors.size(), 3u);
  EXPECT_EQ(report.copied, std::vector<std::string>{"step"});
  EXPECT_EQ(q.tensors.at("step").data, f.file.tensors.at("step").data);
  EXPECT_EQ(q.metadata.at("format"), "pt");
  // The attention weight's codes are quantize_ref's with its own statistics.
  const WeightStats s = stats_ref(f.attention.data(), f.attention.size(), "a");
  const QuantizeTable table = make_quantize_table(codebook, 2, {Affine{s.mean, s.stddev()}});
  std::vector<std::uint8_t> expected(64 * packed_row_bytes(48, 2));
  quantize_ref(f.attention.data(), 64, 48, table, expected.data());
  const std::vector<std::uint8_t>& codes = q.tensors.at("layers.0.attention.weight.codes").data;
  std::size_t differ = 0;
  for (std::size_t i = 0; i < codes.size(); ++i) differ += codes[i] != expected[i];
  EXPECT_LE(differ, 1u);  // only a weight within rounding of a threshold may move with the mean's last bit
  EXPECT_GT(report.sqnr_ex_db, 6.0);  // two-bit SPTQ on these weights: SQNR_th of the unit Laplacian is 9.0 dB
  EXPECT_LT(report.sqnr_ex_db, 12.0);
}

TEST(Checkpoint, RoundTripsThroughTheFileAndBackToFp32) {
  const Fixture f;
  test::TempDir dir;
  const io::TensorFile q =
      quantize_checkpoint(f.file, "ckpt", sptq2(), Normalisation::Global, NonFinite::Reject, cpu_backend());
  io::write_safetensors(dir.file("q.safetensors"), q);
  const io::TensorFile back = dequantize_checkpoint(io::read_safetensors(dir.file("q.safetensors")), "q");
  ASSERT_EQ(back.tensors.size(), 4u);
  for (const char* name : {"layers.0.attention.weight", "embed.weight", "norm.weight"}) {
    const io::Tensor& t = back.tensors.at(name);
    EXPECT_EQ(t.dtype, io::DType::F32) << name;
    EXPECT_EQ(t.shape, f.file.tensors.at(name).shape) << name;
  }
  // Every restored value is one of the tensor's four levels, and the nearest-level error is small.
  const std::vector<float> restored = io::to_floats(back.tensors.at("embed.weight"), "embed");
  const std::vector<float> levels = io::to_floats(q.tensors.at("embed.weight.codebook"), "levels");
  double noise = 0.0, signal = 0.0;
  for (std::size_t i = 0; i < restored.size(); ++i) {
    EXPECT_NE(std::find(levels.begin(), levels.end(), restored[i]), levels.end());
    noise += (restored[i] - f.embedding[i]) * (restored[i] - f.embedding[i]);
    signal += f.embedding[i] * f.embedding[i];
  }
  EXPECT_GT(10 * std::log10(signal / noise), 6.0);
  EXPECT_EQ(back.tensors.at("step").data, f.file.tensors.at("step").data);
}

// A mu-law or Lloyd-Max design of more than 256 levels is recorded by its parameters, as a uniform
// one is (its 131,071 numbers were 2.5 MB of header at 16 bits), rebuilt bit for bit, in format
// version 3 (mu-law) or 4 (Lloyd-Max, whose levels come from an iteration from a fixed start).
TEST(Checkpoint, AWideMuLawOrLloydMaxCodebookIsRecordedByItsParameters) {
  const Fixture f;
  for (const auto& [method, version] : {std::pair{Method::MuLaw, 3}, std::pair{Method::LloydMax, 4}})
    for (const int bits : {9, 12, 16}) {
      DesignSpec spec;
      spec.method = method;
      spec.bits = bits;
      const Codebook codebook = design(spec).codebook;
      const io::TensorFile q =
          quantize_checkpoint(f.file, "ckpt", codebook, Normalisation::Global, NonFinite::Reject, cpu_backend());
      const nlohmann::json description = nlohmann::json::parse(q.metadata.at("nuq.quantized"));
      EXPECT_EQ(description.at("version"), version) << to_string(method) << bits;
      EXPECT_FALSE(description.at("codebook").contains("levels"));
      EXPECT_FALSE(description.at("codebook").contains("thresholds"));
      EXPECT_LT(q.metadata.at("nuq.quantized").size(), 2000u);
      const QuantizedCheckpoint read = read_quantized_checkpoint(q, "q");
      ASSERT_TRUE(read.codebook.has_value());
      EXPECT_EQ(read.codebook->levels(), codebook.levels()) << to_string(method) << bits;
      EXPECT_EQ(read.codebook->thresholds(), codebook.thresholds());
      EXPECT_EQ(to_json(*read.codebook), to_json(codebook));  // provenance too: rule, iterations, mu
      // A record of another width than the rebuilt design's is refused, not read as another width:
      // nuq leaves out the levels only where the widths agree. (A Lloyd-Max design is rebuilt at the
      // width recorded, so a wider one reads as that width, as nuq writes a wider one.)
      for (const int other : {bits - 1, bits + 1}) {
        io::TensorFile edited = q;
        nlohmann::json d = description;
        d["codebook"]["bits"] = other;
        edited.metadata["nuq.quantized"] = d.dump();
        const bool readable = method == Method::LloydMax && other > bits && other <= 16;
        try {
          const QuantizedCheckpoint wider = read_quantized_checkpoint(edited, "q");
          EXPECT_TRUE(readable) << to_string(method) << bits << ": bits " << other << " read";
          EXPECT_EQ(wider.codebook->bits(), other);
        } catch (const Error& e) {
          EXPECT_FALSE(readable) << e.what();
          EXPECT_NE(std::string(e.what()).find(other < bits || other > 16 ? "do not hold its" : "are not the width its"),
                    std::string::npos) << to_string(method) << bits << " as " << other << ": " << e.what();
        }
      }
      // A codebook wider than its levels need (one read from JSON) is stored with its levels listed.
      const Codebook wide(16, codebook.thresholds(), codebook.levels(), codebook.provenance());
      const io::TensorFile wide_file =
          quantize_checkpoint(f.file, "ckpt", wide, Normalisation::Global, NonFinite::Reject, cpu_backend());
      const nlohmann::json wide_description = nlohmann::json::parse(wide_file.metadata.at("nuq.quantized"));
      EXPECT_EQ(wide_description.at("codebook").contains("levels"), bits < 16 && method == Method::MuLaw)
          << to_string(method) << bits;
      const QuantizedCheckpoint wide_read = read_quantized_checkpoint(wide_file, "q");
      EXPECT_EQ(wide_read.codebook->bits(), 16);
      EXPECT_EQ(wide_read.codebook->levels(), codebook.levels());
      // A narrow one is listed, in version 1 as before.
      spec.bits = 8;
      const io::TensorFile narrow = quantize_checkpoint(f.file, "ckpt", design(spec).codebook, Normalisation::Global,
                                                        NonFinite::Reject, cpu_backend());
      const nlohmann::json listed = nlohmann::json::parse(narrow.metadata.at("nuq.quantized"));
      EXPECT_EQ(listed.at("version"), 1);
      EXPECT_EQ(listed.at("codebook").at("levels").size(), 256u);
    }
}

// describe_quantized writes its tensors' list as text, a tensor at a time (the tree took 1 KB a
// tensor at the peak of a large run): the text must be the dump of the tree it stands for, with
// every optional part (ambiguous kept names, group sizes, a codebook or none, one recorded by its
// parameters), names that need escapes, and no tensor at all.
TEST(Checkpoint, TheDescriptionIsTheDumpOfItsTree) {
  DesignSpec wide;
  wide.method = Method::MuLaw;
  wide.bits = 12;
  const std::vector<std::optional<Codebook>> codebooks = {std::nullopt, design(DesignSpec{}).codebook,
                                                          design(wide).codebook};
  std::map<std::string, TensorDescription> tensors;
  tensors["a\"quoted\\name\n"] = {{3, 8}, io::DType::BF16, 3, 8, 2, -0.25, 0.5, 8};
  tensors["layers.0.weight"] = {{4, 2, 2}, io::DType::F32, 4, 4, 2, 1e-300, 3.0e5, 0};
  tensors["\xc3\xa9t\xc3\xa9"] = {{0, 4}, io::DType::F16, 0, 4, 2, 0.0, 1.0, 0};
  for (const auto& codebook : codebooks)
    for (const bool none : {false, true})
      for (const std::set<std::size_t>& groups : {std::set<std::size_t>{}, {0}, {0, 64}})
        for (const std::vector<std::string>& kept :
             {std::vector<std::string>{}, {"norm.weight", "x.codes", "y.codebook", "z.scales"}}) {
          const auto& listed = none ? std::map<std::string, TensorDescription>{} : tensors;
          nlohmann::json list = nlohmann::json::object();
          for (const auto& [name, d] : listed) {
            list[name] = {{"shape", d.shape}, {"dtype", io::to_string(d.dtype)}, {"rows", d.rows}, {"cols", d.cols},
                          {"bits", d.bits},   {"mean", d.mean},                   {"stddev", d.stddev}};
            if (d.group_size) list[name]["group_size"] = d.group_size;
          }
          const std::string text =
              describe_quantized(codebook, Normalisation::PerTensor, 0.125, 2.5, listed, kept, groups);
          nlohmann::json expected = nlohmann::json::parse(text);  // the parts the tensors' list does not decide
          expected["tensors"] = list;
          EXPECT_EQ(text, expected.dump()) << (codebook ? "codebook" : "none") << none << groups.size() << kept.size();
          EXPECT_EQ(expected.contains("codebook"), codebook.has_value());
          EXPECT_EQ(expected.contains("group_sizes"), groups.count(64) > 0);
          EXPECT_EQ(expected.contains("kept"), !kept.empty());
          EXPECT_EQ(expected.at("stddev"), 2.5);
        }
}

TEST(Checkpoint, PerChannelTablesRoundTripWithEachRowsCodes) {
  const Fixture f;
  test::TempDir dir;
  const Codebook codebook = sptq2();
  const io::TensorFile q =
      quantize_checkpoint(f.file, "ckpt", codebook, Normalisation::PerChannel, NonFinite::Reject, cpu_backend());
  EXPECT_EQ(q.tensors.at("embed.weight.codebook").shape, (std::vector<std::int64_t>{100, 4}));
  EXPECT_EQ(q.tensors.at("norm.weight.codebook").shape, (std::vector<std::int64_t>{1, 4}));  // a vector: one row
  // Row r's codes are quantize_ref's with row r's own statistics.
  std::vector<Affine> rows;
  for (std::size_t r = 0; r < 64; ++r) {
    const WeightStats s = stats_ref(f.attention.data() + r * 48, 48, "row");
    rows.push_back({s.mean, s.stddev()});
  }
  std::vector<std::uint8_t> expected(64 * packed_row_bytes(48, 2));
  quantize_ref(f.attention.data(), 64, 48, make_quantize_table(codebook, 2, rows), expected.data());
  const std::vector<std::uint8_t>& codes = q.tensors.at("layers.0.attention.weight.codes").data;
  std::size_t differ = 0;
  for (std::size_t i = 0; i < codes.size(); ++i) differ += codes[i] != expected[i];
  EXPECT_LE(differ, 1u);  // as above: only a weight within rounding of a threshold may move
  io::write_safetensors(dir.file("q.safetensors"), q);
  const io::TensorFile back = dequantize_checkpoint(io::read_safetensors(dir.file("q.safetensors")), "q");
  // Every restored value of row r is one of row r's four levels.
  const std::vector<float> restored = io::to_floats(back.tensors.at("layers.0.attention.weight"), "attention");
  const std::vector<float> levels = io::to_floats(q.tensors.at("layers.0.attention.weight.codebook"), "levels");
  for (std::size_t i = 0; i < restored.size(); ++i) {
    const auto row = levels.begin() + std::ptrdiff_t(i / 48 * 4);
    ASSERT_NE(std::find(row, row + 4, restored[i]), row + 4) << i;
  }
}

TEST(Checkpoint, BrokenFilesAreNamed) {
  const Fixture f;
  io::TensorFile q = quantize_checkpoint(f.file, "ckpt", sptq2(), Normalisation::PerTensor, NonFinite::Reject,
                                         cpu_backend());
  io::TensorFile missing = q;
  missing.tensors.erase("embed.weight.codes");
  EXPECT_THROW(dequantize_checkpoint(missing, "bad.safetensors"), Error);
  try {
    dequantize_checkpoint(missing, "bad.safetensors");
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("bad.safetensors", 0), 0u) << e.what();
  }
  io::TensorFile truncated = q;
  truncated.tensors.at("embed.weight.codes").data.pop_back();
  EXPECT_THROW(dequantize_checkpoint(truncated, "bad"), Error);
  io::TensorFile no_meta = q;
  no_meta.metadata.erase("nuq.quantized");
  EXPECT_THROW(dequantize_checkpoint(no_meta, "bad"), Error);
  io::TensorFile integers_only;
  integers_only.tensors["step"] = f.file.tensors.at("step");
  EXPECT_THROW(quantize_checkpoint(integers_only, "ints", sptq2(), Normalisation::Global, NonFinite::Reject,
                                   cpu_backend()),
               Error);
  io::TensorFile nan = f.file;
  nan.tensors["layers.0.attention.weight"].data[0] = 0xFF;  // the first float becomes a NaN
  nan.tensors["layers.0.attention.weight"].data[1] = 0xFF;
  nan.tensors["layers.0.attention.weight"].data[2] = 0xFF;
  nan.tensors["layers.0.attention.weight"].data[3] = 0x7F;
  EXPECT_THROW(quantize_checkpoint(nan, "nan", sptq2(), Normalisation::Global, NonFinite::Reject, cpu_backend()),
               Error);
}

// One tensor of [rows, cols] quantized in groups of `group` (the Python binding's path).
QuantizedTensor grouped_tensor(const std::vector<float>& w, std::int64_t rows, std::int64_t cols, std::size_t group) {
  const TensorInMemory t{w.data(), io::DType::F32, {rows, cols}, "w"};
  InMemoryOptions o;
  o.normalisation = Normalisation::PerChannel;
  o.group_size = group;
  const WeightStats own = in_memory_stats(t, sptq2(), o, cpu_backend());
  return quantize_in_memory(t, sptq2(), own, own, o, cpu_backend());
}

// A grouped tensor keeps its scales and one normalised table, never a table per group (8 bits in
// groups of 8 would hold 128 bytes of levels a weight); it is restored and multiplied from them,
// and a file whose groups are damaged or misdescribed is refused, not misread.
TEST(Checkpoint, GroupedTensorsAreReadAsScalesAndOneTable) {
  const Fixture f;
  QuantizedCheckpoint c;
  c.codebook = sptq2();
  c.normalisation = Normalisation::PerChannel;
  c.quantized["attn"] = grouped_tensor(f.attention, 64, 48, 16);
  const io::TensorFile file = to_tensor_file(c, "g");
  const QuantizedCheckpoint back = read_quantized_checkpoint(file, "g");
  const QuantizedTensor& t = back.quantized.at("attn");
  EXPECT_TRUE(t.matrix.levels.empty());
  ASSERT_EQ(t.scales.size(), 64u * 3u);
  const std::vector<float> restored = dequantize(t);
  ASSERT_EQ(restored.size(), f.attention.size());
  for (std::size_t i = 0; i < restored.size(); ++i) {
    const std::size_t group = i / 16;
    const std::uint32_t code = t.matrix.codes.at(group, i % 16);
    ASSERT_EQ(restored[i], group_level(t.mean, t.scales[group], t.normalised_levels[code])) << i;
  }
  EXPECT_EQ(io::to_floats(dequantize_checkpoint(file, "g").tensors.at("attn"), "attn"), restored);
  const std::vector<float> x = test::draw(test::Law::Gauss, 3 * 48, 0.0, 1.0, 5);
  std::vector<float> y(3 * 64);
  qgemm_grouped(x.data(), 3, t, nullptr, y.data());
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t r = 0; r < 64; ++r) {
      double sum = 0.0;
      for (std::size_t k = 0; k < 48; ++k) sum += double(x[i * 48 + k]) * restored[r * 48 + k];
      EXPECT_NEAR(y[i * 64 + r], sum, 1e-4 * (1.0 + std::abs(sum)));
    }

  const auto refused = [](const io::TensorFile& damaged, const std::string& expected) {
    try {
      read_quantized_checkpoint(damaged, "bad.safetensors");
      ADD_FAILURE() << "accepted: " << expected;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
  };
  io::TensorFile huge = file;  // a scale whose levels overflow F32
  const float big = 3e38f;
  std::memcpy(huge.tensors.at("attn.scales").data.data(), &big, sizeof big);
  refused(huge, "bad.safetensors: tensor 'attn'.scales: group 0 has scale 3.000000005e+38");
  io::TensorFile undescribed = file;  // .scales beside a description without group_size
  nlohmann::json description = nlohmann::json::parse(undescribed.metadata.at("nuq.quantized"));
  description["tensors"]["attn"].erase("group_size");
  undescribed.metadata["nuq.quantized"] = description.dump();
  refused(undescribed, "has .scales, but its description gives no group_size");
  io::TensorFile with_grid = file;
  with_grid.tensors["attn.grid"] = io::f32_tensor({2}, {0.0f, 1.0f});
  refused(with_grid, "grouped, so it has no .grid");
}

// A tensor without rows still has the rest of its shape as its columns (docs/format.md): a [0, 16]
// tensor is described as 0 x 16, its codes U8 [0, 4], and read back as it was written.
TEST(Checkpoint, ATensorWithoutRowsKeepsItsColumns) {
  QuantizedCheckpoint c;
  c.codebook = sptq2();
  QuantizedTensor empty;
  empty.shape = {0, 4, 4};
  empty.matrix.codes.cols = 16;  // (fields one by one: GCC 12 warns of a braced temporary's vector)
  empty.matrix.levels = {-1.5f, -0.5f, 0.5f, 1.5f};
  c.quantized["empty"] = empty;
  const io::TensorFile file = to_tensor_file(c, "e");
  EXPECT_EQ(file.tensors.at("empty.codes").shape, (std::vector<std::int64_t>{0, 4}));
  const QuantizedCheckpoint back = read_quantized_checkpoint(file, "e");
  EXPECT_EQ(back.quantized.at("empty").shape, empty.shape);
  EXPECT_EQ(back.quantized.at("empty").matrix.codes.cols, 16u);
  EXPECT_TRUE(dequantize(back.quantized.at("empty")).empty());
  io::TensorFile as_before = file;  // as nuq described such a tensor before: 0 x 0, codes U8 [0, 0]
  nlohmann::json description = nlohmann::json::parse(as_before.metadata.at("nuq.quantized"));
  description["tensors"]["empty"]["cols"] = 0;
  as_before.metadata["nuq.quantized"] = description.dump();
  as_before.tensors.at("empty.codes").shape = {0, 0};
  EXPECT_EQ(read_quantized_checkpoint(as_before, "e").quantized.at("empty").shape, empty.shape);
  EXPECT_EQ(matrix_view({0, std::int64_t{1} << 40, std::int64_t{1} << 40}, 0), (std::pair<std::size_t, std::size_t>{0, 0}));
}

// nuq's networks run their dense layers from one table per matrix or row: a network file whose
// weight is grouped (nuq quantize refuses to write one) is refused by name, not run.
TEST(Checkpoint, GroupedWeightsInANetworkFileAreRefused) {
  const Model model = make_model(Architecture::Mlp, 1);
  QuantizedModel q = quantize_model(model, sptq2());
  const Parameter& fc1 = model.parameters[0];
  ASSERT_EQ(fc1.name, "fc1.weight");
  QuantizedCheckpoint c;
  c.codebook = q.codebook;
  c.normalisation = Normalisation::PerChannel;
  c.quantized = q.tensors;
  c.quantized["fc1.weight"] = grouped_tensor(fc1.values, fc1.shape[0], fc1.shape[1], 16);
  c.metadata["nuq.architecture"] = "mlp";
  try {
    quantized_from_file(to_tensor_file(c, "m"), "m.safetensors");
    ADD_FAILURE() << "a grouped network was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("m.safetensors: tensor 'fc1.weight' is quantized in groups"), std::string::npos)
        << e.what();
  }
}

TEST(Checkpoint, CliQuantizesAndDequantizesACheckpoint) {
  const Fixture f;
  test::TempDir dir;
  io::write_safetensors(dir.file("ckpt.safetensors"), f.file);
  const std::string nuq = NUQ_BINARY;
  const std::string out = dir.file("out.txt");
  ASSERT_EQ(std::system((nuq + " quantize " + dir.file("ckpt.safetensors") + " -o " + dir.file("q.safetensors") +
                         " --normalise per-tensor --device cpu > " + out + " 2>&1").c_str()),
            0);
  std::ifstream text(out);
  const std::string printed((std::istreambuf_iterator<char>(text)), {});
  // The 1-D norm and the integer step are kept as they were (the default for checkpoints).
  for (const char* name : {"layers.0.attention.weight", "embed.weight", "2 kept as they were"})
    EXPECT_NE(printed.find(name), std::string::npos) << printed;
  // The sizes as written, and which way they went.
  const auto in = std::filesystem::file_size(dir.file("ckpt.safetensors"));
  const auto q = std::filesystem::file_size(dir.file("q.safetensors"));
  char ratio[64];
  std::snprintf(ratio, sizeof ratio, "%.2fx %s, headers included", q <= in ? double(in) / double(q) : double(q) / double(in),
                q <= in ? "smaller" : "larger");
  EXPECT_NE(printed.find("files: " + std::to_string(in) + " -> " + std::to_string(q) + " bytes (" + ratio), std::string::npos)
      << printed;
  ASSERT_EQ(std::system((nuq + " dequantize " + dir.file("q.safetensors") + " -o " + dir.file("back.safetensors") +
                         " > /dev/null 2>&1").c_str()),
            0);
  EXPECT_EQ(io::read_safetensors(dir.file("back.safetensors")).tensors.size(), 4u);
  // x_max at the weights' extremes is for nuq's own models (a support in sigmas is taken, test_cli.cpp)
  EXPECT_NE(std::system((nuq + " quantize " + dir.file("ckpt.safetensors") + " -o " + dir.file("x.safetensors") +
                         " --support case1 > /dev/null 2>&1").c_str()),
            0);
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.safetensors")));
}

// The summary's SQNR_ex is the large tensors'; the text names the weakest tensor beside the
// median, as the JSON's tensors give them (here a tensor of a hundredth of the others' scale,
// which global normalisation quantizes almost to zero).
TEST(Checkpoint, CliNamesTheWeakestTensorBesideTheMedian) {
  test::TempDir dir;
  io::TensorFile file;
  file.tensors["a.weight"] = io::f32_tensor({64, 48}, test::draw(test::Law::Laplace, 64 * 48, 0.0, 0.03, 3));
  file.tensors["b.weight"] = io::f32_tensor({32, 48}, test::draw(test::Law::Laplace, 32 * 48, 0.0, 0.03, 4));
  file.tensors["small.weight"] = io::f32_tensor({16, 48}, test::draw(test::Law::Laplace, 16 * 48, 0.0, 3e-4, 5));
  file.tensors["c.weight"] = io::f32_tensor({16, 48}, test::draw(test::Law::Gauss, 16 * 48, 0.0, 0.03, 6));
  io::write_safetensors(dir.file("ckpt.safetensors"), file);
  const std::string nuq = std::string(NUQ_BINARY) + " quantize " + dir.file("ckpt.safetensors") + " --device cpu -o ";
  ASSERT_EQ(std::system((nuq + dir.file("j.safetensors") + " --json > " + dir.file("j.json")).c_str()), 0);
  ASSERT_EQ(std::system((nuq + dir.file("t.safetensors") + " > " + dir.file("t.txt")).c_str()), 0);
  std::ifstream json_file(dir.file("j.json")), text_file(dir.file("t.txt"));
  const nlohmann::json report = nlohmann::json::parse(json_file);
  const std::string printed((std::istreambuf_iterator<char>(text_file)), {});
  std::map<double, std::string> by_sqnr;
  for (const auto& t : report.at("tensors")) by_sqnr[t.at("sqnr_ex_db").get<double>()] = t.at("name");
  ASSERT_EQ(by_sqnr.size(), 4u);
  ASSERT_EQ(by_sqnr.begin()->second, "small.weight");
  EXPECT_LT(by_sqnr.begin()->first, report.at("sqnr_ex_db").get<double>() - 10.0);  // the summary hides it
  const double median = 0.5 * (std::next(by_sqnr.begin())->first + std::next(by_sqnr.begin(), 2)->first);
  char line[256];
  std::snprintf(line, sizeof line, "lowest SQNR_ex %.3f dB: small.weight (median of 4 tensors %.3f dB)\n",
                by_sqnr.begin()->first, median);
  EXPECT_NE(printed.find(line), std::string::npos) << line << printed;
}

}  // namespace
}  // namespace nuq
