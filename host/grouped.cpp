#include "nuq/grouped.h"

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "nuq/error.h"
#include "nuq/quantized_file.h"

namespace nuq {

Affine group_map(const Affine& group, double tensor_mean) {
  const double offset = group.mean - tensor_mean;  // RMS about m = sqrt(variance + (mean - m)^2)
  return {tensor_mean, double(float(std::sqrt(group.scale * group.scale + offset * offset)))};
}

std::vector<float> normalised_levels(const Codebook& codebook, int bits) {
  return make_quantize_table(codebook, bits, {Affine{0.0, 1.0}}).levels;
}

std::vector<float> group_levels(double mean, const std::vector<float>& scales, const std::vector<float>& normalised) {
  std::vector<float> levels(scales.size() * normalised.size());
  for (std::size_t g = 0; g < scales.size(); ++g)
    for (std::size_t k = 0; k < normalised.size(); ++k)
      levels[g * normalised.size() + k] = group_level(mean, scales[g], normalised[k]);
  return levels;
}

void qgemm_grouped(const float* x, std::size_t m, const QuantizedTensor& w, const float* bias, float* y) {
  NUQ_REQUIRE(w.group_size > 0, "qgemm_grouped: the tensor is not grouped");
  check_quantized_matrix(w.matrix, "qgemm");
  std::size_t count = 1;
  for (std::int64_t dim : w.shape) count *= std::size_t(dim);
  const auto [n, k] = matrix_view(w.shape, count);
  const std::size_t groups_per_row = k / w.group_size;
  NUQ_REQUIRE(k % w.group_size == 0 && w.matrix.codes.rows == n * groups_per_row && w.matrix.codes.cols == w.group_size,
              "qgemm: a grouped matrix of ", w.matrix.codes.rows, " x ", w.matrix.codes.cols, " does not fit shape ",
              n, " x ", k, " in groups of ", w.group_size);
  if (m == 0 || n == 0) return;
  NUQ_REQUIRE(k <= std::size_t(INT_MAX) && m <= std::size_t(INT_MAX), "qgemm: ", m, " x ", k,
              " exceeds the 32-bit dimensions of the BLAS interface");
  constexpr std::size_t kPanelRows = 64;  // rows decoded per sgemm: 64 x 4096 floats = 1 MiB
  std::vector<float> panel(std::min(kPanelRows, n) * k);
  for (std::size_t first = 0; first < n; first += kPanelRows) {
    const std::size_t rows = std::min(kPanelRows, n - first);
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t g = 0; g < groups_per_row; ++g) {
        const std::size_t group = (first + r) * groups_per_row + g;
        const float* levels = w.matrix.row_levels(group);
        float* out = &panel[r * k + g * w.group_size];
        for (std::size_t c = 0; c < w.group_size; ++c) out[c] = levels[w.matrix.codes.at(group, c)];
      }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(rows), int(k), 1.0f, x, int(k), panel.data(),
                int(k), 0.0f, y + first, int(n));
  }
  add_bias(bias, m, n, y);
}

}  // namespace nuq
