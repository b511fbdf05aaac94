// Device discovery for the "best available backend" choice: a failing cudaGetDeviceCount (no
// driver, no device) means "use the CPU", never an error.
#include "nuq/cuda.h"

#include <cuda_runtime.h>

#include "cuda_check.cuh"

namespace nuq::cuda {
namespace {

struct Discovery {
  std::vector<DeviceInfo> devices;
  std::string reason;
};

Discovery discover() {
  Discovery found;
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" state for later calls
    // The runtime words these for developers ("CUDA driver version is insufficient for CUDA
    // runtime version" is also what a machine with no GPU driver at all reports).
    if (status == cudaErrorInsufficientDriver)
      found.reason = "no CUDA device: no NVIDIA driver is loaded, or it is older than this build's CUDA runtime";
    else if (status == cudaErrorNoDevice)
      found.reason = "no CUDA device is visible (check CUDA_VISIBLE_DEVICES)";
    else
      found.reason = std::string("no usable CUDA device: ") + cudaGetErrorString(status);
    return found;
  }
  if (count == 0) found.reason = "the CUDA runtime reports no device";
  for (int index = 0; index < count; ++index) {
    cudaDeviceProp prop{};
    NUQ_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
    DeviceInfo info{index, prop.name, prop.major, prop.minor, prop.totalGlobalMem,
                    prop.multiProcessorCount, prop.sharedMemPerBlockOptin};
    info.l2_bytes = std::size_t(prop.l2CacheSize);
    info.memory_bus_bits = prop.memoryBusWidth;
    // CUDA 13 keeps the clocks out of cudaDeviceProp; the attributes still give them.
    NUQ_CUDA_CHECK(cudaDeviceGetAttribute(&info.memory_clock_khz, cudaDevAttrMemoryClockRate, index));
    NUQ_CUDA_CHECK(cudaDeviceGetAttribute(&info.sm_clock_khz, cudaDevAttrClockRate, index));
    found.devices.push_back(info);
  }
  return found;
}

}  // namespace

bool compiled() { return true; }

std::vector<DeviceInfo> devices() {
  try {
    return discover().devices;
  } catch (const Error&) {
    return {};
  }
}

std::string unavailable_reason() {
  try {
    return discover().reason;
  } catch (const Error& e) {
    return e.what();
  }
}

}  // namespace nuq::cuda
