// The thread count and index of OpenMP, or one thread in a build without it: for the code that
// keeps one part per thread and joins the parts in thread order (so sums repeat run to run).
#pragma once

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace nuq {

#if defined(_OPENMP)
inline int max_threads() { return omp_get_max_threads(); }
inline int thread_index() { return omp_get_thread_num(); }
#else
inline int max_threads() { return 1; }
inline int thread_index() { return 0; }
#endif

}  // namespace nuq
