#include "nuq/cpu_threads.h"

#include <algorithm>
#include <atomic>
#include <string>

#include "nuq/error.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace nuq {
namespace {

std::atomic<int> chosen_threads{0};  // 0: OpenMP's count

}  // namespace

int cpu_threads() {
#if defined(_OPENMP)
  const int chosen = chosen_threads.load(std::memory_order_relaxed);
  return chosen > 0 ? chosen : std::clamp(omp_get_max_threads(), 1, kMaxCpuThreads);
#else
  return 1;
#endif
}

void set_cpu_threads(int threads) {
  if (threads < 0 || threads > kMaxCpuThreads)
    throw Error("thread count " + std::to_string(threads) + ": give 1 to " + std::to_string(kMaxCpuThreads) +
                " threads, or 0 to follow OpenMP's count");
  chosen_threads.store(threads, std::memory_order_relaxed);
}

}  // namespace nuq
