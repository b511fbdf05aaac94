#include "nuq/network.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "nuq/error.h"
#include "nuq/io/safetensors.h"
#include "nuq/ptq.h"
#include "nuq/backend.h"
#include "nuq/qgemm.h"

namespace nuq {
namespace {

using io::kImageSide;
constexpr std::size_t kConvSide = 26, kPoolSide = 13, kFilters = 16, kTaps = 9;
constexpr std::size_t kConvPositions = kConvSide * kConvSide;  // 676
constexpr std::size_t kHidden = 512, kClasses = 10;

// C[m, n] = A[m, k] * B[n, k]^T (+ C when accumulate)
void gemm_abt(std::size_t m, std::size_t n, std::size_t k, const float* a, const float* b, float* c) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(n), int(k), 1.0f, a, int(k), b, int(k),
              0.0f, c, int(n));
}
// C[m, n] = A[k, m]^T * B[k, n]
void gemm_atb(std::size_t m, std::size_t n, std::size_t k, const float* a, const float* b, float* c) {
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(m), int(n), int(k), 1.0f, a, int(m), b, int(n),
              0.0f, c, int(n));
}
// C[m, n] = A[m, k] * B[k, n]
void gemm_ab(std::size_t m, std::size_t n, std::size_t k, const float* a, const float* b, float* c) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(m), int(n), int(k), 1.0f, a, int(k), b, int(n),
              0.0f, c, int(n));
}

void add_bias(std::vector<float>& z, const std::vector<float>& bias) {
  const std::size_t width = bias.size();
  for (std::size_t row = 0; row < z.size(); row += width)
    for (std::size_t j = 0; j < width; ++j) z[row + j] += bias[j];
}

void column_sums(const std::vector<float>& g, std::size_t width, std::vector<float>& out) {
  std::fill(out.begin(), out.end(), 0.0f);
  for (std::size_t row = 0; row < g.size(); row += width)
    for (std::size_t j = 0; j < width; ++j) out[j] += g[row + j];
}

// splitmix64: a fast, well-mixed stream for dropout masks, reproducible from one seed.
std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// a = relu(z), then dropout: keep[i] is 0 or 1/(1-p), a *= keep. Without training keep is 1.
void relu_dropout(const std::vector<float>& z, std::vector<float>& a, std::vector<float>& keep,
                  bool training, double p, std::uint64_t seed) {
  a.resize(z.size());
  keep.assign(z.size(), 1.0f);
  if (training && p > 0.0) {
    const auto threshold = static_cast<std::uint64_t>(p * 18446744073709551616.0);
    const float scale = static_cast<float>(1.0 / (1.0 - p));
    std::uint64_t state = seed;
    for (float& k : keep) k = splitmix64(state) < threshold ? 0.0f : scale;
  }
  for (std::size_t i = 0; i < z.size(); ++i) a[i] = std::max(z[i], 0.0f) * keep[i];
}

}  // namespace

Network::Network(Model& model, const QuantizedModel* packed, Backend* backend)
    : model_(model), packed_(packed), backend_(backend ? backend : &cpu_backend()) {
  first_dense_ = model.architecture == Architecture::Cnn ? 2 : 0;
  for (const Parameter& p : model.parameters) gradients_.emplace_back(p.values.size(), 0.0f);
  if (packed_)  // (none for a weight the file kept as it was: its FP32 values multiply as they are)
    for (std::size_t layer = first_dense_; layer < model.parameters.size(); layer += 2) {
      const Parameter& weight = model.parameters[layer];
      const auto kept = packed_->plain.find(weight.name);
      if (kept == packed_->plain.end()) {
        prepared_.push_back(backend_->prepare(packed_->tensors.at(weight.name).matrix));
        continue;
      }
      const std::size_t count = io::element_count(weight.shape);
      NUQ_REQUIRE(kept->second.size() == count, "network: ", weight.name, " is kept with ", kept->second.size(),
                  " values, its shape holds ", count);
      prepared_.push_back(nullptr);
    }
}

void Network::dense(std::size_t layer, const float* input, std::size_t input_width, std::size_t output_width,
                    std::vector<float>& out) {
  const Parameter& weight = model_.parameters[layer];
  const Parameter& bias = model_.parameters[layer + 1];
  out.resize(batch_ * output_width);
  if (packed_ && prepared_.at((layer - first_dense_) / 2)) {
    backend_->qgemm(input, batch_, *prepared_[(layer - first_dense_) / 2], bias.values.data(), out.data());
    return;
  }
  const std::vector<float>& weights = packed_ ? packed_->plain.at(weight.name) : weight.values;  // (a kept layer)
  backend_->gemm(input, batch_, weights.data(), output_width, input_width, bias.values.data(), out.data());
}

const std::vector<float>& Network::forward(const float* images, std::size_t batch, bool training,
                                           std::uint64_t dropout_seed) {
  batch_ = batch;
  images_ = images;
  const float* input = images;
  std::size_t input_width = kImageSide * kImageSide;
  if (model_.architecture == Architecture::Cnn) {
    const auto& w = model_.parameters[0].values;
    const auto& b = model_.parameters[1].values;
    columns_.resize(batch * kConvPositions * kTaps);
    for (std::size_t n = 0; n < batch; ++n)
      for (std::size_t i = 0; i < kConvSide; ++i)
        for (std::size_t j = 0; j < kConvSide; ++j)
          for (std::size_t di = 0; di < 3; ++di)
            for (std::size_t dj = 0; dj < 3; ++dj)
              columns_[((n * kConvPositions + i * kConvSide + j) * kTaps) + di * 3 + dj] =
                  images[n * kImageSide * kImageSide + (i + di) * kImageSide + j + dj];
    conv_.resize(batch * kConvPositions * kFilters);
    gemm_abt(batch * kConvPositions, kFilters, kTaps, columns_.data(), w.data(), conv_.data());
    add_bias(conv_, b);
    for (float& v : conv_) v = std::max(v, 0.0f);
    // 2x2 max-pool; features in (channel, row, column) order, as PyTorch flattens.
    input_width = kFilters * kPoolSide * kPoolSide;
    features_.resize(batch * input_width);
    pool_argmax_.resize(features_.size());
    for (std::size_t n = 0; n < batch; ++n)
      for (std::size_t c = 0; c < kFilters; ++c)
        for (std::size_t pi = 0; pi < kPoolSide; ++pi)
          for (std::size_t pj = 0; pj < kPoolSide; ++pj) {
            std::uint32_t best = 0;
            float best_value = -1.0f;
            for (std::size_t u = 0; u < 2; ++u)
              for (std::size_t v = 0; v < 2; ++v) {
                const auto index = static_cast<std::uint32_t>(
                    (n * kConvPositions + (2 * pi + u) * kConvSide + 2 * pj + v) * kFilters + c);
                if (conv_[index] > best_value) best_value = conv_[index], best = index;
              }
            const std::size_t f = n * input_width + c * kPoolSide * kPoolSide + pi * kPoolSide + pj;
            features_[f] = best_value;
            pool_argmax_[f] = best;
          }
    input = features_.data();
  }
  const double p = model_.dropout();
  const std::size_t d = first_dense_;
  dense(d, input, input_width, kHidden, z1_);
  relu_dropout(z1_, a1_, keep1_, training, p, dropout_seed * 2 + 1);
  dense(d + 2, a1_.data(), kHidden, kHidden, z2_);
  relu_dropout(z2_, a2_, keep2_, training, p, dropout_seed * 2 + 2);
  dense(d + 4, a2_.data(), kHidden, kClasses, logits_);
  return logits_;
}

double Network::backward(const std::uint8_t* labels) {
  NUQ_ASSERT(batch_ > 0, "backward before forward");
  NUQ_REQUIRE(packed_ == nullptr, "backward: a network on packed codes cannot be trained");
  const std::size_t batch = batch_, d = first_dense_;
  const auto& params = model_.parameters;
  // Softmax cross-entropy: dL/dlogits = (softmax - onehot) / batch.
  // Gradient buffers are members: allocating them per step costs page faults on every batch.
  std::vector<float>& g3 = grad_logits_;
  g3.resize(batch * kClasses);
  double loss = 0.0;
  for (std::size_t n = 0; n < batch; ++n) {
    const float* z = &logits_[n * kClasses];
    const float top = *std::max_element(z, z + kClasses);
    double sum = 0.0;
    for (std::size_t c = 0; c < kClasses; ++c) sum += std::exp(double(z[c]) - top);
    loss += std::log(sum) + top - z[labels[n]];
    for (std::size_t c = 0; c < kClasses; ++c)
      g3[n * kClasses + c] = float((std::exp(double(z[c]) - top) / sum - (c == labels[n])) / batch);
  }
  gemm_atb(kClasses, kHidden, batch, g3.data(), a2_.data(), gradients_[d + 4].data());
  column_sums(g3, kClasses, gradients_[d + 5]);
  std::vector<float>& g2 = grad_z2_;
  g2.resize(batch * kHidden);
  gemm_ab(batch, kHidden, kClasses, g3.data(), params[d + 4].values.data(), g2.data());
  for (std::size_t i = 0; i < g2.size(); ++i) g2[i] *= z2_[i] > 0.0f ? keep2_[i] : 0.0f;
  gemm_atb(kHidden, kHidden, batch, g2.data(), a1_.data(), gradients_[d + 2].data());
  column_sums(g2, kHidden, gradients_[d + 3]);
  std::vector<float>& g1 = grad_z1_;
  g1.resize(batch * kHidden);
  gemm_ab(batch, kHidden, kHidden, g2.data(), params[d + 2].values.data(), g1.data());
  for (std::size_t i = 0; i < g1.size(); ++i) g1[i] *= z1_[i] > 0.0f ? keep1_[i] : 0.0f;
  const float* input = model_.architecture == Architecture::Cnn ? features_.data() : images_;
  const std::size_t input_width = params[d].shape[1];
  gemm_atb(kHidden, input_width, batch, g1.data(), input, gradients_[d].data());
  column_sums(g1, kHidden, gradients_[d + 1]);
  if (model_.architecture == Architecture::Cnn) {
    std::vector<float>& g_features = grad_features_;
    g_features.resize(batch * input_width);
    gemm_ab(batch, input_width, kHidden, g1.data(), params[d].values.data(), g_features.data());
    std::vector<float>& g_conv = grad_conv_;
    g_conv.assign(conv_.size(), 0.0f);
    for (std::size_t f = 0; f < g_features.size(); ++f)
      if (conv_[pool_argmax_[f]] > 0.0f) g_conv[pool_argmax_[f]] = g_features[f];
    gemm_atb(kFilters, kTaps, batch * kConvPositions, g_conv.data(), columns_.data(), gradients_[0].data());
    column_sums(g_conv, kFilters, gradients_[1]);
  }
  return loss / double(batch);
}

std::vector<std::uint8_t> predict(Network& network, const io::Dataset& data) {
  NUQ_REQUIRE(data.features() == kImageSide * kImageSide, "predict: the networks take 28x28 images");
  std::vector<std::uint8_t> classes(data.count);
  constexpr std::size_t kBatch = 1000;
  for (std::size_t start = 0; start < data.count; start += kBatch) {
    const std::size_t n = std::min(kBatch, data.count - start);
    const auto& logits = network.forward(&data.images[start * data.features()], n, false);
    for (std::size_t i = 0; i < n; ++i) {
      const float* row = &logits[i * kClasses];
      // NaN compares false with everything, so max_element would call such an image class 0: weights
      // whose products overflow float32 would be given an accuracy rather than named.
      for (std::size_t c = 0; c < kClasses; ++c)
        NUQ_REQUIRE(std::isfinite(row[c]), "the network's output for image ", start + i, " is ", row[c], " (class ", c,
                    "): its weights or activations overflow float32, so no class can be read from it");
      classes[start + i] = static_cast<std::uint8_t>(std::max_element(row, row + kClasses) - row);
    }
  }
  return classes;
}

std::vector<std::uint8_t> predict(Model& model, const io::Dataset& data) {
  Network network(model);
  return predict(network, data);
}

double accuracy(const std::vector<std::uint8_t>& predicted, const io::Dataset& data) {
  NUQ_REQUIRE(data.count > 0 && predicted.size() == data.count, "accuracy: ", predicted.size(),
              " predictions for ", data.count, " images");
  std::size_t correct = 0;
  for (std::size_t i = 0; i < data.count; ++i) correct += predicted[i] == data.labels[i];
  return 100.0 * double(correct) / double(data.count);
}

double accuracy(Model& model, const io::Dataset& data) { return accuracy(predict(model, data), data); }

}  // namespace nuq
