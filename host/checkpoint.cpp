#include "nuq/checkpoint.h"

#include <cmath>
#include <limits>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "nuq/error.h"
#include "nuq/io/widen.h"
#include "nuq/packed.h"
#include "nuq/quantize_table.h"

namespace nuq {
namespace {

// A floating tensor's values as float (F16 and BF16 widen exactly).
std::vector<float> widen(const io::Tensor& t, const std::string& where) {
  if (t.dtype == io::DType::F32) return io::to_floats(t, where);
  std::vector<float> values(t.element_count());
  NUQ_REQUIRE(t.data.size() == 2 * values.size(), where, ": holds ", t.data.size(), " bytes, its shape needs ",
              2 * values.size());
  io::widen_to_f32(t.dtype, t.data.data(), values.size(), values.data());
  return values;
}

}  // namespace

bool is_nuq_model(const io::TensorFile& file) { return file.metadata.count("nuq.architecture") > 0; }

QuantizedTensor quantize_tensor(const float* values, const std::vector<std::int64_t>& shape, const Codebook& codebook,
                                Normalisation normalisation, const WeightStats& global, const WeightStats& own,
                                const std::string& where, NonFinite nonfinite, Backend& backend,
                                QuantizeTotals* totals) {
  const int bits = storage_bits(codebook);
  require_storable(normalisation, bits, where);
  NUQ_REQUIRE(normalisation != Normalisation::Global || global.stddev() > 0.0, where,
              ": every weight has the same value; zero variance cannot be normalised");
  std::size_t count = 1;
  for (std::int64_t dim : shape) count *= std::size_t(dim);
  const auto [rows, cols] = matrix_view(shape, count);
  const TensorNormalisation maps =
      normalise_tensor(normalisation, values, rows, cols, global, own, where, nonfinite, backend);
  const QuantizeTable table = make_quantize_table(codebook, bits, maps.maps);
  // What the metadata records: the tensor's map, or its own statistics when each row has one.
  const Affine map = normalisation == Normalisation::PerChannel ? Affine{own.mean, own.stddev()} : maps.maps[0];
  QuantizedTensor q;
  q.shape = shape;
  q.matrix.codes = {rows, cols, bits, std::vector<std::uint8_t>(rows * packed_row_bytes(cols, bits))};
  const QuantizeTotals t = backend.quantize(values, rows, cols, table, q.matrix.codes.bytes.data());
  if (totals) *totals = combine(*totals, t);
  q.matrix.levels = table.levels;
  q.mean = map.mean;
  q.stddev = map.scale;
  return q;
}

io::TensorFile to_tensor_file(const QuantizedCheckpoint& checkpoint, const std::string& name) {
  io::TensorFile out;
  out.tensors = {checkpoint.copied.begin(), checkpoint.copied.end()};
  nlohmann::json tensors = nlohmann::json::object();
  for (const auto& [tensor_name, q] : checkpoint.quantized) {
    const PackedCodes& codes = q.matrix.codes;
    for (const char* suffix : {".codes", ".codebook"})
      NUQ_REQUIRE(!checkpoint.copied.count(tensor_name + suffix) && !checkpoint.quantized.count(tensor_name + suffix),
                  name, ": tensor '", tensor_name, "' cannot be stored: the checkpoint already has a '", tensor_name,
                  suffix, "'");
    io::Tensor bytes;
    bytes.dtype = io::DType::U8;
    bytes.shape = {std::int64_t(codes.rows), std::int64_t(packed_row_bytes(codes.cols, codes.bits))};
    bytes.data = codes.bytes;
    out.tensors[tensor_name + ".codes"] = std::move(bytes);
    const std::int64_t per_table = std::int64_t{1} << codes.bits;
    out.tensors[tensor_name + ".codebook"] =
        io::f32_tensor({std::int64_t(q.matrix.levels.size()) / per_table, per_table}, q.matrix.levels);
    const auto dtype = checkpoint.dtypes.find(tensor_name);
    tensors[tensor_name] = {{"shape", q.shape},
                            {"dtype", io::to_string(dtype == checkpoint.dtypes.end() ? io::DType::F32 : dtype->second)},
                            {"rows", codes.rows},
                            {"cols", codes.cols},
                            {"bits", codes.bits},
                            {"mean", q.mean},
                            {"stddev", q.stddev}};
  }
  out.metadata = checkpoint.metadata;
  nlohmann::json description = {{"normalisation", to_string(checkpoint.normalisation)}, {"tensors", tensors}};
  if (checkpoint.codebook) description["codebook"] = to_json(*checkpoint.codebook);
  out.metadata["nuq.checkpoint"] = description.dump();
  return out;
}

io::TensorFile quantize_checkpoint(const io::TensorFile& checkpoint, const std::string& name, const Codebook& codebook,
                                   Normalisation normalisation, NonFinite nonfinite, Backend& backend,
                                   CheckpointReport* report) {
  require_storable(normalisation, storage_bits(codebook), name);
  // Pass 1: each floating tensor's statistics (and all of them together).
  std::map<std::string, std::vector<float>> values;
  std::map<std::string, WeightStats> own;
  WeightStats global;
  CheckpointReport r;
  QuantizedCheckpoint q{codebook, normalisation, {}, {}, {}, checkpoint.metadata};
  for (const auto& [tensor_name, t] : checkpoint.tensors) {
    if (!io::is_floating(t.dtype)) {
      q.copied[tensor_name] = t;
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
  QuantizeTotals all;
  for (auto& [tensor_name, v] : values) {
    const io::Tensor& source = checkpoint.tensors.at(tensor_name);
    QuantizeTotals t;
    const QuantizedTensor& quantized = q.quantized[tensor_name] =
        quantize_tensor(v.data(), source.shape, codebook, normalisation, global, own.at(tensor_name),
                        name + ": tensor '" + tensor_name + "'", nonfinite, backend, &t);
    q.dtypes[tensor_name] = source.dtype;
    all = combine(all, t);
    const std::size_t finite = v.size() - t.nonfinite;
    r.tensors.push_back({tensor_name, source.shape, quantized.matrix.codes.bits, source.data.size(),
                         quantized.matrix.codes.bytes.size() + quantized.matrix.levels.size() * sizeof(float),
                         finite ? std::sqrt(t.noise / double(finite)) : 0.0, t.max_error, t.nonfinite});
    v = {};  // the widened copy is no longer needed
  }
  r.stats = global;
  r.sqnr_ex_db = all.noise > 0.0 ? 10.0 * std::log10(all.signal / all.noise) : std::numeric_limits<double>::infinity();
  r.within = 100.0 * double(all.inside) / double(global.count);
  io::TensorFile out = to_tensor_file(q, name);
  if (report) *report = std::move(r);
  return out;
}

QuantizedCheckpoint read_quantized_checkpoint(const io::TensorFile& quantized, const std::string& name) {
  const auto meta = quantized.metadata.find("nuq.checkpoint");
  NUQ_REQUIRE(meta != quantized.metadata.end(), name, ": no nuq.checkpoint in __metadata__ (not a checkpoint "
              "written by nuq quantize)");
  nlohmann::json description;
  try {
    description = nlohmann::json::parse(meta->second);
  } catch (const nlohmann::json::exception& e) {
    throw Error(name + ": nuq.checkpoint is not valid JSON: " + e.what());
  }
  QuantizedCheckpoint out;
  out.metadata = quantized.metadata;
  out.metadata.erase("nuq.checkpoint");
  NUQ_REQUIRE(description.is_object() && description.contains("tensors") && description["tensors"].is_object(),
              name, ": nuq.checkpoint has no tensors object");
  try {
    if (description.contains("codebook")) out.codebook = codebook_from_json(description["codebook"]);
    if (description.contains("normalisation"))
      out.normalisation = parse_normalisation(description["normalisation"].get<std::string>());
  } catch (const std::exception& e) {
    throw Error(name + ": nuq.checkpoint: " + e.what());
  }
  std::set<std::string> used;
  for (const auto& [tensor_name, d] : description["tensors"].items()) {
    const std::string where = name + ": tensor '" + tensor_name + "'";
    std::vector<std::int64_t> shape;
    std::size_t rows = 0, cols = 0;
    int bits = 0;
    QuantizedTensor q;
    io::DType dtype = io::DType::F32;
    try {
      shape = d.at("shape").get<std::vector<std::int64_t>>();
      rows = d.at("rows").get<std::size_t>();
      cols = d.at("cols").get<std::size_t>();
      bits = d.at("bits").get<int>();
      q.mean = d.value("mean", 0.0);
      q.stddev = d.value("stddev", 1.0);
      const std::string dtype_name = d.value("dtype", std::string("F32"));
      for (io::DType candidate : {io::DType::F32, io::DType::F16, io::DType::BF16})
        if (dtype_name == io::to_string(candidate)) dtype = candidate;
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
    q.shape = shape;
    q.matrix = {{rows, cols, bits, codes->second.data}, read_levels_table(levels->second, rows, bits, where + ".codebook")};
    out.quantized[tensor_name] = std::move(q);
    out.dtypes[tensor_name] = dtype;
    used.insert(tensor_name + ".codes");
    used.insert(tensor_name + ".codebook");
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
    out.copied[tensor_name] = t;
  }
  return out;
}

io::TensorFile dequantize_checkpoint(const io::TensorFile& quantized, const std::string& name, DequantizeReport* report) {
  const QuantizedCheckpoint checkpoint = read_quantized_checkpoint(quantized, name);
  io::TensorFile out;
  out.metadata = checkpoint.metadata;
  out.tensors = {checkpoint.copied.begin(), checkpoint.copied.end()};
  DequantizeReport r;
  for (const auto& [tensor_name, q] : checkpoint.quantized) {
    out.tensors[tensor_name] = io::f32_tensor(q.shape, dequantize(q.matrix));
    r.restored.push_back(tensor_name);
  }
  for (const auto& [tensor_name, t] : checkpoint.copied) r.copied.push_back(tensor_name);
  if (report) *report = std::move(r);
  return out;
}

}  // namespace nuq
