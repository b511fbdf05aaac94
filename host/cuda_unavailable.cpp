// The CUDA backend's stand-in for builds without nvcc (NUQ_CUDA=OFF or no CUDA compiler).
#include "nuq/cuda.h"
#include "nuq/error.h"

namespace nuq::cuda {

bool compiled() { return false; }
std::vector<DeviceInfo> devices() { return {}; }
std::string unavailable_reason() { return "nuq was built without the CUDA backend (NUQ_CUDA=OFF or no nvcc)"; }
std::string cublas_library() { throw Error("cuBLAS: " + unavailable_reason()); }

std::vector<Distortion> laplace_distortion_batch(const std::vector<Codebook>&, double, int) {
  throw Error("laplace_distortion_batch: " + unavailable_reason());
}

std::unique_ptr<Backend> make_backend(int, std::size_t, Precision, QgemmKernel) { throw Error("the CUDA backend: " + unavailable_reason()); }

std::unique_ptr<Backend> make_device_resident_backend(int) { throw Error("the CUDA backend: " + unavailable_reason()); }

void qgemm_on_device(Backend&, const float*, std::size_t, const PreparedWeights&, const float*, float*, std::uintptr_t) {
  throw Error("qgemm_on_device: " + unavailable_reason());
}

void qgemm_bf16_activations(const std::uint16_t*, std::size_t, const QuantizedMatrix&, const float*, float*, int) {
  throw Error("qgemm_bf16_activations: " + unavailable_reason());
}

}  // namespace nuq::cuda

namespace nuq::cuda {

PipelineTimes time_pipeline(std::size_t, const Codebook&, int, int, int) {
  throw Error("time_pipeline: " + unavailable_reason());
}
double time_copy(std::size_t, int, int) { throw Error("time_copy: " + unavailable_reason()); }
double time_read(std::size_t, int, int) { throw Error("time_read: " + unavailable_reason()); }
double time_qgemm(std::size_t, std::size_t, std::size_t, int, int, int, Precision, QgemmKernel) {
  throw Error("time_qgemm: " + unavailable_reason());
}
double time_cublas(std::size_t, std::size_t, std::size_t, DensePeer, int, int) {
  throw Error("time_cublas: " + unavailable_reason());
}

}  // namespace nuq::cuda

namespace nuq::cuda {

DeviceInference infer_mlp(const Model&, const QuantizedModel*, const io::Dataset&, std::size_t, int, Precision,
                          MlpLayout) {
  throw Error("infer_mlp: " + unavailable_reason());
}

}  // namespace nuq::cuda
