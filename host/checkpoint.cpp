#include "nuq/checkpoint.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "nuq/error.h"
#include "nuq/packed.h"
#include "nuq/quantize_table.h"

namespace nuq {
namespace {

bool is_floating(io::DType dtype) {
  return dtype == io::DType::F32 || dtype == io::DType::F16 || dtype == io::DType::BF16;
}

float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h >> 15) << 31;
  const int exponent = (h >> 10) & 0x1F;
  const std::uint32_t mantissa = h & 0x3FF;
  float magnitude;
  if (exponent == 0) magnitude = std::ldexp(float(mantissa), -24);  // zero and subnormals
  else if (exponent == 31) magnitude = mantissa ? std::numeric_limits<float>::quiet_NaN() : INFINITY;
  else magnitude = std::ldexp(float(mantissa | 0x400), exponent - 25);
  std::uint32_t bits;
  std::memcpy(&bits, &magnitude, 4);
  bits |= sign;
  float value;
  std::memcpy(&value, &bits, 4);
  return value;
}

// A floating tensor's values as float (F16 and BF16 widen exactly).
std::vector<float> widen(const io::Tensor& t, const std::string& where) {
  if (t.dtype == io::DType::F32) return io::to_floats(t, where);
  std::vector<float> values(t.element_count());
  NUQ_REQUIRE(t.data.size() == 2 * values.size(), where, ": holds ", t.data.size(), " bytes, its shape needs ",
              2 * values.size());
  for (std::size_t i = 0; i < values.size(); ++i) {
    const std::uint16_t h = std::uint16_t(t.data[2 * i] | (t.data[2 * i + 1] << 8));
    if (t.dtype == io::DType::BF16) {
      const std::uint32_t bits = std::uint32_t(h) << 16;
      std::memcpy(&values[i], &bits, 4);
    } else {
      values[i] = half_to_float(h);
    }
  }
  return values;
}

}  // namespace

bool is_nuq_model(const io::TensorFile& file) { return file.metadata.count("nuq.architecture") > 0; }

io::TensorFile quantize_checkpoint(const io::TensorFile& checkpoint, const std::string& name, const Codebook& codebook,
                                   Normalisation normalisation, NonFinite nonfinite, Backend& backend,
                                   CheckpointReport* report) {
  const int bits = storage_bits(codebook);
  require_storable(normalisation, bits, name);
  // Pass 1: each floating tensor's statistics (and all of them together).
  std::map<std::string, std::vector<float>> values;
  std::map<std::string, WeightStats> own;
  WeightStats global;
  CheckpointReport r;
  io::TensorFile out;
  for (const auto& [tensor_name, t] : checkpoint.tensors) {
    if (!is_floating(t.dtype)) {
      out.tensors[tensor_name] = t;
      r.copied.push_back(tensor_name);
      continue;
    }
    const std::string where = name + ": tensor '" + tensor_name + "'";
    std::vector<float>& v = values[tensor_name] = widen(t, where);
    own[tensor_name] = backend.stats(v.data(), v.size(), where, nonfinite);
    global = combine(global, own[tensor_name]);
  }
  NUQ_REQUIRE(!values.empty(), name, ": no F32, F16 or BF16 tensor to quantize");
  NUQ_REQUIRE(global.count > 0, name, ": no finite weight to quantize");
  NUQ_REQUIRE(normalisation != Normalisation::Global || global.stddev() > 0.0, name,
              ": every weight has the same value; zero variance cannot be normalised");
  // Pass 2: the fused pass per tensor, against the codebook in that tensor's units.
  nlohmann::json tensors = nlohmann::json::object();
  QuantizeTotals all;
  for (auto& [tensor_name, v] : values) {
    const io::Tensor& source = checkpoint.tensors.at(tensor_name);
    const WeightStats& s = own.at(tensor_name);
    const auto [rows, cols] = matrix_view(source.shape, v.size());
    const std::string where = name + ": tensor '" + tensor_name + "'";
    const TensorNormalisation maps =
        normalise_tensor(normalisation, v.data(), rows, cols, global, s, where, nonfinite, backend);
    const QuantizeTable table = make_quantize_table(codebook, bits, maps.maps);
    // What the metadata records: the tensor's map, or its own statistics when each row has one.
    const Affine map = normalisation == Normalisation::PerChannel ? Affine{s.mean, s.stddev()} : maps.maps[0];
    io::Tensor codes;
    codes.dtype = io::DType::U8;
    codes.shape = {std::int64_t(rows), std::int64_t(packed_row_bytes(cols, bits))};
    codes.data.resize(rows * packed_row_bytes(cols, bits));
    const QuantizeTotals t = backend.quantize(v.data(), rows, cols, table, codes.data.data());
    all = combine(all, t);
    NUQ_REQUIRE(!checkpoint.tensors.count(tensor_name + ".codes") && !checkpoint.tensors.count(tensor_name + ".codebook"),
                name, ": tensor '", tensor_name, "' cannot be stored: the checkpoint already has a '", tensor_name,
                ".codes' or '.codebook'");
    out.tensors[tensor_name + ".codes"] = std::move(codes);
    const std::int64_t per_table = std::int64_t{1} << bits;
    out.tensors[tensor_name + ".codebook"] =
        io::f32_tensor({std::int64_t(table.levels.size()) / per_table, per_table}, table.levels);
    tensors[tensor_name] = {{"shape", source.shape}, {"dtype", io::to_string(source.dtype)}, {"rows", rows},
                            {"cols", cols},          {"bits", bits},                      {"mean", map.mean},
                            {"stddev", map.scale}};
    const std::size_t finite = v.size() - t.nonfinite;
    r.tensors.push_back({tensor_name, source.shape, bits, source.data.size(),
                         out.tensors[tensor_name + ".codes"].data.size() + table.levels.size() * sizeof(float),
                         finite ? std::sqrt(t.noise / double(finite)) : 0.0, t.max_error, t.nonfinite});
    v = {};  // the widened copy is no longer needed
  }
  r.stats = global;
  r.sqnr_ex_db = all.noise > 0.0 ? 10.0 * std::log10(all.signal / all.noise) : std::numeric_limits<double>::infinity();
  r.within = 100.0 * double(all.inside) / double(global.count);
  out.metadata = checkpoint.metadata;
  out.metadata["nuq.checkpoint"] = nlohmann::json{{"codebook", to_json(codebook)},
                                                  {"normalisation", to_string(normalisation)},
                                                  {"tensors", tensors}}
                                       .dump();
  if (report) *report = std::move(r);
  return out;
}

io::TensorFile dequantize_checkpoint(const io::TensorFile& quantized, const std::string& name, DequantizeReport* report) {
  const auto meta = quantized.metadata.find("nuq.checkpoint");
  NUQ_REQUIRE(meta != quantized.metadata.end(), name, ": no nuq.checkpoint in __metadata__ (not a checkpoint "
              "written by nuq quantize)");
  nlohmann::json description;
  try {
    description = nlohmann::json::parse(meta->second);
  } catch (const nlohmann::json::exception& e) {
    throw Error(name + ": nuq.checkpoint is not valid JSON: " + e.what());
  }
  io::TensorFile out;
  out.metadata = quantized.metadata;
  out.metadata.erase("nuq.checkpoint");
  NUQ_REQUIRE(description.is_object() && description.contains("tensors") && description["tensors"].is_object(),
              name, ": nuq.checkpoint has no tensors object");
  std::set<std::string> used;
  DequantizeReport r;
  for (const auto& [tensor_name, d] : description["tensors"].items()) {
    const std::string where = name + ": tensor '" + tensor_name + "'";
    std::vector<std::int64_t> shape;
    std::size_t rows = 0, cols = 0;
    int bits = 0;
    try {
      shape = d.at("shape").get<std::vector<std::int64_t>>();
      rows = d.at("rows").get<std::size_t>();
      cols = d.at("cols").get<std::size_t>();
      bits = d.at("bits").get<int>();
    } catch (const nlohmann::json::exception& e) {
      throw Error(where + ": bad description in nuq.checkpoint: " + e.what());
    }
    NUQ_REQUIRE(is_packable_bits(bits), where, ": ", bits, "-bit codes are not supported");
    std::size_t count = 1;
    for (std::int64_t dim : shape) {
      NUQ_REQUIRE(dim >= 0 && (dim == 0 || count <= std::numeric_limits<std::size_t>::max() / std::size_t(dim)), where,
                  ": bad shape");
      count *= std::size_t(dim);
    }
    // The matrix view follows from the shape alone (products of untrusted numbers could wrap).
    const auto [view_rows, view_cols] = matrix_view(shape, count);
    NUQ_REQUIRE(rows == view_rows && cols == view_cols, where, ": rows x cols (", rows, " x ", cols,
                ") do not match its shape");
    NUQ_REQUIRE(view_cols == 0 || view_rows <= std::numeric_limits<std::size_t>::max() / view_cols, where,
                ": shape too large");
    const auto codes = quantized.tensors.find(tensor_name + ".codes");
    const auto levels = quantized.tensors.find(tensor_name + ".codebook");
    NUQ_REQUIRE(codes != quantized.tensors.end() && levels != quantized.tensors.end(), where,
                ": missing .codes or .codebook");
    io::require_layout(codes->second, io::DType::U8, {std::int64_t(rows), std::int64_t(packed_row_bytes(cols, bits))},
                       where + ".codes");
    const std::vector<float> table = read_levels_table(levels->second, rows, bits, where + ".codebook");
    const QuantizedMatrix m{{rows, cols, bits, codes->second.data}, table};
    out.tensors[tensor_name] = io::f32_tensor(shape, dequantize(m));
    used.insert(tensor_name + ".codes");
    used.insert(tensor_name + ".codebook");
    r.restored.push_back(tensor_name);
  }
  for (const auto& [tensor_name, t] : quantized.tensors) {
    if (used.count(tensor_name)) continue;
    // Codes without a description cannot be restored; copying them as they are would hand the
    // user a checkpoint that looks whole and is not.
    for (const char* suffix : {".codes", ".codebook"}) {
      const std::size_t n = std::char_traits<char>::length(suffix);
      NUQ_REQUIRE(tensor_name.size() <= n || tensor_name.compare(tensor_name.size() - n, n, suffix) != 0, name,
                  ": tensor '", tensor_name, "' holds quantized data but nuq.checkpoint does not describe '",
                  tensor_name.substr(0, tensor_name.size() - n), "'; the file is damaged");
    }
    out.tensors[tensor_name] = t;
    r.copied.push_back(tensor_name);
  }
  if (report) *report = std::move(r);
  return out;
}

}  // namespace nuq
