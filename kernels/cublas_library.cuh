// cuBLAS, loaded when it is first used rather than when the process starts.
//
// Linked as a dependency, libcublas.so.13 and the libcublasLt.so.13 it loads run their
// initialisers in every process that carries the CUDA backend: 0.4 s of each `nuq --help` on the
// 2-core build machine (nearly all of it libcublasLt's, and page faults), in every run of the tool,
// of the test binaries (once a test) and in `import nuq`, whether or not a GPU is there or used.
// Only the FP32 reference GEMM, the dequantize-then-cuBLAS kernel and the benchmarks' peers call
// it, so the library is opened with dlopen by its soname on first use, found exactly as the
// loader would have found it (LD_LIBRARY_PATH, the caller's RUNPATH, the loader's cache), with the
// build's own toolkit folder as a last resort.
#pragma once

#include <cublas_v2.h>

#include <string>
#include <type_traits>

namespace nuq::cuda {

// The entry points nuq calls, typed from cublas_v2.h (whose macros name the _v2 symbols).
// cublasGemmEx is overloaded for C++ (an inline one takes the older cudaDataType compute type):
// the exported one takes a cublasComputeType_t.
using CublasGemmEx = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                                        const void*, const void*, cudaDataType, int, const void*, cudaDataType,
                                        int, const void*, void*, cudaDataType, int, cublasComputeType_t,
                                        cublasGemmAlgo_t);
// The cast compiles only if an overload of cublasGemmEx has exactly this type.
static_assert(std::is_same_v<decltype(static_cast<CublasGemmEx>(&::cublasGemmEx)), CublasGemmEx>,
              "no cublasGemmEx has the type CublasGemmEx");
struct CublasLibrary {
  decltype(&::cublasCreate) create;
  decltype(&::cublasDestroy) destroy;
  decltype(&::cublasSetStream) set_stream;
  decltype(&::cublasSetMathMode) set_math_mode;
  decltype(&::cublasSgemm) sgemm;
  CublasGemmEx gemm_ex;
  decltype(&::cublasGetStatusString) status_string;
  decltype(&::cublasGetProperty) get_property;
  std::string path;  // the file the loader opened
};

// The library, opened by the first call (thread-safe; a failed load is tried again by the next
// call). Throws nuq::Error naming the soname and the loader's reason when it cannot be opened or
// lacks one of the entry points above.
const CublasLibrary& cublas();

}  // namespace nuq::cuda
