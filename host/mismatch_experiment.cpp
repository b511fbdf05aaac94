#include "nuq/mismatch_experiment.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <ostream>
#include <random>

#include <nlohmann/json.hpp>

#include "nuq/error.h"
#include "nuq/io/dataset.h"
#include "nuq/laplace.h"
#include "nuq/mismatch.h"
#include "nuq/network.h"

namespace nuq {
namespace {

// The FP32 network with i.i.d. uniform noise of the given SQNR added to every parameter.
Model with_noise(const Model& model, double power, double sqnr_db, std::uint64_t seed) {
  const double half_width = std::sqrt(3.0 * power * std::pow(10.0, -sqnr_db / 10.0));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> noise(-half_width, half_width);
  Model noisy = model;
  for (Parameter& p : noisy.parameters)
    for (float& w : p.values) w = static_cast<float>(double(w) + noise(rng));
  return noisy;
}

const MismatchRun* find_run(const MismatchExperiment& e, Normalisation normalisation, int bits) {
  for (const MismatchRun& r : e.runs)
    if (r.normalisation == normalisation && r.bits == bits) return &r;
  return nullptr;
}

}  // namespace

bool sqnr_floor(const std::vector<NoiseProbePoint>& probe, double max_loss, double* floor_db) {
  bool found = false;
  for (auto point = probe.rbegin(); point != probe.rend() && point->mean_loss <= max_loss + kLossTolerance; ++point) {
    found = true;
    *floor_db = point->sqnr_db;
  }
  return found;
}

MismatchExperiment run_mismatch_experiment(const std::string& dataset, const std::string& model_name,
                                           const ExperimentOptions& options, const MismatchExperimentOptions& mo,
                                           std::ostream* progress) {
  NUQ_REQUIRE(mo.min_bits >= 1 && mo.min_bits <= mo.max_bits && mo.max_bits <= 16,
              "mismatch experiment: bit rates must satisfy 1 <= min <= max <= 16");
  NUQ_REQUIRE(mo.probe_step_db > 0.0 && mo.probe_from_db <= mo.probe_to_db && mo.probe_draws >= 1,
              "mismatch experiment: the probe needs an ascending SQNR range, a positive step and a draw");
  const auto start = std::chrono::steady_clock::now();
  MismatchExperiment e;
  e.dataset = dataset;
  e.model = model_name;
  e.seed = options.train.seed;
  e.options = mo;
  const io::Dataset test_set = io::load_network_split(io::dataset_dir(options.data_root, dataset), "t10k");
  TrainedModel trained = load_or_train(dataset, model_name, options, progress);
  Model& model = trained.model;
  e.model_file = trained.file;
  e.training_settings = model.training;
  e.fp32_accuracy = accuracy(model, test_set);
  Backend& backend = options.weights_backend();
  e.stats = model_stats(model, NonFinite::Reject, backend);
  NUQ_REQUIRE(e.stats.stddev() > 0.0, e.model_file, ": the parameters have zero variance; there is no mismatch to study");

  const std::filesystem::path dir = std::filesystem::path(options.out_dir) / "quantized";
  std::filesystem::create_directories(dir);
  for (Normalisation normalisation : {Normalisation::None, Normalisation::Global})
    for (int bits = mo.min_bits; bits <= mo.max_bits; ++bits) {
      MismatchRun run;
      run.bits = bits;
      run.normalisation = normalisation;
      run.mismatch_db = normalisation == Normalisation::None ? 20.0 * std::log10(e.stats.stddev()) : 0.0;
      const QuantizedModel quantized = quantize_model(model, mismatch_design(bits), &run.ptq, normalisation,
                                                        NonFinite::Reject, backend);
      run.quantized_file = (dir / (dataset + "-" + model_name + "-seed" + std::to_string(e.seed) + "-itc2021-uniform-" +
                                   std::to_string(bits) + "bit-" + to_string(normalisation) + ".safetensors"))
                               .string();
      save_quantized(run.quantized_file, quantized);
      run.accuracy = quantized_accuracy(load_quantized(run.quantized_file), test_set, backend);
      run.loss = e.fp32_accuracy - run.accuracy;
      if (progress) {
        char line[200];
        std::snprintf(line, sizeof line, "  ITC 2021  R %2d  normalisation %-6s  SQNR_th %7.3f  SQNR_ex %7.3f dB  accuracy %.2f%%\n",
                      bits, to_string(normalisation).c_str(), run.ptq.sqnr_th_db, run.ptq.sqnr_ex_db, run.accuracy);
        *progress << line << std::flush;
      }
      e.runs.push_back(std::move(run));
    }

  // Mean square of the parameters, the signal power of eqs. (30)-(31): variance plus mean squared.
  const double power = e.stats.variance() + e.stats.mean * e.stats.mean;
  const int steps = static_cast<int>(std::floor((mo.probe_to_db - mo.probe_from_db) / mo.probe_step_db + 1e-9));
  for (int i = 0; i <= steps; ++i) {
    NoiseProbePoint point;
    point.sqnr_db = mo.probe_from_db + i * mo.probe_step_db;
    for (int draw = 0; draw < mo.probe_draws; ++draw) {
      Model noisy = with_noise(model, power, point.sqnr_db, e.seed * 1000003u + std::uint64_t(i) * 101u + std::uint64_t(draw));
      const double loss = e.fp32_accuracy - accuracy(noisy, test_set);
      point.worst_loss = draw == 0 ? loss : std::max(point.worst_loss, loss);
      point.mean_loss += loss / mo.probe_draws;
    }
    e.probe.push_back(point);
  }
  e.floor_found = sqnr_floor(e.probe, mo.max_loss, &e.sqnr_floor_db);
  if (progress) {
    if (e.floor_found)
      *progress << "  noise probe: a loss of at most " << mo.max_loss << " points needs SQNR >= " << e.sqnr_floor_db << " dB\n";
    else
      *progress << "  noise probe: no probed SQNR keeps the loss within " << mo.max_loss << " points\n";
  }

  for (Normalisation normalisation : {Normalisation::None, Normalisation::Global}) {
    RuleChoice c;
    c.normalisation = normalisation;
    const double at_db = find_run(e, normalisation, mo.min_bits)->mismatch_db;
    if (e.floor_found) {
      if (const auto choice = choose_bit_rate(e.sqnr_floor_db, at_db, at_db, 1.0, mo.min_bits, mo.max_bits)) {
        c.bits = choice->bits;
        c.predicted_sqnr_db = choice->worst_sqnr_db;
        c.measured_loss = find_run(e, normalisation, c.bits)->loss;
        c.within_bound = c.measured_loss <= mo.max_loss + kLossTolerance;
        if (c.bits > mo.min_bits) {
          c.bits_below = c.bits - 1;
          c.loss_below = find_run(e, normalisation, c.bits_below)->loss;
          c.loss_appears_below = c.loss_below > kLossTolerance && c.loss_below > c.measured_loss + kLossTolerance;
          c.bound_exceeded_below = c.loss_below > mo.max_loss + kLossTolerance;
        }
      }
    }
    e.choices.push_back(c);
  }
  e.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return e;
}

nlohmann::json to_json(const MismatchExperiment& e) {
  nlohmann::json runs = nlohmann::json::array(), probe = nlohmann::json::array(), choices = nlohmann::json::array();
  for (const MismatchRun& r : e.runs)
    runs.push_back({{"bits", r.bits}, {"normalisation", to_string(r.normalisation)}, {"mismatch_db", r.mismatch_db},
                    {"xmax", r.ptq.xmax}, {"sqnr_th_db", r.ptq.sqnr_th_db}, {"sqnr_ex_db", r.ptq.sqnr_ex_db},
                    {"within", r.ptq.within}, {"accuracy", r.accuracy}, {"loss", r.loss}, {"file", r.quantized_file}});
  for (const NoiseProbePoint& p : e.probe)
    probe.push_back({{"sqnr_db", p.sqnr_db}, {"worst_loss", p.worst_loss}, {"mean_loss", p.mean_loss}});
  for (const RuleChoice& c : e.choices)
    choices.push_back({{"normalisation", to_string(c.normalisation)}, {"bits", c.bits},
                       {"predicted_sqnr_db", c.predicted_sqnr_db}, {"measured_loss", c.measured_loss},
                       {"within_bound", c.within_bound}, {"bits_below", c.bits_below}, {"loss_below", c.loss_below},
                       {"loss_appears_below", c.loss_appears_below}, {"bound_exceeded_below", c.bound_exceeded_below}});
  return {{"paper", "itc2021"}, {"dataset", e.dataset}, {"model", e.model}, {"seed", e.seed}, {"model_file", e.model_file},
          {"training_settings", training_settings_json(e.training_settings)},
          {"fp32_accuracy", e.fp32_accuracy}, {"sigma_w", e.stats.stddev()}, {"mean_w", e.stats.mean},
          {"max_loss", e.options.max_loss}, {"probe_draws", e.options.probe_draws},
          {"sqnr_floor_db", e.floor_found ? nlohmann::json(e.sqnr_floor_db) : nlohmann::json()}, {"runs", runs},
          {"probe", probe}, {"choices", choices}, {"seconds", e.seconds}};
}

}  // namespace nuq
