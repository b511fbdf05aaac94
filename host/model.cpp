#include "nuq/model.h"

#include <cmath>
#include <filesystem>
#include <random>

#include <nlohmann/json.hpp>

#include "nuq/error.h"
#include "nuq/io/dataset.h"
#include "nuq/io/json_parse.h"
#include "nuq/io/safetensors.h"
#include "nuq/io/safetensors_stream.h"
#include "nuq/io/widen.h"
#include "nuq/tensor_pieces.h"

namespace nuq {
namespace {

struct Layout {
  const char* name;
  std::vector<std::int64_t> shape;
};

std::vector<Layout> layout(Architecture architecture) {
  std::vector<Layout> l;
  std::int64_t features = 784;
  if (architecture == Architecture::Cnn) {
    l.push_back({"conv.weight", {16, 1, 3, 3}});
    l.push_back({"conv.bias", {16}});
    features = 16 * 13 * 13;
  }
  l.push_back({"fc1.weight", {512, features}});
  l.push_back({"fc1.bias", {512}});
  l.push_back({"fc2.weight", {512, 512}});
  l.push_back({"fc2.bias", {512}});
  l.push_back({"fc3.weight", {10, 512}});
  l.push_back({"fc3.bias", {10}});
  return l;
}

}  // namespace

std::string to_string(Architecture a) { return a == Architecture::Mlp ? "mlp" : "cnn"; }

Architecture parse_architecture(const std::string& name) {
  if (name == "mlp") return Architecture::Mlp;
  if (name == "cnn") return Architecture::Cnn;
  throw Error("unknown model '" + name + "' (choose mlp or cnn)");
}

Parameter& Model::at(const std::string& name) {
  for (Parameter& p : parameters)
    if (p.name == name) return p;
  throw Error("model has no parameter '" + name + "'");
}

const Parameter& Model::at(const std::string& name) const { return const_cast<Model*>(this)->at(name); }

std::size_t Model::parameter_count() const {
  std::size_t n = 0;
  for (const Parameter& p : parameters) n += p.values.size();
  return n;
}

Model make_model(Architecture architecture, std::uint64_t seed) {
  Model model;
  model.architecture = architecture;
  std::mt19937_64 rng(seed);
  for (const Layout& entry : layout(architecture)) {
    Parameter p{entry.name, entry.shape, std::vector<float>(io::element_count(entry.shape), 0.0f)};
    if (entry.shape.size() > 1) {
      // Glorot uniform: fan_in and fan_out include the receptive field for convolutions.
      const double receptive = static_cast<double>(io::element_count(entry.shape)) / (entry.shape[0] * entry.shape[1]);
      const double fan_out = entry.shape[0] * receptive, fan_in = entry.shape[1] * receptive;
      std::uniform_real_distribution<float> u(-std::sqrt(6.0 / (fan_in + fan_out)),
                                              std::sqrt(6.0 / (fan_in + fan_out)));
      for (float& v : p.values) v = u(rng);
    }
    model.parameters.push_back(std::move(p));
  }
  return model;
}

void save_model(const std::string& path, const Model& model) {
  io::TensorFile file;
  file.metadata["nuq.architecture"] = to_string(model.architecture);
  if (!model.dataset.empty()) file.metadata["nuq.dataset"] = model.dataset;
  if (!model.trained_on.empty()) file.metadata["nuq.trained_on"] = model.trained_on;
  if (!model.training.empty()) file.metadata["nuq.training"] = model.training;
  file.metadata.insert(model.metadata.begin(), model.metadata.end());
  for (const Parameter& p : model.parameters) file.tensors[p.name] = io::f32_tensor(p.shape, p.values);
  io::write_safetensors(path, file);
}

std::map<std::string, std::string> user_metadata(const std::map<std::string, std::string>& metadata) {
  std::map<std::string, std::string> user;
  for (const auto& [key, value] : metadata)
    if (key != "format" && key.rfind("nuq.", 0) != 0) user.emplace(key, value);
  return user;
}

Architecture recorded_architecture(const io::TensorFile& file, const std::string& name, const std::string& otherwise) {
  const auto found = file.metadata.find("nuq.architecture");
  NUQ_REQUIRE(found != file.metadata.end(), name, ": no nuq.architecture in __metadata__ (", otherwise, ")");
  try {
    return parse_architecture(found->second);
  } catch (const Error& e) {
    throw Error(name + ": nuq.architecture: " + e.what());
  }
}

namespace {

// Training checkpoints written before they carried nuq.dataset (2026-12-05) record the data set
// only in their run's settings; a record that cannot be read, or names a data set nuq does not
// know, is no record (eval asks for --dataset, as for any model that names none; bitrate and the
// others, which do not test, go on).
std::string dataset_of_training_run(const std::map<std::string, std::string>& metadata) {
  if (!is_training_checkpoint(metadata)) return "";
  try {
    const nlohmann::json checkpoint = io::parse_json_bounded(metadata.at("nuq.checkpoint"), 16);
    const nlohmann::json* run = checkpoint.is_object() && checkpoint.contains("run") ? &checkpoint.at("run") : nullptr;
    if (run == nullptr || !run->is_object() || !run->contains("dataset") || !run->at("dataset").is_string()) return "";
    const std::string dataset = run->at("dataset").get<std::string>();
    return io::is_known_dataset(dataset) ? dataset : "";
  } catch (const Error&) {
    return "";
  }
}

}  // namespace

std::string recorded_dataset(const io::TensorFile& file, const std::string& name) {
  const auto found = file.metadata.find("nuq.dataset");
  if (found == file.metadata.end()) return dataset_of_training_run(file.metadata);
  NUQ_REQUIRE(io::is_known_dataset(found->second), name, ": nuq.dataset is '", found->second,
              "', expected mnist or fashion");
  return found->second;
}

bool names_a_file(const std::string& input) {
  return !std::filesystem::is_directory(input) && std::filesystem::path(input).extension() != ".json";
}

std::optional<std::map<std::string, std::string>> nuq_network_metadata(const std::string& input) {
  if (!names_a_file(input)) return std::nullopt;
  std::map<std::string, std::string> metadata = io::SafetensorsReader(input).layout().metadata;
  if (!is_nuq_network(input, metadata)) return std::nullopt;
  return metadata;
}

bool is_nuq_network(const std::string& input, const std::map<std::string, std::string>& metadata) {
  return names_a_file(input) && metadata.count("nuq.architecture") != 0;
}

bool is_nuq_network(const std::string& input) { return nuq_network_metadata(input).has_value(); }

io::TensorFile read_network_file(const std::string& path, const std::string& otherwise) {
  const io::SafetensorsReader header(path);
  const Architecture architecture =
      recorded_architecture(io::TensorFile{header.layout().metadata, {}}, path, otherwise);
  std::uint64_t largest = std::uint64_t{64} << 20;
  for (const Layout& entry : layout(architecture)) {
    std::uint64_t count = 1;
    for (const std::int64_t d : entry.shape) count *= std::uint64_t(d);
    largest += 16 * count + std::uint64_t(entry.shape[0]) * (4 << 8) + (std::uint64_t{4} << 16);
  }
  NUQ_REQUIRE(header.file_size() <= largest, path, ": ", header.file_size(), " bytes, more than a file of nuq's ",
              to_string(architecture), " can hold (", largest, "); not one of nuq's networks (its tensors: `nuq "
              "inspect`)");
  return io::read_safetensors(path, largest);
}

bool is_training_checkpoint(const std::map<std::string, std::string>& metadata) {
  // Quantized files before format version 1 also used nuq.checkpoint, but never beside an architecture.
  return metadata.count("nuq.checkpoint") > 0 && metadata.count("nuq.architecture") > 0 && metadata.count("nuq.quantized") == 0;
}

Model load_model(const std::string& path, NonFinite nonfinite) {
  return model_from_file(read_network_file(path, "not a model written by nuq train"), path, nonfinite);
}

Model model_from_file(const io::TensorFile& file, const std::string& path, NonFinite nonfinite) {
  NUQ_REQUIRE(!file.metadata.count("nuq.quantized"), path, ": a quantized model; `nuq dequantize` it for its FP32 "
              "weights (`nuq eval` reads it as it is)");
  Model model;
  model.architecture = recorded_architecture(file, path, "not a model written by nuq train");
  model.dataset = recorded_dataset(file, path);
  if (const auto where = file.metadata.find("nuq.trained_on"); where != file.metadata.end()) model.trained_on = where->second;
  if (const auto where = file.metadata.find("nuq.training"); where != file.metadata.end()) model.training = where->second;
  model.metadata = user_metadata(file.metadata);
  for (const Layout& entry : layout(model.architecture)) {
    const auto it = file.tensors.find(entry.name);
    NUQ_REQUIRE(it != file.tensors.end(), path, ": missing tensor '", entry.name, "'");
    NUQ_REQUIRE(it->second.shape == entry.shape, path, ": tensor '", entry.name,
                "' has the wrong shape for a ", to_string(model.architecture));
    // F16 and BF16 (a model saved in half precision, by nuq.save say) widen exactly to the F32 it runs in.
    Parameter p{entry.name, entry.shape, io::widened(it->second, path + ": " + entry.name), it->second.dtype};
    for (std::size_t i = 0; i < p.values.size() && nonfinite == NonFinite::Reject; ++i)
      NUQ_REQUIRE(std::isfinite(p.values[i]), path, ": tensor '", entry.name, "' element ", element_place(p.shape, i),
                  " is ", p.values[i], "; `nuq quantize --nonfinite saturate` takes +-Inf to the outermost levels and "
                  "NaN to the level of the cell holding the mean instead");
    model.parameters.push_back(std::move(p));
  }
  return model;
}

}  // namespace nuq
