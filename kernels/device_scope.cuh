// The current CUDA device is a property of the calling host thread, shared with everything else
// the thread runs (PyTorch keeps its own there). nuq makes its device current only for the span of
// one of its calls and gives the thread its previous one back after, so that a product on GPU 1
// never leaves a caller's later torch.cuda allocations on GPU 1 (or, made on another, on GPU 0).
#pragma once

#include <cuda_runtime.h>

#include "cuda_check.cuh"

namespace nuq::cuda {

class DeviceScope {
 public:
  explicit DeviceScope(int device) : device_(device) {
    NUQ_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device_) NUQ_CUDA_CHECK(cudaSetDevice(device_));
  }
  // For destructors, which cannot throw: a failure is reported, and the scope then restores nothing.
  struct NoThrow {};
  DeviceScope(int device, NoThrow) : device_(device), previous_(device) {
    int current = device;
    NUQ_CUDA_CHECK_NOTHROW(cudaGetDevice(&current));
    if (current == device_) return;
    const cudaError_t status = cudaSetDevice(device_);
    NUQ_CUDA_CHECK_NOTHROW(status);
    if (status == cudaSuccess) previous_ = current;
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;
  ~DeviceScope() {
    if (previous_ != device_) NUQ_CUDA_CHECK_NOTHROW(cudaSetDevice(previous_));
  }

 private:
  int device_;
  int previous_ = 0;
};

}  // namespace nuq::cuda
