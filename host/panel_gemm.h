// Internal to host/: Y = X * W^T + bias for a W of packed codes too large to decode whole, through
// panels of decoded rows handed to OpenBLAS (host/qgemm.cpp, host/grouped.cpp).
#pragma once

#include <cblas.h>

#include <algorithm>
#include <cstddef>
#include <memory>

#include "nuq/qgemm.h"

namespace nuq::detail {

// Rows decoded per sgemm: as many as make 8 MiB of FP32. OpenBLAS packs X again for every call, so
// thin panels cost more than the L2 they fit in saves: at 8 bits, 4096 x 4096, 64-row (1 MiB)
// panels ran at 0.55x OpenBLAS at m = 64 and 256, 4-16 MiB ones at 0.6-0.8x. Larger ones came no
// faster, and beyond glibc's largest mmap threshold (32 MiB) every call faults its pages in afresh.
constexpr std::size_t kPanelBytes = std::size_t{8} << 20;

// y[m, n] = x[m, k] * W^T (+ bias[n] when not null), W's rows [first, first + count) written as
// floats into a row-major [count, k] buffer by decode_rows(first, count, out). The caller checked
// that m and k fit the BLAS interface's ints.
template <typename DecodeRows>
void panel_gemm(const float* x, std::size_t m, std::size_t n, std::size_t k, const float* bias, float* y,
                DecodeRows decode_rows) {
  if (k == 0) {  // no columns: every product is empty, the bias alone
    std::fill(y, y + m * n, 0.0f);
    add_bias(bias, m, n, y);
    return;
  }
  const std::size_t panel_rows = std::min(n, std::max<std::size_t>(1, kPanelBytes / (sizeof(float) * k)));
  const std::unique_ptr<float[]> panel(new float[panel_rows * k]);  // every element written before it is read
  for (std::size_t first = 0; first < n; first += panel_rows) {
    const std::size_t rows = std::min(panel_rows, n - first);
    decode_rows(first, rows, panel.get());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(rows), int(k), 1.0f, x, int(k), panel.get(),
                int(k), 0.0f, y + first, int(n));
  }
  add_bias(bias, m, n, y);
}

}  // namespace nuq::detail
