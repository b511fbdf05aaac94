// Every CUDA runtime call and kernel launch in nuq goes through these checks: a failure throws
// nuq::Error carrying file:line, the statement and cudaGetErrorString (after tiny-cuda-nn's
// CUDA_CHECK_THROW). NUQ_CUDA_CHECK_NOTHROW is for destructors, which must not throw.
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <string>

#include "nuq/error.h"

namespace nuq::cuda::detail {

// A failed call also leaves its error as the thread's "last error" until cudaGetLastError reads
// it: a caller that catches this and carries on (a test's next case, a retry after freeing memory)
// would have its next launch check report this old error at a kernel that launched fine. Reading
// it here clears it; a sticky error (a fault) stays, and every later call reports it anyway.
inline void clear_last_error() { (void)cudaGetLastError(); }

[[noreturn]] inline void throw_cuda_error(cudaError_t status, const char* statement, const char* file,
                                          int line) {
  clear_last_error();
  throw Error(std::string(file) + ":" + std::to_string(line) + ": CUDA error in `" + statement +
              "`: " + cudaGetErrorName(status) + ": " + cudaGetErrorString(status));
}

}  // namespace nuq::cuda::detail

#define NUQ_CUDA_CHECK(statement)                                                     \
  do {                                                                                \
    const cudaError_t nuq_status_ = (statement);                                      \
    if (nuq_status_ != cudaSuccess)                                                   \
      ::nuq::cuda::detail::throw_cuda_error(nuq_status_, #statement, __FILE__, __LINE__); \
  } while (0)

// After a <<<...>>> launch: configuration errors show at once, faults at the next sync.
#define NUQ_CUDA_CHECK_LAUNCH() NUQ_CUDA_CHECK(cudaGetLastError())

#define NUQ_CUDA_CHECK_NOTHROW(statement)                                              \
  do {                                                                                 \
    const cudaError_t nuq_status_ = (statement);                                       \
    if (nuq_status_ != cudaSuccess) {                                                  \
      ::nuq::cuda::detail::clear_last_error();                                         \
      std::fprintf(stderr, "%s:%d: CUDA error in `%s`: %s\n", __FILE__, __LINE__, #statement, \
                   cudaGetErrorString(nuq_status_));                                   \
    }                                                                                  \
  } while (0)
