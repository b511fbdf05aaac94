// The CUDA backend's stand-in for builds without nvcc (NUQ_CUDA=OFF or no CUDA compiler).
#include "nuq/cuda.h"
#include "nuq/error.h"

namespace nuq::cuda {

bool compiled() { return false; }
std::vector<DeviceInfo> devices() { return {}; }
std::string unavailable_reason() { return "nuq was built without the CUDA backend (NUQ_CUDA=OFF or no nvcc)"; }

std::vector<Distortion> laplace_distortion_batch(const std::vector<Codebook>&, double, int) {
  throw Error("laplace_distortion_batch: " + unavailable_reason());
}

std::unique_ptr<Backend> make_backend(int) { throw Error("the CUDA backend: " + unavailable_reason()); }

}  // namespace nuq::cuda
