// Hostile and degenerate inputs: non-finite weights, empty tensors, files truncated at every
// byte, corrupt quantized models, and `nuq quantize` killed mid-write.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <thread>

#include <nlohmann/json.hpp>

#include "nuq/design.h"
#include "nuq/error.h"
#include "nuq/json_numbers.h"
#include "nuq/io/safetensors.h"
#include "nuq/mismatch.h"
#include "nuq/ptq.h"
#include "nuq/quantized_file.h"
#include "temp_dir.h"

extern char** environ;

namespace nuq {
namespace {

using Bytes = std::vector<std::uint8_t>;

Codebook sptq() {
  DesignSpec spec;
  spec.method = Method::Sptq;
  return design(spec).codebook;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(NonFinite, IsAnErrorNamingTheTensorAndTheIndex) {
  Model model = make_model(Architecture::Mlp, 1);
  model.at("fc2.weight").values[1234] = NAN;
  const std::string message = error_of([&] { quantize_model(model, sptq()); });
  EXPECT_NE(message.find("fc2.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("fc2.weight: element [2, 210] is nan"), std::string::npos) << message;  // 1234 = 2 * 512 + 210
  EXPECT_NE(message.find("--nonfinite saturate"), std::string::npos) << message;

  test::TempDir dir;
  save_model(dir.file("m.safetensors"), model);
  const std::string load_message = error_of([&] { load_model(dir.file("m.safetensors")); });
  EXPECT_NE(load_message.find("fc2.weight' element [2, 210] is nan"), std::string::npos) << load_message;
  EXPECT_TRUE(std::isnan(load_model(dir.file("m.safetensors"), NonFinite::Skip).at("fc2.weight").values[1234]));
}

TEST(NonFinite, SaturatesWhenAskedAndLeavesThemOutOfTheStatistics) {
  const Model clean = make_model(Architecture::Mlp, 1);
  Model model = clean;
  auto& w = model.at("fc2.weight").values;
  w[10] = INFINITY;
  w[11] = -INFINITY;
  w[12] = NAN;
  PtqReport report;
  const Codebook codebook = sptq();
  const QuantizedModel q = quantize_model(model, codebook, &report, Normalisation::Global, NonFinite::Skip);
  EXPECT_EQ(report.stats.nonfinite, 3u);
  EXPECT_EQ(report.stats.count, clean.parameter_count() - 3);
  // The statistics are those of the finite weights only.
  Model without = clean;
  auto& v = without.at("fc2.weight").values;
  v.erase(v.begin() + 10, v.begin() + 13);
  without.at("fc2.weight").shape = {std::int64_t(v.size())};  // (a vector now: its values and shape agree)
  const WeightStats expected = model_stats(without);
  // The same weights in other chunks: equal up to the order of the sums (a mean near 0 is
  // compared on the scale of the spread).
  EXPECT_NEAR(report.stats.mean, expected.mean, 1e-12 * expected.stddev());
  EXPECT_NEAR(report.stats.stddev(), expected.stddev(), 1e-12 * expected.stddev());
  const QuantizedMatrix& m = q.tensors.at("fc2.weight").matrix;
  const std::size_t cols = m.codes.cols;
  EXPECT_EQ(m.codes.at(10 / cols, 10 % cols), codebook.size() - 1);
  EXPECT_EQ(m.codes.at(11 / cols, 11 % cols), 0u);
  EXPECT_EQ(m.codes.at(12 / cols, 12 % cols), codebook.index_of(0.0));
  for (const TensorReport& t : report.tensors) {
    EXPECT_EQ(t.nonfinite, t.name == "fc2.weight" ? 3u : 0u) << t.name;
    EXPECT_TRUE(std::isfinite(t.rmse) && std::isfinite(t.max_error)) << t.name;
  }
  EXPECT_TRUE(std::isfinite(report.sqnr_ex_db));
}

// A parameter (tensor) of no finite weight is an error even with NonFinite::Skip, and so is one
// among finite ones: there is nothing to map it by (docs/robustness.md).
TEST(NonFinite, AllNonFiniteIsStillAnError) {
  Model model = make_model(Architecture::Mlp, 1);
  for (auto& p : model.parameters) std::fill(p.values.begin(), p.values.end(), NAN);
  const std::string message =
      error_of([&] { quantize_model(model, sptq(), nullptr, Normalisation::Global, NonFinite::Skip); });
  EXPECT_NE(message.find(model.parameters[0].name + ": every one of its"), std::string::npos) << message;
  Model one = make_model(Architecture::Mlp, 1);
  Parameter& bias = one.parameters.back();
  std::fill(bias.values.begin(), bias.values.end(), INFINITY);
  for (const Normalisation n : {Normalisation::Global, Normalisation::PerTensor, Normalisation::None}) {
    const std::string among = error_of([&] { quantize_model(one, sptq(), nullptr, n, NonFinite::Skip); });
    EXPECT_NE(among.find(bias.name + ": every one of its " + std::to_string(bias.values.size()) +
                         " weights is NaN or infinite"),
              std::string::npos)
        << among;
  }
}

// what() is a C string: a NUL in a quoted name (a tensor's, a shard's in an index) is written as
// the text \x00, so the message goes on to its cause.
TEST(Errors, ANulInAQuotedNameDoesNotEndTheMessage) {
  const std::string message("t 'a\0b': the cause", 18);
  EXPECT_STREQ(Error(message).what(), "t 'a\\x00b': the cause");
  EXPECT_STREQ(NonFiniteWeight(std::string("x 'a\0b'", 7), 3, 1.0 / 0.0).what(),
               "x 'a\\x00b': element 3 is inf; weights must be finite (asked to saturate them, nuq takes +-Inf to "
               "the outermost levels and NaN to the level of the cell holding the mean: --nonfinite saturate, "
               "nonfinite='saturate' in Python)");
}

// A NaN with its sign bit set (PyTorch's bfloat16 NaN) is shown as "nan", not "-nan"; infinities
// keep their sign, which says something.
TEST(Errors, ANaNIsShownWithoutASign) {
  const double negative_nan = std::copysign(std::numeric_limits<double>::quiet_NaN(), -1.0);
  ASSERT_TRUE(std::signbit(negative_nan));
  EXPECT_EQ(std::string(NonFiniteWeight("w", 3, negative_nan).what()).rfind("w: element 3 is nan; weights", 0), 0u);
  EXPECT_EQ(detail::concat("a ", negative_nan, ", ", float(negative_nan), ", ", -1.0 / 0.0, ", ", 0.5f),
            "a nan, nan, -inf, 0.5");
}

TEST(Degenerate, EmptyAndZeroVarianceInputsHaveDefinedAnswers) {
  WeightStats empty;
  accumulate(empty, {}, "empty");
  EXPECT_EQ(empty.count, 0u);
  EXPECT_EQ(empty.stddev(), 0.0);
  EXPECT_EQ(combine(empty, empty).count, 0u);
  // An empty matrix packs to nothing and multiplies to the bias (or nothing).
  const PackedCodes none = pack_codes({}, 0, 5, 2);
  EXPECT_TRUE(none.bytes.empty());
  QuantizedMatrix no_inputs{pack_codes({}, 3, 0, 2), {0.f, 1.f, 2.f, 3.f}};
  const float bias[3] = {1.5f, -2.f, 0.25f};
  float y[3] = {9, 9, 9};
  qgemm(nullptr, 1, no_inputs, bias, y);
  EXPECT_EQ(std::vector<float>(y, y + 3), std::vector<float>(bias, bias + 3));
  qgemm(nullptr, 0, no_inputs, bias, nullptr);  // no rows of X: nothing to write
  // Zero variance without normalisation is fine (nothing is divided by sigma).
  Model flat = make_model(Architecture::Mlp, 1);
  for (auto& p : flat.parameters) std::fill(p.values.begin(), p.values.end(), 0.0f);
  PtqReport report;
  quantize_model(flat, mismatch_design(8), &report, Normalisation::None);
  EXPECT_EQ(report.stats.stddev(), 0.0);
  EXPECT_TRUE(std::isinf(report.sqnr_ex_db) && report.sqnr_ex_db < 0) << "no signal, some noise: " << report.sqnr_ex_db;
  EXPECT_TRUE(std::isinf(report.sqnr_th_db) && report.sqnr_th_db < 0) << report.sqnr_th_db;
}

Bytes small_file() {
  io::TensorFile f;
  f.metadata["nuq"] = "x";
  f.tensors["a"] = io::f32_tensor({2, 3}, {1, 2, 3, 4, 5, 6});
  f.tensors["b"] = io::f32_tensor({1}, {7});
  return io::serialize_safetensors(f);
}

TEST(CorruptFiles, SafetensorsTruncatedAtEveryByteIsRejected) {
  const Bytes whole = small_file();
  ASSERT_NO_THROW(io::parse_safetensors(whole, "whole"));
  for (std::size_t size = 0; size < whole.size(); ++size) {
    const std::string message = error_of([&] {
      io::parse_safetensors(Bytes(whole.begin(), whole.begin() + static_cast<std::ptrdiff_t>(size)), "cut.safetensors");
    });
    EXPECT_EQ(message.rfind("cut.safetensors: ", 0), 0u) << "truncated to " << size << " bytes: " << message;
  }
}

// A valid quantized MLP, then one field broken at a time: each gives its own message.
TEST(CorruptFiles, QuantizedModelsWithOneFieldBrokenAreRejected) {
  const QuantizedModel good = quantize_model(make_model(Architecture::Mlp, 1), sptq());
  test::TempDir dir;
  save_quantized(dir.file("q.safetensors"), good);
  const io::TensorFile file = io::read_safetensors(dir.file("q.safetensors"));
  ASSERT_NO_THROW(quantized_from_file(file, "q"));
  const QuantizedModel wide = quantize_model(make_model(Architecture::Mlp, 1), mismatch_design(12), nullptr,
                                             Normalisation::None);
  save_quantized(dir.file("q12.safetensors"), wide);
  const io::TensorFile file12 = io::read_safetensors(dir.file("q12.safetensors"));
  ASSERT_NO_THROW(quantized_from_file(file12, "q12"));

  auto meta_edit = [](io::TensorFile f, const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json d = nlohmann::json::parse(f.metadata.at("nuq.quantized"));
    edit(d);
    f.metadata["nuq.quantized"] = d.dump();
    return f;
  };
  auto tensor_edit = [](io::TensorFile f, const std::string& name, const std::function<void(io::Tensor&)>& edit) {
    edit(f.tensors.at(name));
    return f;
  };
  struct Case {
    const char* name;
    io::TensorFile file;
    const char* message;
  };
  io::TensorFile no_meta = file;
  no_meta.metadata.erase("nuq.quantized");
  io::TensorFile not_json = file;
  not_json.metadata["nuq.quantized"] = "{\"architecture\":";
  // 100,000 levels of arrays inside the description: a recursion over it would overflow the stack.
  io::TensorFile deep = file;
  deep.metadata["nuq.quantized"].insert(1, "\"x\":" + std::string(100000, '[') + std::string(100000, ']') + ",");
  io::TensorFile twice = file;  // a key named twice: nlohmann would keep one silently
  twice.metadata["nuq.quantized"].insert(1, "\"stddev\":2,");
  io::TensorFile rnn = file;
  rnn.metadata["nuq.architecture"] = "rnn";
  io::TensorFile no_architecture = file;
  no_architecture.metadata.erase("nuq.architecture");
  io::TensorFile without_fc2_bias = meta_edit(file, [](auto& d) { d["tensors"].erase("fc2.bias"); });
  without_fc2_bias.tensors.erase("fc2.bias.codes");
  without_fc2_bias.tensors.erase("fc2.bias.codebook");
  io::TensorFile no_codes = file;
  no_codes.tensors.erase("fc1.weight.codes");
  io::TensorFile no_codebook = file;
  no_codebook.tensors.erase("fc3.bias.codebook");
  io::TensorFile no_grid = file12;
  no_grid.tensors.erase("fc2.weight.grid");
  const float nan_level[4] = {NAN, 0.f, 1.f, 2.f};
  const std::vector<Case> cases = {
      {"no metadata", no_meta, "no nuq.quantized"},
      {"metadata not JSON", not_json, "nuq.quantized: not valid JSON"},
      {"metadata nested deep", deep, "nuq.quantized: nested deeper than 16 levels"},
      {"metadata key twice", twice, "nuq.quantized: names 'stddev' twice"},
      {"unknown architecture", rnn, "rnn"},
      {"no architecture", no_architecture, "not one of nuq's networks"},
      {"stddev zero", meta_edit(file, [](auto& d) { d["stddev"] = 0.0; }), "stddev positive"},
      {"stddev not a number", meta_edit(file, [](auto& d) { d["stddev"] = "wide"; }), "nuq.quantized: "},
      {"tensor entry missing", meta_edit(file, [](auto& d) { d["tensors"].erase("fc2.bias"); }),
       "does not describe 'fc2.bias'"},
      {"tensor entry and data missing", without_fc2_bias, "'fc2.bias' is missing"},
      {"code width 3", meta_edit(file, [](auto& d) { d["tensors"]["fc1.bias"]["bits"] = 3; }), "unsupported code width 3"},
      {"code width 2^70", meta_edit(file, [](auto& d) { d["tensors"]["fc1.bias"]["bits"] = 1180591620717411303424.0; }),
       "unsupported code width 1.18"},
      {"dtype unknown", meta_edit(file, [](auto& d) { d["tensors"]["fc1.bias"]["dtype"] = "WAT"; }),
       "dtype 'WAT' is not one nuq quantizes"},
      {"version a string", meta_edit(file, [](auto& d) { d["version"] = "1"; }), "version \"1\" is not a format version"},
      {"version fractional", meta_edit(file, [](auto& d) { d["version"] = 1.5; }), "version 1.5 is not a format version"},
      {"version huge", meta_edit(file, [](auto& d) { d["version"] = 1e300; }), "is not a format version"},
      {"version from the future", meta_edit(file, [](auto& d) { d["version"] = 7; }), "reads up to version 4"},
      {"version from the future without tensors", meta_edit(file, [](auto& d) { d["version"] = 99; d.erase("tensors"); }),
       "written in format version 99; this nuq reads up to version 4"},
      {"mean a string", meta_edit(file, [](auto& d) { d["mean"] = "0.5"; }), "nuq.quantized: mean is \"0.5\", not a number"},
      {"tensor stddev a string", meta_edit(file, [](auto& d) { d["tensors"]["fc3.weight"]["stddev"] = "1"; }),
       "tensor 'fc3.weight': stddev is \"1\", not a number"},
      {"kept not a list", meta_edit(file, [](auto& d) { d["kept"] = "fc1.bias.codes"; }), "kept is not a list"},
      {"kept names a tensor not in the file",
       meta_edit(file, [](auto& d) { d["version"] = 2; d["kept"] = {"fc9.weight.codes"}; }),
       "kept names 'fc9.weight.codes', which the file does not hold"},
      {"kept codes of a described tensor",
       meta_edit(file, [](auto& d) { d["version"] = 2; d["kept"] = {"fc1.weight.codes"}; }), "missing .codes"},
      {"wrong rows", meta_edit(file, [](auto& d) { d["tensors"]["fc1.weight"]["rows"] = 511; }), "do not match its shape"},
      {"fractional rows", meta_edit(file, [](auto& d) { d["tensors"]["fc1.weight"]["rows"] = 511.5; }),
       "rows 511.5 is not a count"},
      {"rows 2^63", meta_edit(file, [](auto& d) { d["tensors"]["fc1.weight"]["rows"] = std::uint64_t(1) << 63; }),
       "rows 9223372036854775808 is not a count (a whole number from 0 to 2^63 - 1)"},
      {"group_size 0", meta_edit(file, [](auto& d) { d["tensors"]["fc1.weight"]["group_size"] = 0; }),
       "tensor 'fc1.weight': group_size 0; a group holds at least one weight"},
      {"fractional shape", meta_edit(file, [](auto& d) { d["tensors"]["fc1.bias"]["shape"] = {512.5}; }),
       "shape entry 512.5 is not a count"},
      {"fractional code width", meta_edit(file, [](auto& d) { d["tensors"]["fc1.bias"]["bits"] = 2.5; }),
       "unsupported code width 2.5"},
      {"tensor stddev negative", meta_edit(file, [](auto& d) { d["tensors"]["fc3.weight"]["stddev"] = -1.0; }),
       "stddev not negative"},
      {"codes missing", no_codes, "missing .codes"},
      {"codes wrong dtype", tensor_edit(file, "fc1.bias.codes", [](io::Tensor& t) { t.dtype = io::DType::I8; }),
       "expected U8"},
      {"codes short", tensor_edit(file, "fc1.bias.codes", [](io::Tensor& t) { t.data.pop_back(); t.shape = {1, std::int64_t(t.data.size())}; }),
       "expected U8 [1x128], got U8 [1x127]"},
      {"codes reshaped", tensor_edit(file, "fc1.weight.codes", [](io::Tensor& t) { t.shape = {1024, 98}; }),
       "expected U8 [512x196], got U8 [1024x98]"},
      {"codebook missing", no_codebook, "needs exactly one of .codebook and .grid"},
      {"codebook too short",
       tensor_edit(file, "fc3.bias.codebook", [](io::Tensor& t) { t = io::f32_tensor({1, 3}, {0.f, 1.f, 2.f}); }),
       "expected F32 [1x4], got F32 [1x3]"},
      {"codebook not finite",
       tensor_edit(file, "fc3.bias.codebook", [&](io::Tensor& t) { t = io::f32_tensor({1, 4}, {nan_level, nan_level + 4}); }),
       "level 0 is nan; every level must be finite"},
      {"grid missing", no_grid, "needs exactly one of .codebook and .grid"},
      {"grid not F64 [2]", tensor_edit(file12, "fc2.weight.grid", [](io::Tensor& t) { t.shape = {1, 2}; }),
       ".grid: expected F64 [2], got F64 [1x2]"},
      {"grid negative scale", tensor_edit(file12, "fc2.weight.grid", [](io::Tensor& t) {
         const double map[2] = {0.0, -1.0};
         std::memcpy(t.data.data(), map, sizeof map);
       }),
       "scale not negative"},
      {"grid past FP32", tensor_edit(file12, "fc2.weight.grid", [](io::Tensor& t) {
         const double map[2] = {0.0, 1e300};  // finite in F64; level 1 is not in FP32
         std::memcpy(t.data.data(), map, sizeof map);
       }),
       "every level must be a finite float"},
      {"grid offset past FP32", tensor_edit(file12, "fc2.weight.grid", [](io::Tensor& t) {
         const double map[2] = {-1e308, 0.0};
         std::memcpy(t.data.data(), map, sizeof map);
       }),
       "put levels at -inf"},
      {"U16 codes as U8", tensor_edit(file12, "fc2.weight.codes", [](io::Tensor& t) { t.dtype = io::DType::U8; }),
       "expected U16"},
      // The checkpoints before version 1 stored 16-bit codes so; a file of version 1 or later may not
      {"U16 codes as the U8 byte pairs of files before version 1",
       tensor_edit(file12, "fc2.weight.codes", [](io::Tensor& t) { t.dtype = io::DType::U8; t.shape[1] *= 2; }),
       "expected U16"},
  };
  for (const Case& c : cases) {
    const std::string message = error_of([&] { quantized_from_file(c.file, "bad.safetensors"); });
    EXPECT_EQ(message.rfind("bad.safetensors", 0), 0u) << c.name << ": " << message;
    EXPECT_NE(message.find(c.message), std::string::npos) << c.name << ": " << message;
  }
  // JSON has one kind of number: a writer that spells its integers 2.0 (and its floats 1 where they
  // are whole) describes the same file, and the same quantize run.
  const io::TensorFile floats = meta_edit(file, [](nlohmann::json& d) {
    d["version"] = 1.0;
    d["tensors"]["fc1.weight"]["bits"] = 2.0;
    d["tensors"]["fc1.weight"]["rows"] = 512.0;
    d["tensors"]["fc1.weight"]["shape"] = {512.0, 784.0};
    d["codebook"]["sigma"] = 1;
    d["codebook"]["iterations"] = double(d["codebook"]["iterations"].get<int>());
  });
  const QuantizedModel read = quantized_from_file(floats, "floats");
  EXPECT_EQ(read.tensors.at("fc1.weight").matrix.codes.bytes, good.tensors.at("fc1.weight").matrix.codes.bytes);
  EXPECT_EQ(quantized_run(floats.metadata, "floats"), quantized_run(file.metadata, "q"));
  EXPECT_NE(quantized_run(meta_edit(file, [](nlohmann::json& d) { d["stddev"] = d["stddev"].get<double>() * (1 + 1e-15); }).metadata, "s"),
            quantized_run(file.metadata, "q"));
  // Two runs that differ only in their tensors' group size (each tensor's entry holds it) are two
  // runs; the same sizes spelled 64.0 are one.
  const auto grouped = [&](double size) {
    return quantized_run(meta_edit(file, [&](nlohmann::json& d) {
                           for (auto& entry : d["tensors"]) entry["group_size"] = size;
                         }).metadata, "g");
  };
  EXPECT_NE(grouped(64), quantized_run(file.metadata, "q"));
  EXPECT_NE(grouped(64), grouped(128));
  EXPECT_EQ(grouped(64), grouped(64.0));
}

// The layout a file read a tensor at a time starts from (inspect, dequantize): each tensor's entry
// as the tree gives it, and a damaged description refused at its first fault in the order the
// whole-file reader checks: the format version, then `kept`, then the entries in name order.
TEST(CorruptFiles, TheLayoutOfADescriptionIsItsEntriesAndItsFirstFault) {
  const QuantizedModel model = quantize_model(make_model(Architecture::Mlp, 1), sptq());
  test::TempDir dir;
  save_quantized(dir.file("q.safetensors"), model);
  const io::TensorFile file = io::read_safetensors(dir.file("q.safetensors"));
  std::vector<std::string> names;
  for (const auto& [name, tensor] : file.tensors) names.push_back(name);
  const nlohmann::json description = nlohmann::json::parse(file.metadata.at("nuq.quantized"));
  const QuantizedLayout layout = quantized_layout(file.metadata, names, "q");
  ASSERT_EQ(layout.quantized.size(), description["tensors"].size());
  for (const auto& [name, entry] : description["tensors"].items()) {
    const QuantizedLayout::Described& described = layout.quantized.at(name);
    EXPECT_EQ(described.description, entry.dump()) << name;
    EXPECT_EQ(described.shape, entry["shape"].get<std::vector<std::int64_t>>()) << name;
    EXPECT_EQ(described.stored, (std::vector<std::string>{name + ".codes", name + ".codebook"})) << name;
  }
  EXPECT_TRUE(layout.copied.empty());
  EXPECT_TRUE(layout.run->at("tensors").empty());
  EXPECT_FALSE(layout.run->contains("kept"));
  EXPECT_EQ(layout.run->at("codebook"), description["codebook"]);

  const auto fault_of = [&](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json d = description;
    edit(d);
    std::map<std::string, std::string> metadata = file.metadata;
    metadata["nuq.quantized"] = d.dump();
    return error_of([&] { quantized_layout(metadata, names, "bad.safetensors"); });
  };
  const auto no_shape = [](nlohmann::json& d) { d["tensors"]["fc2.weight"].erase("shape"); };
  const std::vector<std::pair<std::function<void(nlohmann::json&)>, std::string>> cases = {
      {no_shape, "bad.safetensors: tensor 'fc2.weight': its description needs a shape array"},
      {[](nlohmann::json& d) { d["tensors"]["fc2.weight"] = 3; }, "tensor 'fc2.weight': its description needs a shape"},
      {[](nlohmann::json& d) { d["tensors"]["fc2.weight"]["shape"] = nullptr; },
       "tensor 'fc2.weight': its description needs a shape"},
      {[](nlohmann::json& d) { d["tensors"]["fc2.weight"]["shape"] = {256, -1}; },
       "tensor 'fc2.weight': shape entry -1 is not a count"},
      {[&](nlohmann::json& d) { no_shape(d); d["tensors"]["fc1.weight"]["shape"] = {"512"}; },
       "tensor 'fc1.weight': shape entry \"512\" is not a count"},  // the first in name order
      {[&](nlohmann::json& d) { no_shape(d); d["kept"] = "fc1.bias.codes"; }, "kept is not a list"},
      {[&](nlohmann::json& d) { no_shape(d); d["version"] = 99; }, "written in format version 99"},
      {[](nlohmann::json& d) { d["tensors"] = nlohmann::json::array(); }, "has no tensors object"},
  };
  for (const auto& [edit, expected] : cases) {
    const std::string message = fault_of(edit);
    EXPECT_EQ(message.rfind("bad.safetensors: ", 0), 0u) << message;
    EXPECT_NE(message.find(expected), std::string::npos) << expected << " | " << message;
  }
}

// The text descriptions are compared and fingerprinted by (nuq.restored_from) is what Python's
// json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False) writes, whole floats as
// integers: the expected texts below are Python's. nlohmann's dump() wrote -5.7326334528589324.
TEST(CanonicalText, IsWhatPythonsJsonDumpsWrites) {
  const std::vector<std::pair<double, const char*>> numbers = {
      {-5.7326334528589324, "-5.732633452858932"}, {0.0001, "0.0001"}, {1e-05, "1e-05"}, {0.1, "0.1"},
      {1.0 / 3.0, "0.3333333333333333"}, {2.5e-300, "2.5e-300"}, {1.7976931348623157e308, "1.7976931348623157e+308"},
      {123456.789, "123456.789"}, {1e22, "1e+22"}, {5e-324, "5e-324"}, {0.00012345, "0.00012345"},
      {1234567890123.4567, "1234567890123.4568"}, {-2.5, "-2.5"}, {2.0, "2"}, {-0.0, "0"}, {1e16, "10000000000000000"}};
  for (const auto& [value, text] : numbers) EXPECT_EQ(canonical_text(nlohmann::json(value)), text) << value;
  const nlohmann::json d = nlohmann::json::parse(R"({"b": [1.50, 2.0, {"z": null, "a": "q\"\n\u0001é"}], "a": true, "c": {}})");
  EXPECT_EQ(canonical_text(d), R"({"a":true,"b":[1.5,2,{"a":"q\"\n\u0001é","z":null}],"c":{}})");
}

// `nuq quantize` killed with SIGKILL at moments spread over its run: the output is always a
// complete file, the previous one or the new one, never a truncated mix.
TEST(Atomicity, QuantizeKilledAtAnyMomentLeavesAWholeFile) {
  test::TempDir dir;
  save_model(dir.file("cnn.safetensors"), make_model(Architecture::Cnn, 3));
  const std::string out = dir.file("out.safetensors");
  const std::vector<std::vector<std::string>> variants = {
      {"quantize", dir.file("cnn.safetensors"), "-o", out, "-m", "sptq"},
      {"quantize", dir.file("cnn.safetensors"), "-o", out, "-m", "uniform", "-b", "12", "--normalise", "none"}};
  auto spawn = [&](const std::vector<std::string>& args) {
    std::vector<std::string> argv_storage = {NUQ_BINARY};
    argv_storage.insert(argv_storage.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_storage) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid = 0;
    EXPECT_EQ(posix_spawn(&pid, NUQ_BINARY, &actions, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    return pid;
  };
  auto read_all = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return Bytes(std::istreambuf_iterator<char>(in), {});
  };
  // The complete output of each variant, and how long a whole run takes.
  std::vector<Bytes> complete;
  double seconds = 0.0;
  for (const auto& v : variants) {
    const auto start = std::chrono::steady_clock::now();
    int status = 0;
    waitpid(spawn(v), &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    seconds = std::max(seconds, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    complete.push_back(read_all(out));
  }
  ASSERT_NE(complete[0], complete[1]);
  const int kills = 24;
  int killed_mid_run = 0;
  for (int k = 0; k < kills; ++k) {
    const Bytes before = read_all(out);
    const Bytes& after = complete[k % 2];
    const pid_t pid = spawn(variants[k % 2]);
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds * (k + 0.5) / kills));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    killed_mid_run += WIFSIGNALED(status);
    // A run that finished before its kill ran faster than the first ones (the machine's load
    // changed): later kills aim at the shorter time, so that they still land while nuq runs.
    if (!WIFSIGNALED(status)) seconds *= 0.8;
    const Bytes now = read_all(out);
    EXPECT_TRUE(now == before || now == after) << "kill " << k << ": output of " << now.size() << " bytes is neither the old ("
                                               << before.size() << ") nor the new (" << after.size() << ") file";
    EXPECT_NO_THROW(load_quantized(out)) << "kill " << k;
  }
  EXPECT_GE(killed_mid_run, kills / 2) << "most kills should land while nuq runs";
}

}  // namespace
}  // namespace nuq
