// The MNIST MLP resident on the device, FP32 (cuBLAS) or quantized (qgemm kernels): #5's network
// comparison. See infer_mlp in include/nuq/cuda.h.
#include <climits>
#include <vector>

#include "cublas_check.cuh"
#include "cuda_check.cuh"
#include "device_buffer.cuh"
#include "device_scope.cuh"
#include "device_weights.cuh"
#include "nuq/cuda.h"
#include "nuq/error.h"
#include "nuq/io/dataset.h"
#include "nuq/model.h"
#include "nuq/packed.h"
#include "nuq/ptq.h"
#include "fused_mlp.cuh"
#include "qgemm.cuh"

namespace nuq::cuda {
namespace {

constexpr std::size_t kInputs = 784, kHidden = 512, kClasses = 10;

// One thread per image: the first largest logit, as the CPU's std::max_element picks it.
__global__ void argmax_kernel(const float* __restrict__ logits, std::size_t m, std::uint8_t* __restrict__ classes) {
  const std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= m) return;
  const float* z = logits + i * kClasses;
  unsigned best = 0;
  for (unsigned c = 1; c < kClasses; ++c)
    if (z[c] > z[best]) best = c;
  classes[i] = std::uint8_t(best);
}

unsigned blocks_for(std::size_t count, unsigned threads) { return unsigned((count + threads - 1) / threads); }

// One dense layer's weights on the device: FP32 for cuBLAS, or packed codes and levels.
struct Layer {
  std::size_t rows = 0, cols = 0;
  DeviceBuffer<float> weights{0}, bias{0};
  DeviceWeights packed;
};

Layer upload_layer(const Model& model, const QuantizedModel* quantized, const std::string& name, std::size_t rows,
                   std::size_t cols) {
  Layer layer;
  layer.rows = rows;
  layer.cols = cols;
  // The quantized network's biases are its own (Algorithm 1 quantizes them too): the FP32 model's
  // would give a different network from the one the CPU runs from the same file.
  layer.bias = DeviceBuffer<float>(quantized ? quantized->values_of(name + ".bias") : model.at(name + ".bias").values);
  NUQ_REQUIRE(layer.bias.size() == rows, "infer_mlp: ", name, ".bias has ", layer.bias.size(), " values, not ", rows);
  if (!quantized) {
    layer.weights = DeviceBuffer<float>(model.at(name + ".weight").values);
    NUQ_REQUIRE(layer.weights.size() == rows * cols, "infer_mlp: ", name, ".weight is not ", rows, " x ", cols);
    return layer;
  }
  NUQ_REQUIRE(!quantized->plain.count(name + ".weight"), "infer_mlp: ", name,
              ".weight is kept unquantized in this file; the device MLP runs packed layers (nuq eval runs it)");
  const QuantizedMatrix& w = quantized->tensors.at(name + ".weight").matrix;
  NUQ_REQUIRE(w.codes.rows == rows && w.codes.cols == cols, "infer_mlp: ", name, ".weight is not ", rows, " x ", cols);
  layer.packed = upload_weights(w, "infer_mlp: " + name + ".weight");
  return layer;
}

class Mlp {
 public:
  Mlp(const Model& model, const QuantizedModel* quantized, std::size_t batch, Precision precision, MlpLayout layout)
      : quantized_(quantized), precision_(precision), layout_(layout) {
    layers_.push_back(upload_layer(model, quantized, "fc1", kHidden, kInputs));
    layers_.push_back(upload_layer(model, quantized, "fc2", kHidden, kHidden));
    layers_.push_back(upload_layer(model, quantized, "fc3", kClasses, kHidden));
    hidden1_ = DeviceBuffer<float>(batch * kHidden);
    hidden2_ = DeviceBuffer<float>(batch * kHidden);
    logits_ = DeviceBuffer<float>(batch * kClasses);
    try {
      NUQ_CUDA_CHECK(cudaStreamCreate(&stream_));
      if (!quantized_) {
        NUQ_CUBLAS_CHECK(cublas().create(&cublas_));
        NUQ_CUBLAS_CHECK(cublas().set_math_mode(cublas_, CUBLAS_PEDANTIC_MATH));  // FP32, no TF32
        NUQ_CUBLAS_CHECK(cublas().set_stream(cublas_, stream_));
      }
    } catch (...) {
      release();
      throw;
    }
  }
  Mlp(const Mlp&) = delete;
  Mlp& operator=(const Mlp&) = delete;
  ~Mlp() { release(); }

  cudaStream_t stream() const { return stream_; }

  // Classes of `m` images at `images` (device memory) into `classes` (device memory). Quantized
  // batches of up to kFusedMaxBatch images of one code width take the one-kernel MLP.
  void forward(const float* images, std::size_t m, std::uint8_t* classes) {
    if (quantized_ && m <= kFusedMaxBatch && layers_[0].packed.view.bits == layers_[1].packed.view.bits &&
        layers_[1].packed.view.bits == layers_[2].packed.view.bits) {
      const FusedMlp fused{{layers_[0].packed.view, layers_[1].packed.view, layers_[2].packed.view},
                           {layers_[0].bias.data(), layers_[1].bias.data(), layers_[2].bias.data()}};
      launch_fused_mlp(images, m, fused, classes, stream_, layout_);
      return;
    }
    dense(layers_[0], images, m, hidden1_.data(), true);
    dense(layers_[1], hidden1_.data(), m, hidden2_.data(), true);
    dense(layers_[2], hidden2_.data(), m, logits_.data(), false);
    argmax_kernel<<<blocks_for(m, 128), 128, 0, stream_>>>(logits_.data(), m, classes);
    NUQ_CUDA_CHECK_LAUNCH();
  }

 private:
  void dense(Layer& layer, const float* x, std::size_t m, float* y, bool relu) {
    if (quantized_) {
      launch_qgemm(x, m, layer.packed.view, layer.bias.data(), relu, y, stream_, precision_);
      return;
    }
    // Row-major Y[m, rows] = X W^T is column-major Y^T = W (row-major [rows, cols]: op T) * X^T.
    const float one = 1.0f, zero = 0.0f;
    NUQ_CUBLAS_CHECK(cublas().sgemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, int(layer.rows), int(m), int(layer.cols), &one,
                                 layer.weights.data(), int(layer.cols), x, int(layer.cols), &zero, y,
                                 int(layer.rows)));
    launch_bias_relu(y, m, layer.rows, layer.bias.data(), relu, stream_);
  }

  void release() noexcept {  // a destructor does not throw: failures are reported, not raised
    if (cublas_) NUQ_CUBLAS_CHECK_NOTHROW(cublas().destroy(cublas_));
    // cudaStreamDestroy returns at once, work still queued; the layers' memory is freed after this,
    // so what was launched (an error may have cut a forward pass short) finishes first.
    if (stream_) NUQ_CUDA_CHECK_NOTHROW(cudaStreamSynchronize(stream_));
    if (stream_) NUQ_CUDA_CHECK_NOTHROW(cudaStreamDestroy(stream_));
    cublas_ = nullptr;
    stream_ = nullptr;
  }

  const QuantizedModel* quantized_;
  Precision precision_;
  MlpLayout layout_;
  std::vector<Layer> layers_;
  DeviceBuffer<float> hidden1_{0}, hidden2_{0}, logits_{0};
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
};

// Events destroyed on every path (a destructor does not throw: failures are reported).
struct Events {
  cudaEvent_t start = nullptr, stop = nullptr;
  Events() {
    NUQ_CUDA_CHECK(cudaEventCreate(&start));
    NUQ_CUDA_CHECK(cudaEventCreate(&stop));
  }
  ~Events() {
    NUQ_CUDA_CHECK_NOTHROW(cudaEventDestroy(start));
    NUQ_CUDA_CHECK_NOTHROW(cudaEventDestroy(stop));
  }
};

}  // namespace

DeviceInference infer_mlp(const Model& model, const QuantizedModel* quantized, const io::Dataset& data,
                          std::size_t batch, int device, Precision precision, MlpLayout layout) {
  NUQ_REQUIRE(model.architecture == Architecture::Mlp, "infer_mlp: the model is not the MLP");
  NUQ_REQUIRE(!quantized || quantized->architecture == Architecture::Mlp, "infer_mlp: the quantized model is not the MLP");
  NUQ_REQUIRE(data.rows * data.cols == kInputs && data.images.size() == data.count * kInputs,
              "infer_mlp: images must be 28 x 28 (", data.rows, " x ", data.cols, " given)");
  NUQ_REQUIRE(batch > 0 && batch <= std::size_t(INT_MAX), "infer_mlp: batch must be 1 to ", INT_MAX, " images");
  const DeviceScope on_device(device);
  DeviceInference result;
  result.predictions.resize(data.count);
  if (data.count == 0) return result;
  batch = std::min(batch, data.count);
  const DeviceBuffer<float> images(data.images);
  DeviceBuffer<std::uint8_t> classes(data.count);
  Mlp mlp(model, quantized, batch, precision, layout);
  mlp.forward(images.data(), batch, classes.data());  // warm-up: cuBLAS heuristics, kernel loading
  Events events;
  NUQ_CUDA_CHECK(cudaEventRecord(events.start, mlp.stream()));
  for (std::size_t first = 0; first < data.count; first += batch)
    mlp.forward(images.data() + first * kInputs, std::min(batch, data.count - first), classes.data() + first);
  NUQ_CUDA_CHECK(cudaEventRecord(events.stop, mlp.stream()));
  NUQ_CUDA_CHECK(cudaEventSynchronize(events.stop));
  float ms = 0.0f;
  NUQ_CUDA_CHECK(cudaEventElapsedTime(&ms, events.start, events.stop));
  result.milliseconds = ms;
  NUQ_CUDA_CHECK(cudaMemcpy(result.predictions.data(), classes.data(), data.count, cudaMemcpyDeviceToHost));
  return result;
}

}  // namespace nuq::cuda
