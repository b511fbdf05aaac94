// The machine a result came from. Training runs through OpenBLAS, which picks its SGEMM kernel by
// processor at run time; kernels differ in the order they add, so the same seed gives the same
// weights bit for bit only with the same nuq build, the same OpenBLAS kernel ("core") and the same
// thread count. Models and reports record this so that a difference can be traced to its cause.
#pragma once

#include <string>

namespace nuq {

struct Platform {
  std::string processor;  // /proc/cpuinfo's "model name", or "unknown"
  std::string blas;       // openblas_get_config(): version and build options
  std::string blas_core;  // openblas_get_corename(): the kernel family chosen for this processor
  int threads = 1;        // OpenMP threads nuq's own loops use
};

Platform this_platform();

// One line: "AMD EPYC 9R14 (16 threads), OpenBLAS 0.3.21 ... core Zen".
std::string summary(const Platform& platform);

}  // namespace nuq
