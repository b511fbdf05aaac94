// What the CUDA backend offers the rest of nuq, without any CUDA header: the library is built
// with kernels/ when nvcc is present (NUQ_CUDA), and with a stand-in that reports "not built"
// otherwise, so callers never need #ifdefs.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "nuq/backend.h"
#include "nuq/codebook.h"
#include "nuq/laplace.h"

namespace nuq::cuda {

// Whether this build contains the CUDA backend.
bool compiled();

struct DeviceInfo {
  int index = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  std::size_t global_memory_bytes = 0;
  int multiprocessors = 0;
  std::size_t shared_memory_per_block_optin = 0;
};

// The devices the runtime can see. Never throws: no driver, no device or a build without CUDA
// all give an empty list, and `unavailable_reason()` says which.
std::vector<DeviceInfo> devices();
std::string unavailable_reason();

// The exact Laplacian distortion of many codebooks at once (sweeps over x_max, searches over
// designs), one thread block per codebook, double precision. Throws nuq::Error when CUDA is
// unavailable or a CUDA call fails (with file:line and the CUDA message).
std::vector<Distortion> laplace_distortion_batch(const std::vector<Codebook>& codebooks,
                                                 double sigma, int device = 0);

// The CUDA backend on device `device`: statistics, the fused quantization pass, dequantization
// and the quantized GEMM, streaming host data through pinned buffers on two streams. Throws
// nuq::Error naming the reason when CUDA or the device is unavailable.
std::unique_ptr<Backend> make_backend(int device = 0);

}  // namespace nuq::cuda
