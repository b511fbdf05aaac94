// The current CUDA device is a property of the calling host thread, shared with everything else
// the thread runs (PyTorch keeps its own there). nuq makes its device current only for the span of
// one of its calls and gives the thread its previous one back after, so that a product on GPU 1
// never leaves a caller's later torch.cuda allocations on GPU 1 (or, made on another, on GPU 0).
#pragma once

#include <cuda.h>  // the driver's types only: its one function used here is looked up, not linked
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include "cuda_check.cuh"

namespace nuq::cuda {

// Whether `device` has an active primary context. Since CUDA 12 cudaSetDevice creates one at once,
// so handing back a device the thread never used would put a context (hundreds of MiB) on a GPU
// nuq was not asked to touch; PyTorch's device guard asks the same before it restores. Unknown
// (the driver entry point missing) counts as yes, the plain restore.
inline bool has_primary_context(int device) {
  static const PFN_cuDevicePrimaryCtxGetState_v7000 get_state = [] {
    void* function = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    const cudaError_t status =
        cudaGetDriverEntryPointByVersion("cuDevicePrimaryCtxGetState", &function, 7000, cudaEnableDefault, &found);
    if (status != cudaSuccess) cudaGetLastError();  // a runtime call's error would outlive it as the last error
    return status == cudaSuccess && found == cudaDriverEntryPointSuccess
               ? reinterpret_cast<PFN_cuDevicePrimaryCtxGetState_v7000>(function)
               : nullptr;
  }();
  if (!get_state) return true;
  unsigned int flags = 0;
  int active = 0;
  // A CUdevice is the ordinal the runtime numbers devices by (both honour CUDA_VISIBLE_DEVICES).
  return get_state(CUdevice(device), &flags, &active) != CUDA_SUCCESS || active != 0;
}

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
    // A previous device without a context is the thread's untouched default: left alone, as PyTorch
    // leaves it (the thread's current device then stays this one).
    if (previous_ != device_ && has_primary_context(previous_)) NUQ_CUDA_CHECK_NOTHROW(cudaSetDevice(previous_));
  }

 private:
  int device_;
  int previous_ = 0;
};

}  // namespace nuq::cuda
