// Forward and backward passes of the papers' networks on the CPU: batch-major float32 with
// OpenBLAS for every matrix product (the convolution as im2col + GEMM).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "nuq/io/dataset.h"
#include "nuq/model.h"
#include "nuq/prepared_weights.h"

namespace nuq {

struct QuantizedModel;
class Backend;

class Network {
 public:
  // With `packed`, the dense layers multiply straight from its packed codes (qgemm) and the
  // model's own fc weights are not read (they may be empty); a layer `packed` keeps as it was
  // (QuantizedModel::plain) multiplies those values by FP32 gemm. Conv weights and biases are read.
  // `backend` runs the dense layers' products, quantized (qgemm) or FP32 (gemm: cuBLAS on CUDA),
  // the CPU unless told otherwise; the convolution and training stay on the CPU. The packed
  // layers are prepared for the backend here, once (so `packed` must outlive the network).
  explicit Network(Model& model, const QuantizedModel* packed = nullptr, Backend* backend = nullptr);

  // Logits [batch, 10] for `batch` 28x28 images with pixels in [0, 1]. With `training`, dropout
  // is applied (inverted: kept units scaled by 1/(1-p)) from a mask seeded by `dropout_seed`.
  const std::vector<float>& forward(const float* images, std::size_t batch, bool training,
                                    std::uint64_t dropout_seed = 0);

  // After a forward pass: the gradients of the mean softmax cross-entropy with respect to every
  // parameter (parallel to model.parameters). Returns the loss.
  double backward(const std::uint8_t* labels);
  const std::vector<std::vector<float>>& gradients() const { return gradients_; }

 private:
  struct DenseLayer;
  void dense(std::size_t layer, const float* input, std::size_t input_width, std::size_t output_width,
             std::vector<float>& out);
  Model& model_;
  const QuantizedModel* packed_;
  Backend* backend_;
  std::vector<std::unique_ptr<PreparedWeights>> prepared_;  // the packed dense layers, in order
  std::size_t batch_ = 0;
  std::size_t first_dense_ = 0;  // index of fc1.weight in the parameter list
  const float* images_ = nullptr;
  // Convolution front end (CNN only).
  std::vector<float> columns_, conv_, features_;
  std::vector<std::uint32_t> pool_argmax_;
  // Dense stack: pre-activations, post-ReLU-and-dropout activations, dropout scales.
  std::vector<float> z1_, a1_, keep1_, z2_, a2_, keep2_, logits_;
  std::vector<float> grad_logits_, grad_z2_, grad_z1_, grad_features_, grad_conv_;
  std::vector<std::vector<float>> gradients_;
};

// Classes predicted for every image of a dataset, in batches, without dropout.
std::vector<std::uint8_t> predict(Network& network, const io::Dataset& data);
std::vector<std::uint8_t> predict(Model& model, const io::Dataset& data);
double accuracy(const std::vector<std::uint8_t>& predicted, const io::Dataset& data);  // percent
double accuracy(Model& model, const io::Dataset& data);

}  // namespace nuq
