// A QuantizedMatrix copied to the device in the layout the qgemm kernels read: rows of codes
// padded with zero bytes to device_row_stride, levels as they are. Owned, moved not copied.
#pragma once

#include <cstdint>
#include <string>

#include "device_buffer.cuh"
#include "nuq/qgemm.h"
#include "qgemm.cuh"

namespace nuq::cuda {

struct DeviceWeights {
  DeviceBuffer<std::uint8_t> codes{0};
  DeviceBuffer<float> levels{0};
  DeviceQuantizedMatrix view{};
};

// Checks `w` (check_quantized_matrix, naming `what`) and uploads it to the current device; a
// table of 8- or 16-bit codes on a uniform grid (nuq::level_grid) is marked for computed levels.
DeviceWeights upload_weights(const QuantizedMatrix& w, const std::string& what);


}  // namespace nuq::cuda
