// cuBLAS calls are checked like CUDA calls: a failure throws nuq::Error with file:line, the
// statement and cuBLAS's own status text.
#pragma once

#include <cublas_v2.h>

#include <cstdio>
#include <string>

#include "cublas_library.cuh"
#include "nuq/error.h"

#define NUQ_CUBLAS_CHECK(statement)                                                                \
  do {                                                                                             \
    const cublasStatus_t nuq_status_ = (statement);                                                \
    if (nuq_status_ != CUBLAS_STATUS_SUCCESS)                                                      \
      throw ::nuq::Error(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": cuBLAS error in `" + \
                         #statement + "`: " + ::nuq::cuda::cublas().status_string(nuq_status_));  \
  } while (0)

// For destructors, which must not throw: a failure is reported on stderr. (A handle to destroy
// means the library was loaded, so cublas() returns without loading anything.)
#define NUQ_CUBLAS_CHECK_NOTHROW(statement)                                                       \
  do {                                                                                            \
    const cublasStatus_t nuq_status_ = (statement);                                               \
    if (nuq_status_ != CUBLAS_STATUS_SUCCESS)                                                     \
      std::fprintf(stderr, "%s:%d: cuBLAS error in `%s`: %s\n", __FILE__, __LINE__, #statement,   \
                   ::nuq::cuda::cublas().status_string(nuq_status_));                             \
  } while (0)
