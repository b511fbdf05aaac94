#include "nuq/train.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <ostream>
#include <random>

#include <filesystem>
#include <sstream>

#include <nlohmann/json.hpp>

#include "nuq/error.h"
#include "nuq/io/json_parse.h"
#include "nuq/fingerprint.h"
#include "nuq/platform.h"
#include "nuq/io/safetensors.h"
#include "nuq/io/safetensors_stream.h"
#include "nuq/network.h"

namespace nuq {
namespace {

class Adam {
 public:
  Adam(const Model& model, double learning_rate) : learning_rate_(learning_rate) {
    for (const Parameter& p : model.parameters) {
      m_.emplace_back(p.values.size(), 0.0f);
      v_.emplace_back(p.values.size(), 0.0f);
    }
  }
  // Checkpoints carry the moments and the step count.
  int steps() const { return t_; }
  std::vector<std::vector<float>>& first_moments() { return m_; }
  std::vector<std::vector<float>>& second_moments() { return v_; }
  void set_steps(int t) { t_ = t; }

  void step(Model& model, const std::vector<std::vector<float>>& gradients) {
    ++t_;
    constexpr double kBeta1 = 0.9, kBeta2 = 0.999, kEpsilon = 1e-7;
    // Keras folds the bias corrections into the step size.
    const auto rate = static_cast<float>(learning_rate_ * std::sqrt(1.0 - std::pow(kBeta2, t_)) /
                                         (1.0 - std::pow(kBeta1, t_)));
    for (std::size_t k = 0; k < model.parameters.size(); ++k) {
      float* w = model.parameters[k].values.data();
      const float* g = gradients[k].data();
      float* m = m_[k].data();
      float* v = v_[k].data();
      for (std::size_t i = 0, n = gradients[k].size(); i < n; ++i) {
        m[i] = float(kBeta1) * m[i] + float(1.0 - kBeta1) * g[i];
        v[i] = float(kBeta2) * v[i] + float(1.0 - kBeta2) * g[i] * g[i];
        w[i] -= rate * m[i] / (std::sqrt(v[i]) + float(kEpsilon));
      }
    }
  }

 private:
  double learning_rate_;
  int t_ = 0;
  std::vector<std::vector<float>> m_, v_;
};

void draw_bar(std::ostream& out, int epoch, int epochs, std::size_t done, std::size_t total, double loss) {
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(kWidth * done / total);
  char line[160];
  std::snprintf(line, sizeof line, "\repoch %2d/%d [%s%s] %zu/%zu  loss %.4f", epoch, epochs,
                std::string(filled, '=').c_str(), std::string(kWidth - filled, ' ').c_str(), done, total, loss);
  out << line << std::flush;
}

}  // namespace

void to_json(nlohmann::json& j, const EpochLog& e) {
  j = {{"epoch", e.epoch}, {"loss", e.loss}, {"train_accuracy", e.train_accuracy}, {"seconds", e.seconds}};
}

void from_json(const nlohmann::json& j, EpochLog& e) {
  e = {j.at("epoch").get<int>(), j.at("loss").get<double>(), j.at("train_accuracy").get<double>(),
       j.at("seconds").get<double>()};
}

namespace {

// Everything the loop carries from one epoch to the next.
struct TrainingState {
  int epoch = 0;  // epochs finished
  std::uint64_t step = 0;
  std::mt19937_64 rng;
  std::vector<std::size_t> order;
  std::vector<EpochLog> log;
};

// What a checkpoint must share with the run that resumes it. The labels' fingerprint tells two
// data sets of the same size apart (MNIST's from Fashion-MNIST's, a changed copy).
nlohmann::json describe(const Model& model, const io::Dataset& data, const TrainConfig& config) {
  return {{"architecture", to_string(model.architecture)}, {"dataset", config.dataset}, {"examples", data.count},
          {"labels", fingerprint(data.labels.data(), data.labels.size())}, {"batch", config.batch},
          {"learning_rate", config.learning_rate}, {"seed", config.seed}};
}

std::size_t batches_per_epoch(const io::Dataset& data, const TrainConfig& config) {
  return (data.count + config.batch - 1) / config.batch;
}

void save_checkpoint(const std::string& path, const Model& model, Adam& adam, const TrainingState& state,
                     const nlohmann::json& run) {
  io::TensorFile file;
  for (std::size_t k = 0; k < model.parameters.size(); ++k) {
    const Parameter& p = model.parameters[k];
    file.tensors[p.name] = io::f32_tensor(p.shape, p.values);
    file.tensors["adam.m." + p.name] = io::f32_tensor(p.shape, adam.first_moments()[k]);
    file.tensors["adam.v." + p.name] = io::f32_tensor(p.shape, adam.second_moments()[k]);
  }
  io::Tensor order;
  order.dtype = io::DType::U64;
  order.shape = {std::int64_t(state.order.size())};
  order.data.resize(state.order.size() * sizeof(std::uint64_t));
  for (std::size_t i = 0; i < state.order.size(); ++i)
    for (int b = 0; b < 8; ++b) order.data[i * 8 + b] = static_cast<std::uint8_t>(std::uint64_t(state.order[i]) >> (8 * b));
  file.tensors["order"] = std::move(order);
  std::ostringstream rng;
  rng << state.rng;
  file.metadata["nuq.architecture"] = to_string(model.architecture);
  // As a saved model records it, so that `nuq eval` of the checkpoint finds its data set.
  if (const std::string dataset = run.value("dataset", ""); !dataset.empty()) file.metadata["nuq.dataset"] = dataset;
  file.metadata["nuq.checkpoint"] = nlohmann::json{{"run", run}, {"epoch", state.epoch}, {"step", state.step},
                                                   {"adam_steps", adam.steps()}, {"rng", rng.str()}, {"log", state.log}}
                                        .dump();
  io::write_safetensors(path, file);
}

// What to do instead, in both commands that resume (`nuq train --resume` and `nuq reproduce`).
constexpr const char* kTrainAnew = "train anew (nuq train without --resume, nuq reproduce --retrain)";

// A checkpoint refused with what to do already said (another run's, a diverged one, one beyond
// --epochs): train() passes it on as it is, while any other error reading the checkpoint gets the
// advice for a damaged file.
class AdvisedRefusal : public Error {
 public:
  using Error::Error;
};

// NUQ_REQUIRE for such a refusal (a macro as NUQ_REQUIRE is: the message is built only on failure).
#define NUQ_REFUSE_CHECKPOINT_UNLESS(condition, ...)                              \
  do {                                                                            \
    if (!(condition)) throw AdvisedRefusal(::nuq::detail::concat(__VA_ARGS__));   \
  } while (0)

// Restores model, optimizer and state from `path`; a checkpoint of another run is an error that
// says which setting differs.
void load_checkpoint(const std::string& path, Model& model, Adam& adam, TrainingState& state, const nlohmann::json& run,
                     const TrainConfig& config, std::size_t batches) {
  // From the header first: another file given as the checkpoint is refused before its data is read.
  NUQ_REQUIRE(io::SafetensorsReader(path).layout().metadata.count("nuq.checkpoint"), path,
              ": not a training checkpoint (no nuq.checkpoint metadata)");
  const io::TensorFile file = read_network_file(path, "a training checkpoint records its network");
  const auto meta = file.metadata.find("nuq.checkpoint");
  NUQ_REQUIRE(meta != file.metadata.end(), path, ": not a training checkpoint (no nuq.checkpoint metadata)");
  try {
    const nlohmann::json c = [&] {
      try {
        return io::parse_json_bounded(meta->second, 16);
      } catch (const Error& e) {
        throw Error(path + ": nuq.checkpoint metadata: " + e.what());
      }
    }();
    for (const auto& [key, value] : run.items()) {
      NUQ_REFUSE_CHECKPOINT_UNLESS(c.at("run").contains(key), path, ": the checkpoint does not record its ", key,
                                   " (an older nuq wrote it); ", kTrainAnew);
      NUQ_REFUSE_CHECKPOINT_UNLESS(c.at("run").at(key) == value, path, ": the checkpoint was made with ", key, " = ",
                                   c.at("run").at(key).dump(), ", this run has ", value.dump(), "; resume with the same settings, or ", kTrainAnew);
    }
    const Model saved = model_from_file(file, path, NonFinite::Skip);  // a resumed run's own message, below
    for (const Parameter& p : saved.parameters) {
      const auto bad = std::find_if(p.values.begin(), p.values.end(), [](float v) { return !std::isfinite(v); });
      NUQ_REFUSE_CHECKPOINT_UNLESS(bad == p.values.end(), path, ": tensor '", p.name, "' element ",
                                   bad - p.values.begin(), " is ", *bad,
                                   "; training from it cannot continue (it diverged, or the file was damaged): ", kTrainAnew);
    }
    for (std::size_t k = 0; k < model.parameters.size(); ++k) {
      const std::string& name = model.parameters[k].name;
      model.parameters[k].values = saved.parameters[k].values;
      for (auto [prefix, moments] : {std::pair{"adam.m.", &adam.first_moments()}, std::pair{"adam.v.", &adam.second_moments()}}) {
        const auto t = file.tensors.find(prefix + name);
        NUQ_REQUIRE(t != file.tensors.end() && t->second.shape == model.parameters[k].shape, path, ": ", prefix, name,
                    " is missing or has the wrong shape");
        (*moments)[k] = io::to_floats(t->second, path + ": " + prefix + name);
        for (std::size_t i = 0; i < (*moments)[k].size(); ++i) {  // a second moment is a mean of squares
          const float v = (*moments)[k][i];
          NUQ_REQUIRE(std::isfinite(v) && (std::string(prefix) == "adam.m." || v >= 0.0f), path, ": ", prefix, name,
                      " element ", i, " is ", v, ", not an optimizer state");
        }
      }
    }
    const auto order = file.tensors.find("order");
    NUQ_REQUIRE(order != file.tensors.end() && order->second.dtype == io::DType::U64 &&
                    order->second.element_count() == state.order.size(),
                path, ": the shuffle order is missing or has the wrong size");
    std::vector<bool> seen(state.order.size(), false);
    for (std::size_t i = 0; i < state.order.size(); ++i) {
      std::uint64_t v = 0;
      for (int b = 7; b >= 0; --b) v = (v << 8) | order->second.data[i * 8 + b];
      NUQ_REQUIRE(v < seen.size() && !seen[v], path, ": the shuffle order is not a permutation");
      seen[v] = true;
      state.order[i] = static_cast<std::size_t>(v);
    }
    // The generator's words (decimal, as operator<< writes them) and nothing else: a stray sign or
    // word would be read as some other state, and the resumed run would not be the uninterrupted one.
    const std::string words = c.at("rng").get<std::string>();
    NUQ_REQUIRE(words.find_first_not_of("0123456789 ") == std::string::npos, path,
                ": the random generator's state holds other than its decimal words");
    std::istringstream rng(words);
    rng >> state.rng;
    NUQ_REQUIRE(!rng.fail() && (rng >> std::ws).eof(), path, ": the random generator's state is unreadable");
    NUQ_REQUIRE(c.at("epoch").is_number_integer() && c.at("step").is_number_integer() &&
                    c.at("adam_steps").is_number_integer(),
                path, ": epoch, step and adam_steps must be integers");
    NUQ_REQUIRE(c.at("epoch").is_number_unsigned() || c.at("epoch").get<std::int64_t>() >= 0, path,
                ": the checkpoint's epoch ", c.at("epoch").dump(), " is negative");
    // Not negative, so read as unsigned: an epoch past 2^63 does not wrap around.
    NUQ_REFUSE_CHECKPOINT_UNLESS(c.at("epoch").get<std::uint64_t>() <= std::uint64_t(config.epochs), path,
                                 ": the checkpoint is at epoch ", c.at("epoch").dump(), ", beyond this run's ",
                                 config.epochs, " epochs (more --epochs, or train anew)");
    const std::int64_t epoch = c.at("epoch").get<std::int64_t>();
    state.epoch = int(epoch);
    // One optimizer step a batch: a checkpoint after epoch e has taken e batches' worth, exactly.
    const std::int64_t steps = std::int64_t(batches) * epoch;
    NUQ_REQUIRE(c.at("step").get<std::int64_t>() == steps && c.at("adam_steps").get<std::int64_t>() == steps, path,
                ": step ", c.at("step").dump(), " and adam_steps ", c.at("adam_steps").dump(), " after epoch ", epoch,
                " (", batches, " batches an epoch) should both be ", steps);
    state.step = std::uint64_t(steps);
    adam.set_steps(int(steps));
    NUQ_REQUIRE(c.at("log").size() == std::size_t(state.epoch), path, ": the log does not match the epoch");
    state.log = c.at("log").get<std::vector<EpochLog>>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": nuq.checkpoint metadata: " + e.what());
  }
}

#undef NUQ_REFUSE_CHECKPOINT_UNLESS

}  // namespace

std::vector<EpochLog> train(Model& model, const io::Dataset& data, const TrainConfig& config,
                            std::ostream* progress) {
  NUQ_REQUIRE(config.epochs > 0 && config.batch > 0 && config.learning_rate > 0.0,
              "train: epochs, batch and learning rate must be positive");
  NUQ_REQUIRE(data.count > 0, "train: the dataset is empty");
  NUQ_REQUIRE(data.features() == io::kImageSide * io::kImageSide, "train: the images are ", data.rows, "x", data.cols,
              "; nuq's networks take ", io::kImageSide, "x", io::kImageSide);
  NUQ_REQUIRE(batches_per_epoch(data, config) * std::size_t(config.epochs) < std::size_t(1) << 31,
              "train: ", config.epochs, " epochs of ", batches_per_epoch(data, config), " batches overflow the step count");
  const bool live_bar = progress && isatty(STDERR_FILENO);
  Network network(model);
  Adam adam(model, config.learning_rate);
  TrainingState state;
  state.rng.seed(config.seed);
  state.order.resize(data.count);
  std::iota(state.order.begin(), state.order.end(), 0);
  const nlohmann::json run = describe(model, data, config);
  if (config.resume && !config.checkpoint.empty() && std::filesystem::exists(config.checkpoint)) {
    try {
      load_checkpoint(config.checkpoint, model, adam, state, run, config, batches_per_epoch(data, config));
    } catch (const AdvisedRefusal&) {
      throw;
    } catch (const Error& e) {
      // A truncated or damaged file's own message (from the reader) says what is wrong, not what to do.
      throw Error(std::string(e.what()) + " (a damaged training checkpoint: remove it, or " + kTrainAnew + ")");
    }
    if (progress) *progress << "resuming from " << config.checkpoint << " after epoch " << state.epoch << '\n';
  }
  std::mt19937_64& rng = state.rng;
  std::vector<std::size_t>& order = state.order;
  std::vector<EpochLog>& log = state.log;
  std::uint64_t& step = state.step;
  const std::size_t features = data.features();
  std::vector<float> images(config.batch * features);
  std::vector<std::uint8_t> labels(config.batch);
  for (int epoch = state.epoch + 1; epoch <= config.epochs; ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    std::shuffle(order.begin(), order.end(), rng);
    double loss_sum = 0.0;
    std::size_t correct = 0, seen = 0;
    for (std::size_t begin = 0; begin < data.count; begin += config.batch) {
      const std::size_t n = std::min(config.batch, data.count - begin);
      for (std::size_t i = 0; i < n; ++i) {
        std::copy_n(&data.images[order[begin + i] * features], features, &images[i * features]);
        labels[i] = data.labels[order[begin + i]];
      }
      const auto& logits = network.forward(images.data(), n, true, config.seed * 1000003 + ++step);
      for (std::size_t i = 0; i < n; ++i)
        correct += std::size_t(std::max_element(&logits[i * 10], &logits[i * 10] + 10) - &logits[i * 10]) == labels[i];
      const double loss = network.backward(labels.data());
      NUQ_REQUIRE(std::isfinite(loss), "train: the loss diverged (", loss, ") at epoch ", epoch);
      loss_sum += loss * double(n);
      seen += n;
      adam.step(model, network.gradients());
      if (live_bar && (begin / config.batch) % 20 == 0) draw_bar(*progress, epoch, config.epochs, seen, data.count, loss_sum / seen);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    log.push_back({epoch, loss_sum / double(seen), 100.0 * double(correct) / double(seen), seconds});
    if (progress) {
      if (live_bar) draw_bar(*progress, epoch, config.epochs, seen, data.count, log.back().loss);
      char line[160];
      std::snprintf(line, sizeof line, "%sepoch %2d/%d  loss %.4f  accuracy %.2f%%  %.1f s\n",
                    live_bar ? "\r\033[K" : "", epoch, config.epochs, log.back().loss,
                    log.back().train_accuracy, seconds);
      *progress << line << std::flush;
    }
    state.epoch = epoch;
    if (!config.checkpoint.empty()) save_checkpoint(config.checkpoint, model, adam, state, run);
  }
  model.trained_on = summary(this_platform());
  model.training = training_record(config);
  return log;
}

std::string training_record(const TrainConfig& config) {
  return nlohmann::json{{"epochs", config.epochs}, {"batch", config.batch}, {"learning_rate", config.learning_rate},
                        {"seed", config.seed}}
      .dump();
}

}  // namespace nuq
