#include "nuq/grouped.h"

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "nuq/error.h"
#include "nuq/io/safetensors.h"
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

void check_grouped(const QuantizedTensor& w, const std::string& what) {
  NUQ_REQUIRE(w.group_size > 0, what, ": the tensor is not grouped");
  NUQ_REQUIRE(is_packable_bits(w.matrix.codes.bits), what, ": ", w.matrix.codes.bits, "-bit codes are not supported");
  const auto [n, k] = matrix_view(w.shape, io::element_count(w.shape));
  const PackedCodes& codes = w.matrix.codes;
  NUQ_REQUIRE(k % w.group_size == 0 && codes.rows == n * (k / w.group_size) && codes.cols == w.group_size &&
                  codes.bytes.size() == codes.rows * packed_row_bytes(codes.cols, codes.bits),
              what, ": grouped codes of ", codes.rows, " x ", codes.cols, " do not fit shape ", n, " x ", k,
              " in groups of ", w.group_size);
  NUQ_REQUIRE(w.scales.size() == codes.rows && w.normalised_levels.size() == (std::size_t{1} << codes.bits), what,
              ": ", w.scales.size(), " scales and ", w.normalised_levels.size(), " normalised levels for ", codes.rows,
              " groups of ", codes.bits, "-bit codes");
}

void dequantize_groups(const QuantizedTensor& w, std::size_t first, std::size_t count, float* out) {
  const PackedCodes& codes = w.matrix.codes;
  for (std::size_t g = first; g < first + count; ++g, out += w.group_size)
    for (std::size_t c = 0; c < w.group_size; ++c)
      out[c] = group_level(w.mean, w.scales[g], w.normalised_levels[codes.at(g, c)]);
}

void qgemm_grouped(const float* x, std::size_t m, const QuantizedTensor& w, const float* bias, float* y) {
  check_grouped(w, "qgemm");
  const auto [n, k] = matrix_view(w.shape, io::element_count(w.shape));
  const std::size_t groups_per_row = k / w.group_size;
  if (m == 0 || n == 0) return;
  NUQ_REQUIRE(k <= std::size_t(INT_MAX) && m <= std::size_t(INT_MAX), "qgemm: ", m, " x ", k,
              " exceeds the 32-bit dimensions of the BLAS interface");
  constexpr std::size_t kPanelRows = 64;  // rows decoded per sgemm: 64 x 4096 floats = 1 MiB
  std::vector<float> panel(std::min(kPanelRows, n) * k);
  for (std::size_t first = 0; first < n; first += kPanelRows) {
    const std::size_t rows = std::min(kPanelRows, n - first);
    dequantize_groups(w, first * groups_per_row, rows * groups_per_row, panel.data());  // whole rows: in order
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(rows), int(k), 1.0f, x, int(k), panel.data(),
                int(k), 0.0f, y + first, int(n));
  }
  add_bias(bias, m, n, y);
}

}  // namespace nuq
