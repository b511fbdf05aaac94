// make_backend(Device): compiled into both the CUDA backend and its stand-in, so that nuq_core
// itself never depends on either.
#include "nuq/backend.h"
#include "nuq/cuda.h"
#include "nuq/error.h"

namespace nuq {

std::unique_ptr<Backend> make_backend(Device device) {
  if (device == Device::Cpu) return make_cpu_backend();
  if (cuda::devices().empty()) {
    NUQ_REQUIRE(device == Device::Auto, "--device cuda: ", cuda::unavailable_reason());
    return make_cpu_backend();
  }
  return cuda::make_backend(0);
}

}  // namespace nuq
