#include "nuq/train.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <ostream>
#include <random>

#include "nuq/error.h"
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

std::vector<EpochLog> train(Model& model, const io::Dataset& data, const TrainConfig& config,
                            std::ostream* progress) {
  NUQ_REQUIRE(config.epochs > 0 && config.batch > 0 && config.learning_rate > 0.0,
              "train: epochs, batch and learning rate must be positive");
  NUQ_REQUIRE(data.count > 0, "train: the dataset is empty");
  const bool live_bar = progress && isatty(STDERR_FILENO);
  Network network(model);
  Adam adam(model, config.learning_rate);
  std::mt19937_64 rng(config.seed);
  std::vector<std::size_t> order(data.count);
  std::iota(order.begin(), order.end(), 0);
  const std::size_t features = data.features();
  std::vector<float> images(config.batch * features);
  std::vector<std::uint8_t> labels(config.batch);
  std::vector<EpochLog> log;
  std::uint64_t step = 0;
  for (int epoch = 1; epoch <= config.epochs; ++epoch) {
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
  }
  return log;
}

}  // namespace nuq
