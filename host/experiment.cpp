#include "nuq/experiment.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <ostream>

#include <nlohmann/json.hpp>

#include "nuq/design.h"
#include "nuq/error.h"
#include "nuq/io/dataset.h"
#include "nuq/network.h"

namespace nuq {

std::string cached_model_path(const std::string& out_dir, const std::string& dataset, const std::string& model,
                              const TrainConfig& train) {
  const std::string epochs = train.epochs == TrainConfig{}.epochs ? "" : "-epochs" + std::to_string(train.epochs);
  return (std::filesystem::path(out_dir) / "models" /
          (dataset + "-" + model + "-seed" + std::to_string(train.seed) + epochs + ".safetensors"))
      .string();
}

TrainedModel load_or_train(const std::string& dataset, const std::string& model_name, const ExperimentOptions& o,
                           std::ostream* progress) {
  const std::filesystem::path path = cached_model_path(o.out_dir, dataset, model_name, o.train);
  TrainedModel result;
  result.file = path.string();
  const std::string asked = training_record(o.train);
  if (!o.retrain && std::filesystem::exists(path)) {
    try {
      result.model = load_model(path.string());
    } catch (const Error& e) {  // a damaged cache: what to do about it
      throw Error(std::string(e.what()) + " (the cached model of this run: remove it, or give --retrain)");
    }
    if (result.model.dataset.empty()) result.model.dataset = dataset;  // cached before nuq.dataset existed
    // A file put under this name by hand (or a copy of another run's) would be reported as this model.
    NUQ_REQUIRE(result.model.dataset == dataset && to_string(result.model.architecture) == model_name, path.string(),
                ": holds a ", result.model.dataset, " ", to_string(result.model.architecture), ", not the ", dataset,
                " ", model_name, " its name says; remove it or give --retrain");
    // Reported as trained with this run's settings, it must have been (a model cached before
    // nuq.training existed is taken as it is).
    if (result.model.training.empty() || result.model.training == asked) {
      if (progress) *progress << "loading " << path.string() << " (--retrain to train anew)\n";
      return result;
    }
    if (progress)
      *progress << path.string() << " was trained with " << result.model.training << "; this run asks for " << asked
                << ": training anew\n";
  }
  const io::Dataset train_set = io::load_network_split(io::dataset_dir(o.data_root, dataset), "train");
  if (progress) *progress << "training the " << dataset << " " << model_name << " (" << o.train.epochs << " epochs)\n";
  result.model = make_model(parse_architecture(model_name), o.train.seed);
  result.model.dataset = dataset;
  std::filesystem::create_directories(path.parent_path());
  // A run killed while training picks up after its last finished epoch (unless --retrain).
  TrainConfig config = o.train;
  config.dataset = dataset;
  config.checkpoint = path.string() + ".checkpoint";
  config.resume = !o.retrain;
  result.training = train(result.model, train_set, config, progress);
  result.trained = true;
  save_model(path.string(), result.model);
  std::filesystem::remove(config.checkpoint);
  return result;
}

nlohmann::json training_settings_json(const std::string& record) {
  if (record.empty()) return nullptr;
  nlohmann::json j = nlohmann::json::parse(record, nullptr, false);
  return j.is_discarded() ? nlohmann::json(record) : j;
}

ExperimentResult run_experiment(const std::string& dataset, const std::string& model_name,
                                const ExperimentOptions& options, std::ostream* progress) {
  const auto start = std::chrono::steady_clock::now();
  ExperimentResult result;
  result.dataset = dataset;
  result.model = model_name;
  result.seed = options.train.seed;
  const io::Dataset test_set = io::load_network_split(io::dataset_dir(options.data_root, dataset), "t10k");
  TrainedModel trained = load_or_train(dataset, model_name, options, progress);
  Model& model = trained.model;
  result.model_file = trained.file;
  result.trained = trained.trained;
  result.trained_on = model.trained_on;
  result.training_settings = model.training;
  result.training = std::move(trained.training);
  result.parameters = model.parameter_count();
  result.fp32_accuracy = accuracy(model, test_set);
  for (const paper::Baseline& b : paper::baselines())
    if (b.dataset == dataset && b.model == model_name) result.published_fp32_accuracy = b.accuracy;
  Backend& backend = options.weights_backend();
  const WeightStats stats = model_stats(model, NonFinite::Reject, backend);
  result.w_min = (stats.min - stats.mean) / stats.stddev();
  result.w_max = (stats.max - stats.mean) / stats.stddev();
  if (progress) {
    char line[160];
    std::snprintf(line, sizeof line, "FP32 accuracy %.2f%%, normalised weights in [%.4f, %.4f]\n",
                  result.fp32_accuracy, result.w_min, result.w_max);
    *progress << line;
  }
  const std::filesystem::path quantized_dir = std::filesystem::path(options.out_dir) / "quantized";
  std::filesystem::create_directories(quantized_dir);
  // One case: design at x_max, quantize, write, read back and evaluate from the file (what a user
  // would ship is what is measured).
  auto run_case = [&](const paper::PublishedTable& table, std::size_t index, const Support& support,
                      Normalisation normalisation, const std::string& control) {
    const paper::PublishedCase& published = table.cases[index];
    CaseResult c;
    c.table = table.id;
    c.title = table.title;
    c.case_label = published.label;
    c.region = describe(support);
    c.case_index = index;
    c.control = control;
    c.method = table.method;
    c.published = published;
    DesignSpec spec;
    spec.method = table.method;
    spec.bits = table.bits;
    const double xmax = resolve_xmax(support, normalised_range(model, normalisation, NonFinite::Reject, backend));
    const QuantizedModel quantized =
        quantize_model(model, codebook_at_xmax(spec, xmax), &c.ptq, normalisation, NonFinite::Reject, backend);
    c.quantized_file = (quantized_dir / (dataset + "-" + model_name + "-seed" + std::to_string(result.seed) + "-table" +
                                         table.id + "-" + std::to_string(index + 1) + "-" + to_string(table.method) +
                                         (control.empty() ? "" : "-control-" + to_string(normalisation)) +
                                         ".safetensors"))
                           .string();
    save_quantized(c.quantized_file, quantized);
    c.accuracy = quantized_accuracy(load_quantized(c.quantized_file), test_set, backend);
    if (progress) {
      char line[240];
      std::snprintf(line, sizeof line, "  Table %-3s %-6s %-22s x_max %.4f  SQNR_ex %7.4f dB  accuracy %.2f%%%s%s\n",
                    c.table.c_str(), c.case_label.c_str(), c.region.c_str(), c.ptq.xmax, c.ptq.sqnr_ex_db, c.accuracy,
                    control.empty() ? "" : "  control: ", control.c_str());
      *progress << line << std::flush;
    }
    return c;
  };
  for (const paper::PublishedTable& table : paper::tables()) {
    if (table.dataset != dataset || table.model != model_name) continue;
    for (std::size_t i = 0; i < table.cases.size(); ++i)
      result.cases.push_back(run_case(table, i, table.cases[i].support, Normalisation::Global, ""));
  }
  for (const paper::PublishedTable& table : paper::tables()) {
    if (table.dataset != dataset || table.model != model_name) continue;
    for (std::size_t i = 0; i < table.cases.size(); ++i) {
      const Support& support = table.cases[i].support;
      if (depends_on_extremes(support) && dataset == "mnist" && model_name == "mlp") {
        const Support at_paper{SupportRule::Fixed, resolve_xmax(support, paper::kMnistMlpRange), 1.0};
        result.controls.push_back(run_case(table, i, at_paper, Normalisation::Global, "x_max from the paper's weights"));
      }
      if (model_name == "cnn")
        for (Normalisation n : {Normalisation::PerTensor, Normalisation::PerChannel})
          result.controls.push_back(run_case(table, i, support, n, to_string(n) + " normalisation"));
    }
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

std::string display_name(const ExperimentResult& r) {
  return std::string(r.dataset == "mnist" ? "MNIST" : "Fashion-MNIST") + " " + (r.model == "mlp" ? "MLP" : "CNN");
}

nlohmann::json to_json(const ExperimentResult& r) {
  auto optional = [](const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(); };
  auto case_json = [&](const CaseResult& c) {
    nlohmann::json tensors = nlohmann::json::array();
    for (const TensorReport& t : c.ptq.tensors)
      tensors.push_back({{"name", t.name}, {"shape", t.shape}, {"bits", t.bits}, {"bytes_before", t.bytes_before},
                         {"bytes_after", t.bytes_after}, {"rmse", t.rmse}, {"max_error", t.max_error}});
    return nlohmann::json{{"table", c.table}, {"case", c.case_label}, {"region", c.region}, {"control", c.control},
                     {"method", to_string(c.method)}, {"xmax", c.ptq.xmax},
                     {"ours", {{"sqnr_ex_db", c.ptq.sqnr_ex_db}, {"sqnr_th_db", c.ptq.sqnr_th_db},
                               {"accuracy", c.accuracy}, {"within", c.ptq.within}}},
                     {"paper", {{"sqnr_ex_db", optional(c.published.sqnr_ex)}, {"sqnr_th_db", optional(c.published.sqnr_th)},
                                {"accuracy", optional(c.published.accuracy)}, {"within", optional(c.published.within)}}},
                     {"file", c.quantized_file}, {"tensors", tensors}};
  };
  nlohmann::json cases = nlohmann::json::array(), controls = nlohmann::json::array();
  for (const CaseResult& c : r.cases) cases.push_back(case_json(c));
  for (const CaseResult& c : r.controls) controls.push_back(case_json(c));
  return {{"dataset", r.dataset}, {"model", r.model}, {"seed", r.seed}, {"parameters", r.parameters},
          {"fp32_accuracy", r.fp32_accuracy}, {"paper_fp32_accuracy", optional(r.published_fp32_accuracy)},
          {"w_min", r.w_min}, {"w_max", r.w_max}, {"trained", r.trained}, {"trained_on", r.trained_on},
          {"training_settings", training_settings_json(r.training_settings)},
          {"model_file", r.model_file}, {"training", r.training},
          {"seconds", r.seconds}, {"cases", cases}, {"controls", controls}};
}

}  // namespace nuq
