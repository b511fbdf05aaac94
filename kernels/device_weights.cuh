// A QuantizedMatrix copied to the device in the layout the qgemm kernels read: rows of codes
// padded with zero bytes to device_row_stride, levels as they are. Owned, moved not copied.
#pragma once

#include <cstdint>
#include <string>

#include "device_buffer.cuh"
#include "nuq/qgemm.h"
#include "qgemm.cuh"
#include "qgemm_mma.cuh"

namespace nuq::cuda {

struct DeviceWeights {
  DeviceBuffer<std::uint8_t> codes{0};
  DeviceBuffer<float> levels{0};
  DeviceQuantizedMatrix view{};
  // The same codes in fragment order for the mma kernel, when upload_fragment_order was called.
  DeviceBuffer<std::uint8_t> fragments{0};
  DeviceFragmentCodes fragment_view{};
};

// Checks `w` (check_quantized_matrix, naming `what`) and uploads it to the current device; a
// table of 8- or 16-bit codes on a uniform grid (nuq::level_grid) is marked for computed levels.
DeviceWeights upload_weights(const QuantizedMatrix& w, const std::string& what);

// Adds `w`'s codes in fragment order (to_fragment_order, nuq/mma_prepack.h) to `d`, uploaded by
// upload_weights from the same `w`. Throws unless the mma kernel takes the width (mma_kernel_bits).
void upload_fragment_order(const QuantizedMatrix& w, DeviceWeights& d);


}  // namespace nuq::cuda
