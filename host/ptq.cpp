#include "nuq/ptq.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>

#include <nlohmann/json.hpp>

#include "nuq/error.h"
#include "nuq/grouped.h"
#include "nuq/quantize_table.h"
#include "nuq/io/safetensors.h"
#include "nuq/io/widen.h"
#include "nuq/laplace.h"
#include "nuq/network.h"
#include "nuq/quantize_in_memory.h"
#include "nuq/quantized_file.h"
#include "nuq/tensor_pieces.h"

namespace nuq {
namespace {

bool is_dense_weight(const std::string& name) { return name.rfind("fc", 0) == 0 && name.find(".weight") != std::string::npos; }

}  // namespace

void add_measures(TensorReport& t, const Codebook& codebook, const QuantizeTotals& totals, const WeightStats& own,
                  double fourth, bool per_row, const Affine& map) {
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN(), kInf = std::numeric_limits<double>::infinity();
  const std::size_t finite = own.count;
  t.sqnr_ex_db = totals.noise > 0.0 ? 10.0 * std::log10(totals.signal / totals.noise) : kInf;
  t.within = finite ? 100.0 * double(totals.inside) / double(finite) : 0.0;
  // The fourth moment's terms are of (w - mean) / sigma, so its mean is the kurtosis itself.
  t.excess_kurtosis = has_spread(own) ? fourth / double(finite) - 3.0 : kNaN;
  // The design's SQNR on a Laplacian of the tensor's own normalised sigma (per channel and in
  // groups each row is normalised to 1). A map of scale 0 (per row: a tensor without spread, whose
  // rows are each constant) stores the weights exactly, and a tensor of no finite weight has none
  // to quantize: the design does not apply (NaN). Weights without spread met as they are, or by
  // another's map: no signal, some distortion, -inf.
  const bool exact = per_row ? !has_spread(own) : !(map.scale > 0.0);
  const double sigma = per_row ? 1.0 : own.stddev() / map.scale;
  t.sqnr_th_db = finite == 0 || exact              ? kNaN
                 : sigma == 0.0                    ? -kInf
                 : sigma > 1e-100 && sigma < 1e100 ? laplace_sqnr_db(codebook, sigma)
                                                   : kNaN;
}

namespace {

// Each parameter's statistics, in model order, as the other paths take a checkpoint's tensor's
// (its pieces combined in order: tensor_stats), so that a tensor's recorded mean and stddev (and
// per-tensor codes) are the same bits whatever the path.
std::vector<WeightStats> parameter_stats(const Model& model, NonFinite nonfinite, Backend& backend) {
  std::vector<WeightStats> own;
  InMemoryOptions options;
  options.nonfinite = nonfinite;
  for (const Parameter& p : model.parameters) {
    const auto [rows, cols] = matrix_view(p.shape, p.values.size());
    NUQ_ASSERT(rows * cols == p.values.size(), p.name, ": a shape of ", rows * cols, " values holds ", p.values.size());
    own.push_back(tensor_stats({p.values.data(), io::DType::F32, p.shape, p.name}, rows, cols, options, backend));
    require_finite_weights(own.back(), p.name);
  }
  return own;
}

// The parameters' statistics joined in name order, as the other paths join a checkpoint's
// (checkpoint_stream.h, Python's quantize_state_dict): the same bits whatever the order.
WeightStats joined(const Model& model, const std::vector<WeightStats>& own) {
  std::map<std::string, const WeightStats*> by_name;
  for (std::size_t i = 0; i < own.size(); ++i) by_name[model.parameters[i].name] = &own[i];
  WeightStats stats;
  for (const auto& [name, s] : by_name) stats = combine(stats, *s);
  return stats;
}

// Each parameter's normalisation, in model order; `own` its statistics (parameter_stats), `global`
// theirs joined.
std::vector<TensorNormalisation> normalisers(const Model& model, const std::vector<WeightStats>& own,
                                             const WeightStats& global, Normalisation normalisation,
                                             NonFinite nonfinite, Backend& backend) {
  NUQ_REQUIRE(global.count > 0, "quantize: the model has no finite parameters");
  if (normalisation == Normalisation::Global)
    NUQ_REQUIRE(global.stddev() > 0.0, "quantize: every parameter has the same value (", global.mean,
                "); zero variance cannot be normalised");
  std::vector<TensorNormalisation> result;
  for (std::size_t i = 0; i < model.parameters.size(); ++i) {
    const Parameter& p = model.parameters[i];
    const auto [rows, cols] = matrix_view(p.shape, p.values.size());
    result.push_back(
        normalise_tensor(normalisation, p.values.data(), rows, cols, global, own[i], p.name, nonfinite, backend));
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

WeightStats model_stats(const Model& model, NonFinite nonfinite, Backend& backend) {
  return joined(model, parameter_stats(model, nonfinite, backend));
}

WeightRange normalised_range(const Model& model, Normalisation normalisation, NonFinite nonfinite, Backend& backend) {
  const std::vector<WeightStats> own = parameter_stats(model, nonfinite, backend);
  return range_of(normalisers(model, own, joined(model, own), normalisation, nonfinite, backend));
}

QuantizedModel quantize_model(const Model& model, const Codebook& codebook, PtqReport* report,
                              Normalisation normalisation, NonFinite nonfinite, Backend& backend) {
  const std::vector<WeightStats> own = parameter_stats(model, nonfinite, backend);
  const WeightStats global = joined(model, own);
  const int bits = storage_bits(codebook);
  require_storable(normalisation, bits, "quantize");
  const std::vector<TensorNormalisation> maps = normalisers(model, own, global, normalisation, nonfinite, backend);
  QuantizedModel q{model.architecture, codebook, normalisation, global.mean, global.stddev(), {}, model.dataset};
  q.trained_on = model.trained_on;
  q.training = model.training;
  q.metadata = model.metadata;
  for (const Parameter& p : model.parameters)
    if (p.stored_as != io::DType::F32) q.stored_as[p.name] = p.stored_as;

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
    const WeightStats& mine = own[index];
    const double fourth =
        has_spread(mine) ? fourth_moment(p.values.data(), WeightType::F32, p.values.size(), mine.mean, mine.stddev()) : 0.0;
    add_measures(tensor_report, codebook, t, mine, fourth, normalisation == Normalisation::PerChannel,
                 maps[index].maps[0]);
    q.tensors.emplace(p.name, std::move(tensor));
    r.tensors.push_back(tensor_report);
  }
  r.within = 100.0 * double(all.inside) / double(global.count);
  r.sqnr_ex_db = all.noise > 0.0 ? 10.0 * std::log10(all.signal / all.noise) : std::numeric_limits<double>::infinity();
  if (report) *report = std::move(r);
  return q;
}

std::vector<float> dequantize(const QuantizedTensor& tensor) {
  if (!tensor.group_size) return dequantize(tensor.matrix);
  check_grouped(tensor, "dequantize");
  std::vector<float> values(tensor.matrix.codes.rows * tensor.group_size);
  dequantize_groups(tensor, 0, tensor.matrix.codes.rows, values.data());
  return values;
}

void dequantize_rows(const QuantizedTensor& tensor, std::size_t first, std::size_t count, float* out) {
  const PackedCodes& codes = tensor.matrix.codes;
  NUQ_ASSERT(first <= codes.rows && count <= codes.rows - first, "dequantize_rows: rows ", first, " + ", count,
             " of ", codes.rows);
  if (tensor.group_size) {
    check_grouped(tensor, "dequantize");
    dequantize_groups(tensor, first, count, out);
    return;
  }
  dequantize_rows(tensor.matrix, first, count, out);
}

std::vector<float> QuantizedModel::values_of(const std::string& name) const {
  const auto kept = plain.find(name);
  return kept != plain.end() ? kept->second : dequantize(tensors.at(name));
}

Model dequantize_model(const QuantizedModel& quantized) {
  Model model = make_model(quantized.architecture, 0);
  for (Parameter& p : model.parameters) p.values = quantized.values_of(p.name);
  model.dataset = quantized.dataset;
  model.trained_on = quantized.trained_on;
  model.training = quantized.training;
  model.metadata = quantized.metadata;
  return model;
}

std::vector<std::uint8_t> quantized_predictions(const QuantizedModel& quantized, const io::Dataset& data,
                                                Backend& backend) {
  // Conv weights and biases are small: dequantize them. Dense weights stay packed (qgemm), or
  // as the file kept them (the network reads those from `quantized`).
  Model skeleton = make_model(quantized.architecture, 0);
  for (Parameter& p : skeleton.parameters)
    p.values = is_dense_weight(p.name) ? std::vector<float>{} : quantized.values_of(p.name);
  Network network(skeleton, &quantized, &backend);
  return predict(network, data);
}

double quantized_accuracy(const QuantizedModel& quantized, const io::Dataset& data, Backend& backend) {
  return accuracy(quantized_predictions(quantized, data, backend), data);
}

void save_quantized(const std::string& path, const QuantizedModel& q) {
  QuantizedCheckpoint file;
  file.codebook = q.codebook;
  file.normalisation = q.normalisation;
  file.mean = q.mean;
  file.stddev = q.stddev;
  file.quantized = q.tensors;
  for (const auto& [name, tensor] : q.tensors) {
    const auto stored = q.stored_as.find(name);
    file.dtypes[name] = stored == q.stored_as.end() ? io::DType::F32 : stored->second;
  }
  if (!q.plain.empty())
    for (const Parameter& p : make_model(q.architecture, 0).parameters)  // (for the shapes)
      if (const auto kept = q.plain.find(p.name); kept != q.plain.end()) file.copied[p.name] = io::f32_tensor(p.shape, kept->second);
  file.metadata["nuq.architecture"] = to_string(q.architecture);
  if (!q.dataset.empty()) file.metadata["nuq.dataset"] = q.dataset;
  if (!q.trained_on.empty()) file.metadata["nuq.trained_on"] = q.trained_on;
  if (!q.training.empty()) file.metadata["nuq.training"] = q.training;
  file.metadata.insert(q.metadata.begin(), q.metadata.end());
  io::write_safetensors(path, to_tensor_file(file, path));
}

QuantizedModel load_quantized(const std::string& path) {
  return quantized_from_file(read_network_file(path, "quantized, but not one of nuq's networks"), path);
}

QuantizedModel quantized_from_file(const io::TensorFile& file, const std::string& path) {
  QuantizedCheckpoint c = read_quantized_checkpoint(file, path);
  const Architecture architecture = recorded_architecture(file, path, "quantized, but not one of nuq's networks");
  QuantizedModel q{architecture, c.codebook, c.normalisation, c.mean, c.stddev, {},
                   recorded_dataset(file, path)};
  if (const auto where = file.metadata.find("nuq.trained_on"); where != file.metadata.end()) q.trained_on = where->second;
  if (const auto where = file.metadata.find("nuq.training"); where != file.metadata.end()) q.training = where->second;
  q.metadata = user_metadata(file.metadata);
  for (const Parameter& p : make_model(q.architecture, 0).parameters) {
    const std::string where = path + ": tensor '" + p.name + "'";
    const auto found = c.quantized.find(p.name);
    const auto kept = c.copied.find(p.name);
    if (found == c.quantized.end() && kept != c.copied.end()) {  // kept as it was by the file's writer
      NUQ_REQUIRE(io::is_floating(kept->second.dtype) && kept->second.shape == p.shape, where, " is kept as ",
                  io::to_string(kept->second.dtype), " [", io::shape_text(kept->second.shape), "], not the ",
                  io::shape_text(p.shape), " floats a ", to_string(q.architecture), " needs");
      std::vector<float> values = io::widened(kept->second, where);
      for (std::size_t i = 0; i < values.size(); ++i)
        NUQ_REQUIRE(std::isfinite(values[i]), where, " element ", element_place(p.shape, i), " is ", values[i],
                    "; a network's weights must be finite");
      q.plain.emplace(p.name, std::move(values));
      continue;
    }
    NUQ_REQUIRE(found != c.quantized.end(), where, " is missing");
    NUQ_REQUIRE(found->second.shape == p.shape, where, " has the wrong shape for a ", to_string(q.architecture));
    NUQ_REQUIRE(!found->second.group_size, where, " is quantized in groups (--group-size), which nuq's networks do not run from; `nuq dequantize` it "
                "and evaluate the restored model");
    q.tensors.emplace(p.name, std::move(found->second));
  }
  return q;
}

}  // namespace nuq
