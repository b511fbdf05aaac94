// nuq train, nuq quantize and nuq eval: the pieces of `nuq reproduce`, one model at a time.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <iostream>
#include <map>
#include <memory>
#include <regex>

#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "nuq/checkpoint.h"
#include "nuq/checkpoint_stream.h"
#include "nuq/design.h"
#include "nuq/error.h"
#include "nuq/io/atomic_file.h"
#include "nuq/io/dataset.h"
#include "nuq/io/file_checks.h"
#include "nuq/io/safetensors.h"
#include "nuq/io/safetensors_stream.h"
#include "nuq/network.h"
#include "nuq/ptq.h"
#include "nuq/quantize_table.h"
#include "nuq/sharded_checkpoint.h"
#include "nuq/train.h"
#include "nuq/terminal_text.h"
#include "table.h"
#include "json_text.h"

namespace nuq::cli {
namespace {

struct TrainOptions {
  std::string dataset = "mnist", model = "mlp", data, output;
  int epochs = 10;
  std::uint64_t seed = 1;
  bool json = false, resume = false;
};

// The files of a data folder (none where it cannot be listed): an output must never be one of them.
std::vector<std::string> data_files(const std::string& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) files.push_back(entry.path().string());
  return files;
}

void run_train(const TrainOptions& o) {
  const std::string dir = io::dataset_dir(io::data_root(o.data), o.dataset);
  {  // before the minutes of training, not after; never over the data it reads
    const std::vector<std::string> inputs = data_files(dir);
    io::require_output_path(o.output, inputs, "--output");
    io::require_output_path(o.output + ".checkpoint", inputs, "--output's checkpoint");
  }
  const io::Dataset train_set = io::load_network_split(dir, "train"), test_set = io::load_network_split(dir, "t10k");
  Model model = make_model(parse_architecture(o.model), o.seed);
  model.dataset = o.dataset;
  TrainConfig config;
  config.epochs = o.epochs;
  config.seed = o.seed;
  config.dataset = o.dataset;
  config.checkpoint = o.output + ".checkpoint";  // after every epoch; removed once the model is saved
  config.resume = o.resume;
  // Said before the minutes of training: a run that does not do what the flag suggests.
  std::error_code error;
  const bool killed_run = std::filesystem::exists(config.checkpoint, error);
  if (o.resume && !killed_run)
    std::cerr << "nuq: no checkpoint " << config.checkpoint << " to resume from: training from the first epoch\n";
  if (!o.resume && killed_run)
    std::cerr << "nuq: warning: " << config.checkpoint << " holds a killed run's progress; this run trains anew and "
              << "replaces it after its first epoch (--resume continues it instead)\n";
  const std::vector<EpochLog> log = train(model, train_set, config, &std::cerr);
  save_model(o.output, model);
  std::filesystem::remove(config.checkpoint);
  const double test_accuracy = accuracy(model, test_set);
  if (o.json) {
    std::cout << json_text(nlohmann::json{{"output", o.output}, {"parameters", model.parameter_count()}, {"test_accuracy", test_accuracy}, {"epochs", log}}) << '\n';
  } else {
    std::cout << "test accuracy " << fixed(test_accuracy, 2) << "% (" << model.parameter_count() << " parameters), saved "
              << terminal_text(o.output) << '\n';
  }
}

struct QuantizeOptions {
  std::string input, output, method = "sptq", support, normalisation = "global", nonfinite = "error", device = "auto",
      skip;
  bool quantize_vectors = false, normalisation_given = false;
  std::size_t group_size = 0;
  int bits = 2;
  std::optional<double> xmax;
  double alpha = 1.0, mu = 255.0;
  bool json = false;
};

// What a tensor really costs: its codes and tables, per weight.
double bits_per_weight(const TensorReport& t) {
  const std::size_t count = io::element_count(t.shape);
  return count ? 8.0 * double(t.bytes_after) / double(count) : 0.0;
}

// The tensors a run reports, in its order: pointers, as a checkpoint's report may list a million.
using TensorReports = std::vector<const TensorReport*>;

// Every quantized tensor's line: nuq's own models and checkpoints alike (docs/report.md). Printed
// a row at a time.
void print_tensor_table(const TensorReports& tensors) {
  print_table(std::cout,
              {"tensor", "shape", "bits/weight", "SQNR_ex dB", "SQNR_th dB", "inside %", "excess kurtosis", "RMSE",
               "max error"},
              tensors, [](const TensorReport* t) -> std::vector<std::string> {
                return {t->name, io::shape_text(t->shape), fixed(bits_per_weight(*t), 3), fixed(t->sqnr_ex_db, 3),
                        fixed(t->sqnr_th_db, 3), fixed(t->within, 2), fixed(t->excess_kurtosis, 2),
                        significant(t->rmse, 6), significant(t->max_error, 6)};
              });
}

// The summary's SQNR_ex is of all the weights together, so the largest tensors decide it: the
// weakest tensor beside the median says at once whether a few tensors came out far worse (a
// tensor of small scale under global normalisation, a 2-bit embedding). Nothing for one tensor.
std::string weakest_tensor_text(const TensorReports& tensors) {
  if (tensors.size() < 2) return "";
  const auto weakest = std::min_element(tensors.begin(), tensors.end(), [](const TensorReport* a, const TensorReport* b) {
    return a->sqnr_ex_db < b->sqnr_ex_db;
  });
  std::vector<double> values;
  for (const TensorReport* t : tensors) values.push_back(t->sqnr_ex_db);
  std::sort(values.begin(), values.end());
  const std::size_t half = values.size() / 2;
  const double median = values.size() % 2 ? values[half] : 0.5 * (values[half - 1] + values[half]);
  return "lowest SQNR_ex " + fixed((*weakest)->sqnr_ex_db, 3) + " dB: " + terminal_text((*weakest)->name) +
         " (median of " + std::to_string(tensors.size()) + " tensors " + fixed(median, 3) + " dB)\n";
}

nlohmann::json tensor_json(const TensorReport& t) {
  return {{"name", t.name}, {"shape", t.shape}, {"bits", t.bits}, {"bits_per_weight", bits_per_weight(t)},
          {"bytes_before", t.bytes_before}, {"bytes_after", t.bytes_after}, {"rmse", t.rmse},
          {"max_error", t.max_error}, {"nonfinite", t.nonfinite}, {"sqnr_ex_db", t.sqnr_ex_db},
          {"sqnr_th_db", t.sqnr_th_db}, {"within", t.within}, {"excess_kurtosis", t.excess_kurtosis}};
}

// With --nonfinite saturate: how many NaN/Inf weights each tensor had (nothing when none had any).
void print_saturated(const TensorReports& tensors) {
  std::uint64_t total = 0;
  for (const TensorReport* t : tensors) total += t->nonfinite;
  if (total == 0) return;
  std::cout << total << " non-finite weight(s) saturated (left out of every statistic):";
  for (const TensorReport* t : tensors)
    if (t->nonfinite) std::cout << " " << terminal_text(t->name) << " " << t->nonfinite;
  std::cout << '\n';
}

// The sizes of the files as written, headers and copied tensors included, and the width the codes
// are really stored at when the design's is not a packable one.
struct SizeReport {
  std::uintmax_t input = 0, output = 0;
  int design_bits = 0, stored_bits = 0;
};

SizeReport sizes(const QuantizeOptions& o, const Codebook& codebook) {
  return {std::filesystem::file_size(o.input), std::filesystem::file_size(o.output), codebook.bits(),
          storage_bits(codebook)};
}

void add_sizes(nlohmann::json& j, const SizeReport& s) {
  j["input_bytes"] = s.input;
  j["output_bytes"] = s.output;
  j["design_bits"] = s.design_bits;
  j["stored_bits"] = s.stored_bits;
}

std::string size_text(const SizeReport& s) {
  // Tiny tensors can come out larger than they went in (a codebook and a description each).
  const bool smaller = s.output <= s.input;
  std::string text = "files: " + std::to_string(s.input) + " -> " + std::to_string(s.output) + " bytes (" +
                     fixed(smaller ? double(s.input) / double(s.output) : double(s.output) / double(s.input), 2) +
                     (smaller ? "x smaller" : "x larger") + ", headers included)";
  if (s.design_bits != s.stored_bits)
    text += "; the " + std::to_string(s.design_bits) + "-bit design is stored in " + std::to_string(s.stored_bits) +
            "-bit codes";
  return text;
}

// Any other checkpoint (a file, a folder of shards or an index), streamed with bounded memory.
void run_quantize_checkpoint(const QuantizeOptions& o, const Codebook& codebook, Normalisation normalisation,
                             NonFinite nonfinite, Backend& backend) {
  StreamOptions options;
  options.normalisation = normalisation;
  options.nonfinite = nonfinite;
  options.quantize_vectors = o.quantize_vectors;
  options.group_size = o.group_size;
  if (!o.skip.empty()) options.skip = skip_pattern(o.skip);
  if (isatty(STDERR_FILENO)) options.progress = &std::cerr;
  options.warnings = &std::cerr;
  warn_of_checkpoint(o.input);
  const StreamReport report = quantize_checkpoint_files(o.input, o.output, codebook, options, backend);
  const SizeReport size{report.input_bytes, report.output_bytes, codebook.bits(), storage_bits(codebook)};
  const double rate = report.seconds > 0.0 ? double(report.input_bytes) / report.seconds / 1e9 : 0.0;
  if (o.json) {
    nlohmann::json j{{"outputs", report.outputs}, {"device", backend.name()}, {"codebook", to_json(codebook)},
                     {"normalisation", to_string(normalisation)}, {"within", report.within},
                     {"sqnr_ex_db", report.sqnr_ex_db}, {"kept", report.kept}, {"warnings", report.warnings},
                     {"seconds", report.seconds}, {"statistics_seconds", report.statistics_seconds},
                     {"quantize_seconds", report.quantize_seconds}, {"gb_per_second", rate}};
    add_sizes(j, size);
    const auto element = [&](std::size_t i) {
      nlohmann::json t = tensor_json(report.tensors[i].tensor);
      t["file"] = report.tensors[i].file;
      return t;
    };
    print_json(std::cout, std::move(j), {{"tensors", {report.tensors.size(), element}}});
    return;
  }
  TensorReports tensors;
  for (const StreamTensorReport& t : report.tensors) tensors.push_back(&t.tensor);
  print_tensor_table(tensors);
  std::cout << "\n"
            << to_string(codebook.provenance().method) << ", " << codebook.size() << " levels, normalisation "
            << to_string(normalisation) << ": SQNR_ex " << fixed(report.sqnr_ex_db, 4) << " dB, "
            << fixed(report.within, 3) << "% inside; " << report.tensors.size() << " tensor(s) quantized, "
            << report.kept.size() << " kept as they were (excess kurtosis: 3 for the Laplacian the design assumes)\n"
            << weakest_tensor_text(tensors) << size_text(size) << "; " << fixed(report.seconds, 1) << " s (statistics " << fixed(report.statistics_seconds, 1)
            << " s, quantizing " << fixed(report.quantize_seconds, 1) << " s), " << fixed(rate, 2) << " GB/s; saved "
            << report.outputs.size() << " file(s) under " << terminal_text(o.output) << " (on " << backend.name()
            << ")\n";
  print_saturated(tensors);
}

void run_quantize(const QuantizeOptions& o) {
  const NonFinite nonfinite = o.nonfinite == "saturate" ? NonFinite::Skip : NonFinite::Reject;
  const auto network_metadata = nuq_network_metadata(o.input);
  const bool network = network_metadata.has_value();
  // Said first: its options (--skip, --group-size) would otherwise be refused for another reason.
  NUQ_REQUIRE(!network || !is_training_checkpoint(*network_metadata), o.input,
              ": a training checkpoint (nuq train's progress: the parameters, Adam's moments and the shuffle order); "
              "quantize the model nuq train saves when it finishes (`nuq train --resume` completes a killed run; "
              "`nuq eval` reads the parameters as they are)");
  const std::unique_ptr<Backend> backend = make_backend(parse_device(o.device));
  DesignSpec spec;
  spec.method = parse_method(o.method);
  spec.bits = o.bits;
  spec.alpha = o.alpha;
  spec.mu = o.mu;
  NUQ_REQUIRE(!(o.xmax && !o.support.empty()), "quantize: give --xmax or --support, not both");
  Codebook codebook = design(spec).codebook;  // the design's own optimum unless told otherwise
  if (o.xmax) codebook = codebook_at_xmax(spec, *o.xmax);
  Normalisation normalisation = parse_normalisation(o.normalisation);
  if (o.group_size) {  // groups are channels of their own
    NUQ_REQUIRE(!o.normalisation_given || normalisation == Normalisation::PerChannel,
                "--group-size gives each group its own scale; it cannot be combined with --normalise ", o.normalisation);
    normalisation = Normalisation::PerChannel;
  }
  if (!network) {
    // A support region that is a number (in normalised units) is the same for every checkpoint; one
    // at the weights' extremes would need the statistics pass before the design, which a stream
    // runs after.
    if (!o.support.empty()) {
      const Support support = parse_support(o.support);
      NUQ_REQUIRE(!depends_on_extremes(support), o.input, ": --support ", o.support,
                  " is x_max at the weights' extremes, which only nuq's own models are quantized by; for a "
                  "checkpoint give --xmax, or a region that is a number (case3..case5, 3delta, 3delta-mod, hui, "
                  "jayant, ternary, or x_max itself)");
      codebook = codebook_at_xmax(spec, resolve_xmax(support, WeightRange{}));
    }
    run_quantize_checkpoint(o, codebook, normalisation, nonfinite, *backend);
    return;
  }
  NUQ_REQUIRE(o.skip.empty() && !o.quantize_vectors && !o.group_size, o.input,
              ": nuq's own networks are quantized whole (Algorithm 1: every parameter); --skip, "
              "--quantize-vectors and --group-size are for other checkpoints");
  io::require_output_path(o.output, {o.input}, "--output");
  const io::TensorFile file = read_network_file(o.input, "not a model written by nuq train");
  NUQ_REQUIRE(!is_quantized_file(file.metadata), o.input, ": already quantized; `nuq dequantize` it first to quantize the "
              "restored weights again");
  const Model model = model_from_file(file, o.input, nonfinite);
  for (const auto& entry : file.tensors)  // the quantized file holds the network alone: nothing is dropped silently
    NUQ_REQUIRE(std::any_of(model.parameters.begin(), model.parameters.end(),
                            [&](const Parameter& p) { return p.name == entry.first; }),
                o.input, ": tensor '", entry.first, "' is not a parameter of nuq's ", to_string(model.architecture),
                "; a nuq model is quantized whole and holds its parameters alone (drop the nuq.architecture "
                "metadata to quantize the file as a checkpoint)");
  if (!o.support.empty())
    codebook = codebook_at_xmax(spec, resolve_xmax(parse_support(o.support), normalised_range(model, normalisation, nonfinite, *backend)));
  PtqReport report;
  const QuantizedModel quantized = quantize_model(model, codebook, &report, normalisation, nonfinite, *backend);
  save_quantized(o.output, quantized);
  const SizeReport size = sizes(o, codebook);
  if (o.json) {
    // `outputs` as a checkpoint's report has it, so that a script reads either report the same way.
    nlohmann::json j{{"output", o.output}, {"outputs", {o.output}}, {"device", backend->name()},
                     {"codebook", to_json(codebook)}, {"normalisation", to_string(normalisation)}, {"w_min", report.w_min},
                     {"w_max", report.w_max}, {"xmax", report.xmax}, {"within", report.within},
                     {"sqnr_ex_db", report.sqnr_ex_db}, {"sqnr_th_db", report.sqnr_th_db},
                     {"nonfinite", report.stats.nonfinite}};
    add_sizes(j, size);
    const auto element = [&](std::size_t i) { return tensor_json(report.tensors[i]); };
    print_json(std::cout, std::move(j), {{"tensors", {report.tensors.size(), element}}});
    return;
  }
  TensorReports tensors;
  for (const TensorReport& t : report.tensors) tensors.push_back(&t);
  print_tensor_table(tensors);
  std::cout << "\n"
            << to_string(codebook.provenance().method) << ", " << codebook.size() << " levels: x_max "
            << fixed(report.xmax, 4) << " (" << (normalisation == Normalisation::None ? "weights" : "normalised weights")
            << " in [" << fixed(report.w_min, 4) << ", " << fixed(report.w_max, 4)
            << "], " << fixed(report.within, 3) << "% inside)\nSQNR_ex " << fixed(report.sqnr_ex_db, 4) << " dB, SQNR_th "
            << fixed(report.sqnr_th_db, 4) << " dB\n"
            << weakest_tensor_text(tensors) << size_text(size) << "; saved " << terminal_text(o.output)
            << " (on " << backend->name() << ")\n";
  print_saturated(tensors);
}

struct DequantizeOptions {
  std::string input, output, dtype = "f32";  // f32, bf16, f16, or source: each tensor's own before quantizing
  bool json = false;
};

// One file, or a sharded checkpoint (a folder or its model.safetensors.index.json) into a folder
// of the same shards and a new index: what `nuq quantize` reads, it writes, and this undoes.
void run_dequantize(const DequantizeOptions& o) {
  // Every output checked before the first is written.
  ShardedCheckpoint checkpoint(o.input, o.output, ShardedCheckpoint::Writes::Restored);
  warn_of_checkpoint(o.input);
  require_one_quantize_run(checkpoint.inputs());
  const std::optional<io::DType> restore_as = o.dtype == "source" ? std::nullopt
                                             : o.dtype == "bf16"  ? std::optional<io::DType>(io::DType::BF16)
                                             : o.dtype == "f16"   ? std::optional<io::DType>(io::DType::F16)
                                                                  : std::optional<io::DType>(io::DType::F32);
  DequantizeReport report;
  std::vector<std::string> outputs;
  for (std::size_t s = 0; s < checkpoint.inputs().size(); ++s) {
    const std::string& out = checkpoint.output(s);
    // One format for nuq's models and other checkpoints: a dequantized nuq model keeps its
    // architecture and data set in the metadata, so it loads as an FP32 model again.
    // A tensor at a time: memory holds the largest tensor restored, not the shard.
    // Each shard stays a temporary until all are written: a folder written over stays whole until then.
    std::unique_ptr<io::SafetensorsWriter> unfinished;
    const DequantizeReport part = dequantize_checkpoint_file(checkpoint.inputs()[s], out, {restore_as}, &unfinished);
    report.restored.insert(report.restored.end(), part.restored.begin(), part.restored.end());
    report.copied.insert(report.copied.end(), part.copied.begin(), part.copied.end());
    for (const auto& names : {part.restored, part.copied})
      for (const std::string& name : names) checkpoint.add_tensor(name, s);
    checkpoint.add_tensor_bytes(unfinished->data_size());
    checkpoint.hold(s, std::move(unfinished));
    outputs.push_back(out);
  }
  if (const std::string index = checkpoint.publish(); !index.empty()) outputs.push_back(index);
  if (o.json) {
    std::cout << json_text(nlohmann::json{{"output", o.output}, {"outputs", outputs}, {"dtype", o.dtype},
                                {"restored", report.restored}, {"copied", report.copied}})
              << '\n';
    return;
  }
  std::cout << report.restored.size() << " quantized tensor(s) restored as "
            << (restore_as ? to_string(*restore_as) : std::string("the dtypes they had before quantizing")) << ", "
            << report.copied.size()
            << " copied as they were; saved " << outputs.size() << " file(s) under " << terminal_text(o.output) << '\n';
}

struct EvalOptions {
  std::string input, dataset, data, device = "auto", predictions;  // dataset: the model's own unless given
  bool json = false;
};

// The data set to test on: the one the model records, or --dataset. A model that records none
// (written by an older nuq, or another tool) needs --dataset: a guess would give a meaningless
// accuracy (a Fashion-MNIST CNN scores about 9 % on MNIST).
std::string eval_dataset(const EvalOptions& o, const io::TensorFile& file) {
  const std::string recorded = recorded_dataset(file, o.input);
  if (o.dataset.empty()) {
    NUQ_REQUIRE(!recorded.empty(), o.input, ": the model does not record the data set it was trained on; give "
                "--dataset mnist or --dataset fashion");
    return recorded;
  }
  if (!recorded.empty() && recorded != o.dataset)
    std::cerr << "nuq: warning: " << terminal_text(o.input) << " was trained on " << recorded << "; testing it on "
              << o.dataset << " as --dataset asks\n";
  return o.dataset;
}

// How a float model's weights are stored: "FP32", "BF16" or "F16" ("BF16+FP32" when they differ),
// so that a model restored in half precision (`nuq dequantize --dtype bf16`) is not reported as
// FP32. It runs in FP32 either way: half-precision weights widen exactly.
std::string stored_precision(const Model& model) {
  std::vector<std::string> names;
  for (const Parameter& p : model.parameters) {
    const std::string name = p.stored_as == io::DType::F32 ? "FP32" : io::to_string(p.stored_as);
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  std::string joined;
  for (const std::string& name : names) joined += (joined.empty() ? "" : "+") + name;
  return joined;
}

void run_eval(const EvalOptions& o) {
  NUQ_REQUIRE(!std::filesystem::is_directory(o.input), o.input, ": a folder; `nuq eval` runs one of nuq's networks, "
              "a single .safetensors file written by nuq train or nuq quantize (folders of shards are checkpoints "
              "for nuq quantize, dequantize and inspect)");
  // What the file is comes from its header, before its data is read (another tool's checkpoint of
  // many GB is refused at once, not after reading it whole), and before which data to test it on:
  // --dataset would not make another tool's checkpoint one of nuq's networks.
  const io::TensorFile header{io::SafetensorsReader(o.input).layout().metadata, {}};
  const bool quantized = is_quantized_file(header.metadata);
  const std::string not_a_network =
      quantized ? "quantized, but not one of nuq's networks: `nuq eval` runs the MLP and CNN of `nuq train`; restore "
                  "other checkpoints with `nuq dequantize`"
                : "not a model written by nuq train: `nuq eval` runs nuq's MLP and CNN on MNIST/Fashion-MNIST; other "
                  "checkpoints are quantized and restored, not run";
  recorded_architecture(header, o.input, not_a_network);
  const std::string dataset = eval_dataset(o, header);
  const std::string dir = io::dataset_dir(io::data_root(o.data), dataset);
  if (!o.predictions.empty()) {  // before the evaluation, and never over the model or the data it reads
    std::vector<std::string> inputs = data_files(dir);
    inputs.push_back(o.input);
    io::require_output_path(o.predictions, inputs, "--predictions");
  }
  // The model is read and checked (every shape, every level) before the data: a broken model is
  // named as such whatever data there is.
  const io::TensorFile file = read_network_file(o.input, not_a_network);
  NUQ_REQUIRE(file.metadata == header.metadata, o.input, ": changed while read (its header is not the one read first)");
  std::optional<QuantizedModel> quantized_model;
  std::optional<Model> model;
  if (quantized) quantized_model = quantized_from_file(file, o.input);
  else model = model_from_file(file, o.input);
  const io::Dataset test_set = io::load_network_split(dir, "t10k");
  const std::unique_ptr<Backend> backend = make_backend(parse_device(o.device));
  std::vector<std::uint8_t> classes;
  std::string weights = "quantized";  // what the report calls the model: its weights' form in the file
  try {
    if (quantized) {
      classes = quantized_predictions(*quantized_model, test_set, *backend);
    } else {  // the float baseline: dense layers through the backend's gemm (cuBLAS SGEMM on CUDA)
      weights = stored_precision(*model);
      Network network(*model, nullptr, backend.get());
      classes = predict(network, test_set);
    }
  } catch (const Error& e) {  // (an output that is not finite): said of the model evaluated
    throw Error(o.input + ": " + e.what());
  }
  const double result = accuracy(classes, test_set);
  if (!o.predictions.empty())  // one class per line, in the test set's order (for other frameworks to compare)
    io::write_atomically(o.predictions, [&](std::ostream& out) {
      for (std::uint8_t c : classes) out << int(c) << '\n';
    });
  if (o.json)
    std::cout << json_text(nlohmann::json{{"model", o.input}, {"quantized", quantized}, {"dataset", dataset},
                                {"weights", weights}, {"device", backend->name()}, {"accuracy", result}})
              << '\n';
  else
    std::cout << weights << " model " << terminal_text(o.input) << ": test accuracy " << fixed(result, 2) << "% on "
              << test_set.count << " " << dataset << " images (on " << backend->name() << ")\n";
}

}  // namespace

void add_model_commands(CLI::App& app) {
  auto t = std::make_shared<TrainOptions>();
  CLI::App* train_cmd = app.add_subcommand("train", "Train the paper's MLP or CNN on the CPU and save it as safetensors");
  train_cmd->add_option("--dataset", t->dataset, "mnist or fashion")->check(CLI::IsMember({"mnist", "fashion"}))->capture_default_str();
  train_cmd->add_option("--model", t->model, "mlp or cnn")->check(CLI::IsMember({"mlp", "cnn"}))->capture_default_str();
  add_data_option(*train_cmd, t->data, "Data folder (default: $NUQ_DATA or data)");
  train_cmd->add_option("--epochs", t->epochs, "Epochs")->transform(whole_number_in(1, 1000))->capture_default_str();
  train_cmd->add_option("--seed", t->seed, "Seed")->transform(non_negative_integer())->capture_default_str();
  train_cmd->add_option("--output,-o", t->output, "Where to save the model (.safetensors)")->required();
  train_cmd->add_flag("--json", t->json, "Print the training log as JSON");
  train_cmd->add_flag("--resume", t->resume,
                      "Continue from <output>.checkpoint (written after every epoch) when a killed run left one");
  train_cmd->callback([t] { run_train(*t); });

  auto q = std::make_shared<QuantizeOptions>();
  CLI::App* quantize_cmd = app.add_subcommand(
      "quantize", "Quantize a model's weights into packed codes: every parameter of nuq's networks (Algorithm 1 by "
                  "default), the matrices of another checkpoint");
  quantize_cmd->add_option("input", q->input,
                           "FP32 model written by nuq train, or any safetensors checkpoint (F32/F16/BF16 tensors): a "
                           "file, a folder of shards, or its index (model.safetensors.index.json or another "
                           "<name>.safetensors.index.json)")
      ->required();
  quantize_cmd->add_option("--output,-o", q->output,
                           "Quantized model to write (.safetensors; a folder for a sharded checkpoint, which gets the "
                           "same shards and a new index)")
      ->required();
  quantize_cmd->add_option("--method,-m", q->method, "Quantizer")
      ->check(CLI::IsMember({"uniform", "sptq", "msptq", "ternary", "mulaw", "lloyd-max"}))->capture_default_str();
  quantize_cmd->add_option("--bits,-b", q->bits, "Code width R (2^R levels; sptq, msptq and ternary: 2)")
      ->transform(whole_number_in(1, 16))->capture_default_str();
  quantize_cmd->add_option("--support", q->support,
                           "Support region: case1..case5, min-abs, max-abs, 3delta, 3delta-mod, hui, jayant, ternary, or x_max "
                           "(checkpoints: all but case1/min-abs and case2/max-abs, the extremes of nuq's own models)")
      ->check([](const std::string& s) { return s.empty() ? std::string("an empty support region names none") : ""; });
  quantize_cmd->add_option("--xmax", q->xmax, "Support threshold on the normalised weights");
  CLI::Option* normalise = quantize_cmd->add_option("--normalise", q->normalisation,
                           "global (Algorithm 1: one mean and standard deviation for all parameters), per-tensor, "
                           "per-channel (each row of the [shape[0], rest] view its own: an output channel of a matrix, an "
                           "expert of a fused [experts, out, in] tensor, an input feature of GPT-2's Conv1D, stored "
                           "[in, out]; codebooks up to 8 bits), or none (the codebook meets "
                           "the weights as they are); --group-size takes per-channel (its default) and refuses the others")
      ->check(CLI::IsMember({"global", "per-tensor", "per-channel", "none"}))->capture_default_str();
  quantize_cmd->add_option("--nonfinite", q->nonfinite,
                           "NaN or Inf in the weights: error (names the tensor and index), or saturate (+-Inf to the "
                           "outermost levels, NaN to the level of the cell holding the mean, 0 under --normalise none; left "
                           "out of every statistic)")
      ->check(CLI::IsMember({"error", "saturate"}))->capture_default_str();
  CLI::Option* alpha = quantize_cmd->add_option("--alpha", q->alpha, "Ternary scale factor (ternary only): x_max = "
                                                "alpha * (--xmax, --support or 3/sqrt(2))")->capture_default_str();
  CLI::Option* mu = quantize_cmd->add_option("--mu", q->mu, "mu-law compression parameter (mulaw only)")
                        ->capture_default_str();
  quantize_cmd->add_option("--skip", q->skip,
                           "Checkpoints: tensors whose name matches this regular expression (ECMAScript, searched, in "
                           "polynomial time: no back-references; at most 1024 characters) "
                           "are kept as they are, e.g. 'embed_tokens|lm_head' (kept always: tensors other than "
                           "F32/F16/BF16, such as FP8 or int32 codes, and the floating tensors of their module, "
                           "such as an FP8 weight's weight_scale_inv or GPTQ's scales)");
  quantize_cmd->add_option("--group-size", q->group_size,
                           "Checkpoints: each run of N weights along a row gets its own scale (a multiple of 8 that "
                           "divides the rows' length; the codebook is shared; F32 scales add 32/N bits per weight); "
                           "implies --normalise per-channel, the only normalisation groups take")
      ->transform(whole_number_in(8, 1 << 20));
  quantize_cmd->add_flag("--quantize-vectors", q->quantize_vectors,
                         "Checkpoints: quantize norms and biases too (kept as they are by default: 1-D tensors, tensors "
                         "of one dimension above 1 such as [1, 1, d], and those whose name ends in 'bias')");
  quantize_cmd->add_flag("--json", q->json, "Print the report as JSON");
  add_device_option(*quantize_cmd, q->device);
  quantize_cmd->callback([q, normalise, mu, alpha] {
    require_own_parameters(q->method, *mu, *alpha);
    q->normalisation_given = normalise->count() > 0;
    run_quantize(*q);
  });

  auto d = std::make_shared<DequantizeOptions>();
  CLI::App* dequantize_cmd = app.add_subcommand(
      "dequantize", "Turn a model or checkpoint quantized by nuq quantize back into a safetensors file of floats "
                    "(quantized tensors as F32 unless --dtype says otherwise; kept ones as they were)");
  dequantize_cmd->add_option("input", d->input,
                             "Quantized checkpoint: a .safetensors file, or a folder of shards (or its index) as nuq "
                             "quantize writes them")->required();
  dequantize_cmd->add_option("--output,-o", d->output,
                             "Checkpoint to write: a .safetensors file, or for shards a folder (the same "
                             "shard names and a new index)")->required();
  dequantize_cmd->add_option("--dtype", d->dtype,
                             "The dtype of the restored tensors: f32, bf16 or f16 (each weight the nearest value, "
                             "ties to even; a weight beyond the range is an error), or source: each tensor's own "
                             "before quantizing (a BF16 model comes back as BF16, half the size of F32)")
      ->check(CLI::IsMember({"f32", "bf16", "f16", "source"}))
      ->capture_default_str();
  dequantize_cmd->add_flag("--json", d->json, "Print what was restored and copied as JSON");
  dequantize_cmd->callback([d] { run_dequantize(*d); });

  auto e = std::make_shared<EvalOptions>();
  CLI::App* eval_cmd = app.add_subcommand("eval", "Test accuracy of an FP32 or quantized model (quantized: from its packed codes)");
  eval_cmd->add_option("input", e->input, "Model (.safetensors)")->required();
  eval_cmd->add_option("--dataset", e->dataset,
                       "mnist or fashion (default: the data set the model records, from nuq train or reproduce)")
      ->check(CLI::IsMember({"mnist", "fashion"}));
  add_data_option(*eval_cmd, e->data, "Data folder (default: $NUQ_DATA or data)");
  eval_cmd->add_flag("--json", e->json, "Print the result as JSON");
  eval_cmd->add_option("--predictions", e->predictions, "Also write each test image's predicted class, one per line")
      ->check([](const std::string& s) { return s.empty() ? std::string("the file name is empty") : ""; });
  add_device_option(*eval_cmd, e->device);
  eval_cmd->callback([e] { run_eval(*e); });
}

}  // namespace nuq::cli
