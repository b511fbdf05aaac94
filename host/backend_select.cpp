// make_backend(Device) and cuda::peak_bandwidth_gbs: compiled into both the CUDA backend and its
// stand-in, so that nuq_core itself never depends on either.
#include "nuq/backend.h"
#include "nuq/cuda.h"
#include "nuq/error.h"

namespace nuq {

std::unique_ptr<Backend> make_backend(Device device) {
  if (device == Device::Cpu) return make_cpu_backend();
  if (cuda::devices().empty()) {
    NUQ_REQUIRE(device == Device::Auto, "device cuda: ", cuda::unavailable_reason());
    return make_cpu_backend();
  }
  return cuda::make_backend(0);
}

}  // namespace nuq

namespace nuq::cuda {

// Plain arithmetic on what the device reported, so it lives here, beside both builds' devices().
double peak_bandwidth_gbs(const DeviceInfo& device) {
  return 2.0 * double(device.memory_clock_khz) * 1e3 * double(device.memory_bus_bits) / 8.0 / 1e9;
}

}  // namespace nuq::cuda
