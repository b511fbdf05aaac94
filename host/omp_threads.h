// The index of the calling thread, and ordered_sum: the reduction every statistic and total of the
// CPU path goes through, so that sums do not depend on the thread count (nor on which thread
// finishes first): the same weights give the same mean, σ, SQNR and codes on 2 cores and on 128.
// Every `omp parallel` of nuq, ordered_sum's too, runs on cpu_threads() (nuq/cpu_threads.h), named
// in a num_threads clause so that no other library's omp_set_num_threads changes it.
#pragma once

#include <cstddef>
#include <exception>
#include <limits>
#include <vector>

#include "nuq/cpu_threads.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace nuq {

#if defined(_OPENMP)
inline int thread_index() { return omp_get_thread_num(); }
#else
inline int thread_index() { return 0; }
#endif

// part(b) for every block b in [0, blocks), spread over the cores, joined in block order:
// join(...join(join(T{}, part(0)), part(1))..., part(blocks - 1)). Callers cut the blocks from the
// data's size alone, so the result is the same for every thread count. An exception thrown by a
// part is rethrown after the region, the one of the lowest block (the one a serial loop would meet).
template <typename T, typename Part, typename Join>
T ordered_sum(std::size_t blocks, const Part& part, const Join& join) {
  std::vector<T> parts(blocks);
  std::exception_ptr error;  // no exception may leave an OpenMP region: kept, rethrown after it
  std::size_t error_block = std::numeric_limits<std::size_t>::max();
#pragma omp parallel for schedule(static) if (blocks > 1) num_threads(cpu_threads())
  for (std::ptrdiff_t b = 0; b < static_cast<std::ptrdiff_t>(blocks); ++b) {
    try {
      parts[std::size_t(b)] = part(std::size_t(b));
    } catch (...) {
#pragma omp critical(nuq_ordered_sum_error)
      if (std::size_t(b) < error_block) error_block = std::size_t(b), error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
  T total{};
  for (const T& p : parts) total = join(total, p);
  return total;
}

}  // namespace nuq
