#include "nuq/ptq.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "nuq/error.h"
#include "nuq/quantize_table.h"
#include "nuq/io/safetensors.h"
#include "nuq/laplace.h"
#include "nuq/network.h"

namespace nuq {
namespace {

// 9-16-bit codes of a uniform codebook are stored as U16 with an affine map instead of a table of
// up to 65536 levels: level(code) = offset + scale * code, in the weights' units. The in-memory
// table is always computed from the map, so the file reproduces the quantizer bit for bit.
bool stores_grid(const Codebook& codebook, int bits) { return bits == 16 && codebook.uniform_grid().has_value(); }

// The levels of a stored affine map, computed as make_quantize_table computes them.
std::vector<float> grid_levels(double offset, double scale, std::size_t count) {
  std::vector<float> levels(count);
  for (std::size_t k = 0; k < count; ++k) levels[k] = static_cast<float>(offset + scale * double(k));
  return levels;
}


bool is_dense_weight(const std::string& name) { return name.rfind("fc", 0) == 0 && name.find(".weight") != std::string::npos; }

}  // namespace

WeightStats model_stats(const Model& model, NonFinite nonfinite, Backend& backend) {
  WeightStats stats;
  for (const Parameter& p : model.parameters)
    stats = combine(stats, backend.stats(p.values.data(), p.values.size(), p.name, nonfinite));
  return stats;
}

namespace {

// Each parameter's normalisation, in model order; `global` is model_stats(model).
std::vector<TensorNormalisation> normalisers(const Model& model, const WeightStats& global,
                                             Normalisation normalisation, NonFinite nonfinite, Backend& backend,
                                             std::vector<WeightStats>* own_stats = nullptr) {
  NUQ_REQUIRE(global.count > 0, "quantize: the model has no finite parameters");
  if (normalisation == Normalisation::Global)
    NUQ_REQUIRE(global.stddev() > 0.0, "quantize: every parameter has the same value (", global.mean,
                "); zero variance cannot be normalised");
  std::vector<TensorNormalisation> result;
  for (const Parameter& p : model.parameters) {
    const WeightStats own = backend.stats(p.values.data(), p.values.size(), p.name, nonfinite);
    const auto [rows, cols] = matrix_view(p.shape, p.values.size());
    result.push_back(normalise_tensor(normalisation, p.values.data(), rows, cols, global, own, p.name, nonfinite, backend));
    if (own_stats) own_stats->push_back(own);
  }
  return result;
}

WeightRange range_of(const std::vector<TensorNormalisation>& maps) {
  WeightRange range{std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()};
  for (const TensorNormalisation& n : maps) {
    range.min = std::min(range.min, n.normalised.min);
    range.max = std::max(range.max, n.normalised.max);
  }
  return range;
}

}  // namespace

WeightRange normalised_range(const Model& model, Normalisation normalisation, NonFinite nonfinite, Backend& backend) {
  return range_of(normalisers(model, model_stats(model, nonfinite, backend), normalisation, nonfinite, backend));
}

QuantizedModel quantize_model(const Model& model, const Codebook& codebook, PtqReport* report,
                              Normalisation normalisation, NonFinite nonfinite, Backend& backend) {
  const WeightStats global = model_stats(model, nonfinite, backend);
  const int bits = storage_bits(codebook);
  require_storable(normalisation, bits, "quantize");
  std::vector<WeightStats> own;
  const std::vector<TensorNormalisation> maps = normalisers(model, global, normalisation, nonfinite, backend, &own);
  QuantizedModel q{model.architecture, codebook, normalisation, global.mean, global.stddev(), {}, model.dataset};

  PtqReport r;
  r.stats = global;
  r.normalisation = normalisation;
  const WeightRange range = range_of(maps);
  r.w_min = range.min;
  r.w_max = range.max;
  r.xmax = codebook.xmax();
  // Without normalisation the codebook meets the weights' own variance: SQNR_th at that sigma.
  // Zero variance without normalisation: a point mass, no signal against the nearest level's
  // error, so SQNR_th is -infinity (as SQNR_ex is) rather than an error.
  const double sigma = normalisation == Normalisation::None ? global.stddev() : 1.0;
  r.sqnr_th_db = sigma > 0.0 ? laplace_sqnr_db(codebook, sigma) : -std::numeric_limits<double>::infinity();
  QuantizeTotals all;
  for (std::size_t index = 0; index < model.parameters.size(); ++index) {
    const Parameter& p = model.parameters[index];
    // The codebook in the parameter's own units (codes the codebook does not use map to the mean).
    const QuantizeTable table = make_quantize_table(codebook, bits, maps[index].maps);
    const Affine tensor_map =
        normalisation == Normalisation::PerChannel ? Affine{own[index].mean, own[index].stddev()} : maps[index].maps[0];
    const auto [rows, cols] = matrix_view(p.shape, p.values.size());
    PackedCodes codes{rows, cols, bits, std::vector<std::uint8_t>(rows * packed_row_bytes(cols, bits))};
    const QuantizeTotals t = backend.quantize(p.values.data(), rows, cols, table, codes.bytes.data());
    all = combine(all, t);
    const std::size_t finite = p.values.size() - t.nonfinite;
    TensorReport tensor_report{p.name, p.shape, bits, p.values.size() * sizeof(float), 0,
                               finite == 0 ? 0.0 : std::sqrt(t.noise / double(finite)), t.max_error, t.nonfinite};
    QuantizedTensor tensor{p.shape, {std::move(codes), table.levels}, tensor_map.mean, tensor_map.scale};
    tensor_report.bytes_after = tensor.matrix.codes.bytes.size() +
                                (stores_grid(codebook, bits) ? 2 * sizeof(double) : table.levels.size() * sizeof(float));
    q.tensors.emplace(p.name, std::move(tensor));
    r.tensors.push_back(tensor_report);
  }
  r.within = 100.0 * double(all.inside) / double(global.count);
  r.sqnr_ex_db = all.noise > 0.0 ? 10.0 * std::log10(all.signal / all.noise) : std::numeric_limits<double>::infinity();
  if (report) *report = std::move(r);
  return q;
}

Model dequantize_model(const QuantizedModel& quantized) {
  Model model = make_model(quantized.architecture, 0);
  for (Parameter& p : model.parameters) p.values = dequantize(quantized.tensors.at(p.name).matrix);
  return model;
}

std::vector<std::uint8_t> quantized_predictions(const QuantizedModel& quantized, const io::Dataset& data,
                                                Backend& backend) {
  // Conv weights and biases are small: dequantize them. Dense weights stay packed (qgemm).
  Model skeleton = make_model(quantized.architecture, 0);
  for (Parameter& p : skeleton.parameters)
    p.values = is_dense_weight(p.name) ? std::vector<float>{} : dequantize(quantized.tensors.at(p.name).matrix);
  Network network(skeleton, &quantized, &backend);
  return predict(network, data);
}

double quantized_accuracy(const QuantizedModel& quantized, const io::Dataset& data, Backend& backend) {
  return accuracy(quantized_predictions(quantized, data, backend), data);
}

std::vector<float> read_levels_table(const io::Tensor& tensor, std::size_t rows, int bits, const std::string& where) {
  const std::int64_t per_table = std::int64_t{1} << bits;
  const std::vector<std::int64_t> per_row{std::int64_t(rows), per_table};
  if (tensor.shape != per_row) io::require_layout(tensor, io::DType::F32, {1, per_table}, where);
  std::vector<float> levels = io::to_floats(tensor, where);
  for (std::size_t i = 0; i < levels.size(); ++i)
    NUQ_REQUIRE(std::isfinite(levels[i]), where, ": level ", i, " is ", levels[i], "; every level must be finite");
  return levels;
}

void save_quantized(const std::string& path, const QuantizedModel& q) {
  io::TensorFile file;
  nlohmann::json tensors = nlohmann::json::object();
  for (const auto& [name, t] : q.tensors) {
    const PackedCodes& codes = t.matrix.codes;
    io::Tensor packed;
    packed.dtype = io::DType::U8;
    packed.shape = {std::int64_t(codes.rows), std::int64_t(packed_row_bytes(codes.cols, codes.bits))};
    packed.data = codes.bytes;  // LSB-first: at 16 bits exactly the little-endian U16 layout
    if (stores_grid(q.codebook, codes.bits)) {
      packed.dtype = io::DType::U16;
      packed.shape = {std::int64_t(codes.rows), std::int64_t(codes.cols)};
      const UniformGrid& grid = *q.codebook.uniform_grid();
      const double map[2] = {t.mean + t.stddev * grid.first_level, t.stddev * grid.step};
      io::Tensor affine;
      affine.dtype = io::DType::F64;
      affine.shape = {2};
      affine.data.resize(sizeof map);
      std::memcpy(affine.data.data(), map, sizeof map);
      file.tensors[name + ".grid"] = std::move(affine);
    } else {
      const std::int64_t per_table = std::int64_t{1} << codes.bits;
      file.tensors[name + ".codebook"] =
          io::f32_tensor({std::int64_t(t.matrix.levels.size()) / per_table, per_table}, t.matrix.levels);
    }
    file.tensors[name + ".codes"] = std::move(packed);
    tensors[name] = {{"shape", t.shape}, {"rows", codes.rows}, {"cols", codes.cols}, {"bits", codes.bits},
                     {"mean", t.mean}, {"stddev", t.stddev}};
  }
  const nlohmann::json description = {{"architecture", to_string(q.architecture)},
                                      {"codebook", to_json(q.codebook)},
                                      {"normalisation", to_string(q.normalisation)},
                                      {"mean", q.mean},
                                      {"stddev", q.stddev},
                                      {"tensors", tensors}};
  file.metadata["nuq.quantized"] = description.dump();
  file.metadata["nuq.architecture"] = to_string(q.architecture);
  if (!q.dataset.empty()) file.metadata["nuq.dataset"] = q.dataset;
  io::write_safetensors(path, file);
}

QuantizedModel load_quantized(const std::string& path) { return quantized_from_file(io::read_safetensors(path), path); }

QuantizedModel quantized_from_file(const io::TensorFile& file, const std::string& path) {
  const auto meta = file.metadata.find("nuq.quantized");
  NUQ_REQUIRE(meta != file.metadata.end(), path, ": no nuq.quantized in __metadata__ (not a quantized model)");
  nlohmann::json d;
  try {
    d = nlohmann::json::parse(meta->second);
    QuantizedModel q{parse_architecture(d.at("architecture").get<std::string>()),
                     codebook_from_json(d.at("codebook")),
                     parse_normalisation(d.value("normalisation", std::string("global"))),
                     d.at("mean").get<double>(), d.at("stddev").get<double>(), {}, recorded_dataset(file, path)};
    NUQ_REQUIRE(std::isfinite(q.mean) && std::isfinite(q.stddev) && q.stddev > 0.0, path,
                ": mean and stddev must be finite, stddev positive");
    for (const Parameter& p : make_model(q.architecture, 0).parameters) {
      const std::string where = path + ": tensor '" + p.name + "'";
      NUQ_REQUIRE(d.at("tensors").contains(p.name), where, " is missing");
      const auto& info = d.at("tensors").at(p.name);
      const int bits = info.at("bits").get<int>();
      NUQ_REQUIRE(is_packable_bits(bits), where, ": unsupported code width ", bits);
      const auto [rows, cols] = matrix_view(p.shape, p.values.size());
      NUQ_REQUIRE(info.at("shape").get<std::vector<std::int64_t>>() == p.shape &&
                      info.at("rows").get<std::size_t>() == rows && info.at("cols").get<std::size_t>() == cols,
                  where, " has the wrong shape");
      const auto codes = file.tensors.find(p.name + ".codes");
      NUQ_REQUIRE(codes != file.tensors.end(), where, ": missing .codes");
      const std::size_t row_bytes = packed_row_bytes(cols, bits);
      std::vector<float> values;
      if (stores_grid(q.codebook, bits)) {
        io::require_layout(codes->second, io::DType::U16, {std::int64_t(rows), std::int64_t(cols)}, where + ".codes");
        const auto grid = file.tensors.find(p.name + ".grid");
        NUQ_REQUIRE(grid != file.tensors.end() && grid->second.dtype == io::DType::F64 &&
                        grid->second.data.size() == 2 * sizeof(double),
                    where, ".grid: expected F64 [2] (offset, scale)");
        double map[2];
        std::memcpy(map, grid->second.data.data(), sizeof map);
        NUQ_REQUIRE(std::isfinite(map[0]) && std::isfinite(map[1]) && map[1] >= 0.0, where,
                    ".grid: offset and scale must be finite, scale not negative");
        values = grid_levels(map[0], map[1], std::size_t{1} << bits);
      } else {
        io::require_layout(codes->second, io::DType::U8, {std::int64_t(rows), std::int64_t(row_bytes)}, where + ".codes");
        const auto levels = file.tensors.find(p.name + ".codebook");
        NUQ_REQUIRE(levels != file.tensors.end(), where, ": missing .codebook");
        values = read_levels_table(levels->second, rows, bits, where + ".codebook");
      }
      for (float v : values) NUQ_REQUIRE(std::isfinite(v), where, ": a level is not finite");
      const double mean = info.value("mean", q.mean), stddev = info.value("stddev", q.stddev);
      NUQ_REQUIRE(std::isfinite(mean) && std::isfinite(stddev) && stddev >= 0.0, where,
                  ": mean and stddev must be finite, stddev not negative");
      q.tensors.emplace(p.name, QuantizedTensor{p.shape, {{rows, cols, bits, codes->second.data}, values}, mean, stddev});
    }
    return q;
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": nuq.quantized metadata: " + e.what());
  } catch (const Error& e) {  // from parse_architecture, codebook_from_json, ...: name the file
    const std::string message = e.what();
    if (message.rfind(path, 0) == 0) throw;
    throw Error(path + ": nuq.quantized metadata: " + message);
  }
}

}  // namespace nuq
