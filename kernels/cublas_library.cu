#include "cublas_library.cuh"

#include <dlfcn.h>
#include <link.h>

#include <string>

#include "cublas_check.cuh"
#include "nuq/cuda.h"
#include "nuq/error.h"

namespace nuq::cuda {
namespace {

#define NUQ_STRINGIFY_EXPANDED(name) NUQ_STRINGIFY(name)
#define NUQ_STRINGIFY(name) #name

// The soname of the major version the headers describe: another major version's ABI differs.
constexpr const char* kSoname = "libcublas.so." NUQ_STRINGIFY_EXPANDED(CUBLAS_VER_MAJOR);

std::string loader_error() {
  const char* text = dlerror();
  return text ? text : "unknown reason";
}

void* open_library() {
  // RTLD_LOCAL: nuq's calls go through the pointers below; a PyTorch in the same process that
  // loaded the same soname already gets that copy back from dlopen, as it would from the loader.
  void* handle = dlopen(kSoname, RTLD_NOW | RTLD_LOCAL);
  if (handle) return handle;
  std::string reasons = loader_error();
#ifdef NUQ_CUBLAS_BUILD_DIR
  // The toolkit this was built against, where its folder is in no search path.
  const std::string built_against = std::string(NUQ_CUBLAS_BUILD_DIR) + "/" + kSoname;
  handle = dlopen(built_against.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle) return handle;
  reasons += "; " + loader_error();
#endif
  throw Error(std::string("cuBLAS could not be loaded (") + kSoname + ": " + reasons +
              "); the CUDA backend needs the CUDA " NUQ_STRINGIFY_EXPANDED(CUBLAS_VER_MAJOR) " toolkit's "
              "libraries on the loader's path (LD_LIBRARY_PATH or the loader's cache)");
}

template <typename Function>
void resolve(void* handle, const char* symbol, Function& into) {
  dlerror();  // clear
  void* address = dlsym(handle, symbol);
  if (!address) throw Error(std::string("cuBLAS (") + kSoname + ") has no " + symbol + ": " + loader_error());
  into = reinterpret_cast<Function>(address);
}

// `name` as cublas_v2.h spells the call; the macros there turn cublasCreate into cublasCreate_v2.
#define NUQ_RESOLVE(handle, name, field) resolve(handle, NUQ_STRINGIFY_EXPANDED(name), library.field)

CublasLibrary load() {
  void* handle = open_library();
  CublasLibrary library{};
  try {
    NUQ_RESOLVE(handle, cublasCreate, create);
    NUQ_RESOLVE(handle, cublasDestroy, destroy);
    NUQ_RESOLVE(handle, cublasSetStream, set_stream);
    NUQ_RESOLVE(handle, cublasSetMathMode, set_math_mode);
    NUQ_RESOLVE(handle, cublasSgemm, sgemm);
    NUQ_RESOLVE(handle, cublasGemmEx, gemm_ex);
    NUQ_RESOLVE(handle, cublasGetStatusString, status_string);
    NUQ_RESOLVE(handle, cublasGetProperty, get_property);
  } catch (...) {
    dlclose(handle);
    throw;
  }
  const link_map* map = nullptr;
  library.path = dlinfo(handle, RTLD_DI_LINKMAP, &map) == 0 && map && map->l_name ? map->l_name : kSoname;
  return library;  // the handle stays open for the life of the process
}

#undef NUQ_RESOLVE

}  // namespace

const CublasLibrary& cublas() {
  // Never destroyed, as the handle is never closed: a backend that lives until the process exits
  // destroys its cuBLAS handles through it after every static destructor has run. A throw leaves
  // it to be tried again by the next call.
  static const CublasLibrary* library = new CublasLibrary(load());
  return *library;
}

std::string cublas_library() {
  const CublasLibrary& library = cublas();
  int major = 0, minor = 0, patch = 0;
  NUQ_CUBLAS_CHECK(library.get_property(MAJOR_VERSION, &major));
  NUQ_CUBLAS_CHECK(library.get_property(MINOR_VERSION, &minor));
  NUQ_CUBLAS_CHECK(library.get_property(PATCH_LEVEL, &patch));
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch) + " (" + library.path + ")";
}

}  // namespace nuq::cuda
