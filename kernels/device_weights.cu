#include "device_weights.cuh"

#include <algorithm>
#include <cmath>

#include "cuda_check.cuh"
#include "nuq/error.h"
#include "nuq/mma_prepack.h"

namespace nuq::cuda {

DeviceWeights upload_weights(const QuantizedMatrix& w, const std::string& what) {
  check_quantized_matrix(w, what);
  // The kernels multiply each row's padding (code 0 past column k) by zeros of X: an infinite or
  // NaN level would make whole rows NaN where the CPU's product has no such term (files hold
  // finite levels only; an in-memory matrix is checked here, once, not at every product).
  const auto bad = std::find_if(w.levels.begin(), w.levels.end(), [](float v) { return !std::isfinite(v); });
  NUQ_REQUIRE(bad == w.levels.end(), what, ": level ", bad - w.levels.begin(), " of the table is ",
              bad == w.levels.end() ? 0.0f : *bad, "; the GPU multiplies finite levels only");
  const std::size_t rows = w.codes.rows, row_bytes = packed_row_bytes(w.codes.cols, w.codes.bits);
  const std::size_t stride = device_row_stride(w.codes.cols, w.codes.bits);
  DeviceWeights d;
  d.codes = DeviceBuffer<std::uint8_t>(rows * stride);
  d.levels = DeviceBuffer<float>(w.levels);
  if (rows * stride > 0) {
    NUQ_CUDA_CHECK(cudaMemset(d.codes.data(), 0, rows * stride));  // the padding: code 0, past column k
    if (row_bytes > 0)
      NUQ_CUDA_CHECK(cudaMemcpy2D(d.codes.data(), stride, w.codes.bytes.data(), row_bytes, row_bytes, rows,
                                  cudaMemcpyHostToDevice));
  }
  d.view = {d.codes.data(), d.levels.data(), rows, w.codes.cols, w.codes.bits,
            w.per_row() ? std::size_t{1} << w.codes.bits : 0, stride};
  if (w.codes.bits >= 8 && !w.per_row())
    if (const auto grid = level_grid(w.levels.data(), w.levels.size())) {
      d.view.on_grid = true;
      d.view.grid_origin_level = grid->origin_level;
      d.view.grid_scale = grid->scale;
      d.view.grid_origin_code = grid->origin_code;
    }
  return d;
}

void upload_fragment_order(const QuantizedMatrix& w, DeviceWeights& d) {
  NUQ_REQUIRE(mma_kernel_bits(w.codes.bits), "the mma kernel: ", w.codes.bits, "-bit codes are not supported (2, 4 or 8)");
  const FragmentCodes fragments = to_fragment_order(w.codes);
  d.fragments = DeviceBuffer<std::uint8_t>(fragments.bytes);
  d.fragment_view = {d.fragments.data(), fragments.row_blocks, fragments.k_units};
}

}  // namespace nuq::cuda
