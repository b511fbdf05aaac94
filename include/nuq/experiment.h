// The papers' experiment, end to end: train (or load) a network, quantize it with every design
// and support region of the published tables, write each quantized model, evaluate it from its
// packed form, and put every number beside the published one.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "nuq/backend.h"
#include "nuq/paper.h"
#include "nuq/ptq.h"
#include "nuq/train.h"

namespace nuq {

struct ExperimentOptions {
  std::string data_root = "data";
  std::string out_dir = "out";   // models/, quantized/ and the reports go here
  bool retrain = false;          // ignore a cached FP32 model
  TrainConfig train;
  Backend* backend = nullptr;    // where weights are quantized and quantized networks run (null: the CPU)
  Backend& weights_backend() const { return backend ? *backend : cpu_backend(); }
};

struct CaseResult {
  std::string table, title, case_label, region;
  std::size_t case_index = 0;  // position in its published table (labels can repeat: Table 7b)
  std::string control;  // empty for a published case; otherwise what this control run changed
  Method method = Method::Sptq;
  PtqReport ptq;  // per-tensor details included
  double accuracy = 0.0;
  std::string quantized_file;
  paper::PublishedCase published;
};

struct ExperimentResult {
  std::string dataset, model;
  std::uint64_t seed = 1;           // of initialisation, shuffling and dropout
  double fp32_accuracy = 0.0;
  std::optional<double> published_fp32_accuracy;
  double w_min = 0.0, w_max = 0.0;  // normalised extremes of our weights
  std::size_t parameters = 0;
  bool trained = false;             // false: loaded from the cache
  std::string model_file;           // the FP32 model, as saved (safetensors)
  std::string trained_on;           // Model::trained_on: the machine and BLAS kernel that trained it
  std::string training_settings;    // Model::training: epochs, batch, learning rate, seed ("" if not recorded)
  std::vector<EpochLog> training;
  double seconds = 0.0;
  std::vector<CaseResult> cases;
  // Runs beyond the paper that explain a gap: cases 1 and 2 at the paper's own x_max (our weights'
  // extremes differ from the paper's), and the CNN with per-tensor normalisation.
  std::vector<CaseResult> controls;
};

// Where an experiment keeps its FP32 network: <out>/models/<dataset>-<model>-seed<S>.safetensors,
// with -epochs<E> before the extension when the training is not the default 10 epochs (a quick
// run never replaces the full one). Its training checkpoint is the same name + ".checkpoint".
std::string cached_model_path(const std::string& out_dir, const std::string& dataset, const std::string& model,
                              const TrainConfig& train);

// A model's recorded training settings (Model::training), for the reports: in words ("10 epochs,
// batch 128, learning rate 0.001"; a record nuq did not write as it is), and as JSON (null when
// none, the text when it is not JSON).
std::string training_text(const std::string& record);
nlohmann::json training_settings_json(const std::string& record);

// The FP32 network of an experiment: cached_model_path when it exists (and options.retrain is
// false) and was trained as options.train asks, else trained with options.train and saved there.
struct TrainedModel {
  Model model;
  std::string file;
  bool trained = false;  // false: loaded from the cache
  std::vector<EpochLog> training;
};
TrainedModel load_or_train(const std::string& dataset, const std::string& model, const ExperimentOptions& options,
                           std::ostream* progress = nullptr);

// Runs every published table for one dataset/model ("mnist"/"mlp" has Tables 3-6, the Fashion
// models Table 7). Progress lines go to `progress` when given.
ExperimentResult run_experiment(const std::string& dataset, const std::string& model,
                                const ExperimentOptions& options, std::ostream* progress = nullptr);

// The qualitative claims of the paper, checked on our numbers.
struct Finding {
  enum class Tested { Everywhere, Partly, Nowhere };  // the parts of the run that could test the claim
  std::string claim;
  bool holds = false;    // where it was tested
  std::string evidence;  // names what could not be tested, too
  Tested tested = Tested::Everywhere;
};
// "holds", "holds where tested", "not tested" or "does not hold".
std::string verdict(const Finding& finding);
std::vector<Finding> check_findings(const std::vector<ExperimentResult>& results);

// "MNIST MLP", "Fashion-MNIST CNN": how the report names a network.
std::string display_name(const ExperimentResult& result);

nlohmann::json to_json(const ExperimentResult& result);
// Markdown. Tables show the first run of each dataset/model; when several seeds ran, a section
// gives the spread (min, mean, max over seeds) of every case's accuracy and SQNR_ex.
// Figures (report order) are embedded from figures/<stem>.png beside the report: each network's
// weight histogram in its section, the others in a Figures section; one not rendered is named
// with its data file instead.
struct Figure {
  std::string stem, title, caption;  // <stem>.csv holds the data (nuq/figures.h), <stem>.png the picture
  bool rendered = false;             // <stem>.png exists
};
// Figures whose stem starts with "itc2021-" belong to render_mismatch_report and are left out here.
std::string render_report(const std::vector<ExperimentResult>& results, const std::vector<Finding>& findings,
                          const std::vector<Figure>& figures = {});

// A figure as the report embeds it: title, caption, and the PNG or, when not rendered, its data file.
std::string embed_figure(const Figure& figure);

}  // namespace nuq
