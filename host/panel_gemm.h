// Internal to host/: Y = X * W^T + bias for a W of packed codes too large to decode whole, through
// panels of decoded rows handed to OpenBLAS (host/qgemm.cpp, host/grouped.cpp).
#pragma once

#include <cblas.h>

#include <algorithm>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>

#include "nuq/qgemm.h"
#include "omp_threads.h"
#include "row_blocks.h"

namespace nuq::detail {

// The FP32 rows each thread decodes for one sgemm. Every thread decodes and multiplies panels of
// its own, on a single-threaded OpenBLAS, so a panel is read back while it is still in the core's
// caches. Measured at 4096 x 4096 on 2 cores (medians of four alternating runs, same binary): 2 MiB
// panels gave 0.79-0.97x OpenBLAS on FP32 weights at m = 64 and 256, 4 and 8 bits, against
// 0.68-0.82x for the one-thread decode of 8 MiB panels multiplied by a two-thread OpenBLAS that
// came before; 0.5-1 MiB ones paid for OpenBLAS packing X again on every call, 3-8 MiB ones fell
// out of the caches.
constexpr std::size_t kPanelBytes = std::size_t{2} << 20;

// While one lives, OpenBLAS runs each call on its caller's thread, so that every thread can decode
// a panel of its own and multiply it: decoding the panels on one thread while OpenBLAS multiplied
// them on all left the other cores idle for a third of the time, and an OpenMP decode between
// OpenBLAS's multi-threaded calls was 2-4x slower (libgomp's and OpenBLAS's threads spin against
// each other). OpenBLAS's thread count is one setting for the process: the first guard saves it,
// the last one puts it back, so concurrent products never leave it at 1. A call the process makes
// into OpenBLAS elsewhere meanwhile runs on one thread too (slower, the same result).
class BlasOnCallersThread {
 public:
  BlasOnCallersThread() {
    const std::lock_guard<std::mutex> lock(state().mutex);
    if (state().guards++ == 0) {
      state().saved = openblas_get_num_threads();
      openblas_set_num_threads(1);
    }
  }
  ~BlasOnCallersThread() {
    const std::lock_guard<std::mutex> lock(state().mutex);
    if (--state().guards == 0) openblas_set_num_threads(state().saved);
  }
  BlasOnCallersThread(const BlasOnCallersThread&) = delete;
  BlasOnCallersThread& operator=(const BlasOnCallersThread&) = delete;

 private:
  struct State {
    std::mutex mutex;
    int guards = 0, saved = 1;
  };
  static State& state() {
    static State s;  // one for the process (an inline function's static)
    return s;
  }
};

// y[m, n] = x[m, k] * W^T (+ bias[n] when not null), W's rows [first, first + count) written as
// floats into a row-major [count, k] buffer by decode_rows(first, count, out), which is called
// from several threads at once (for different rows). The caller checked that m and k fit the BLAS
// interface's ints. Each output element is one sgemm's dot product over all of k, whichever
// thread computes it.
template <typename DecodeRows>
void panel_gemm(const float* x, std::size_t m, std::size_t n, std::size_t k, const float* bias, float* y,
                DecodeRows decode_rows) {
  if (k == 0) {  // no columns: every product is empty, the bias alone
    std::fill(y, y + m * n, 0.0f);
    add_bias(bias, m, n, y);
    return;
  }
  const std::size_t threads = n * k >= kParallelMinWeights ? std::size_t(cpu_threads()) : 1;
  const std::size_t budget = std::max<std::size_t>(1, kPanelBytes / (sizeof(float) * k));
  const std::size_t panel_rows = std::min(budget, (n + threads - 1) / threads);
  const auto panels = static_cast<std::ptrdiff_t>((n + panel_rows - 1) / panel_rows);
  const auto multiply = [&](float* panel, std::size_t first) {
    const std::size_t rows = std::min(panel_rows, n - first);
    decode_rows(first, rows, panel);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(rows), int(k), 1.0f, x, int(k), panel, int(k),
                0.0f, y + first, int(n));
  };
  if (threads == 1 || panels == 1) {
    const std::unique_ptr<float[]> panel(new float[panel_rows * k]);  // every element written before it is read
    for (std::ptrdiff_t p = 0; p < panels; ++p) multiply(panel.get(), std::size_t(p) * panel_rows);
  } else {
    const BlasOnCallersThread serial_blas;
    std::exception_ptr error;  // none may leave the region: kept, rethrown after it
#pragma omp parallel num_threads(int(threads))
    {
      std::unique_ptr<float[]> panel;
#pragma omp for schedule(dynamic, 1)
      for (std::ptrdiff_t p = 0; p < panels; ++p) {
        try {
          if (!panel) panel.reset(new float[panel_rows * k]);
          multiply(panel.get(), std::size_t(p) * panel_rows);
        } catch (...) {
#pragma omp critical(nuq_panel_gemm_error)
          if (!error) error = std::current_exception();
        }
      }
    }
    if (error) std::rethrow_exception(error);
  }
  add_bias(bias, m, n, y);
}

}  // namespace nuq::detail
