// How rows of packed codes lie in device memory (plain C++, so that host tests model the kernels
// that read them): each row starts every kRowAlign bytes (the packed row, then zero padding), so
// that kernels may load it with 16-byte vectors, and holds whole groups of kRowCodes codes, so
// that the tensor-core kernel's k-steps of 32 codes never read past a row (nor the last row past
// the allocation). upload_weights (device_weights.cuh) lays them out.
#pragma once

#include <cstddef>

#include "nuq/packed.h"

namespace nuq::cuda {

constexpr std::size_t kRowAlign = 16, kRowCodes = 32;
constexpr std::size_t device_row_stride(std::size_t k, int bits) {
  const std::size_t codes = (k + kRowCodes - 1) / kRowCodes * kRowCodes;
  return (packed_row_bytes(codes, bits) + kRowAlign - 1) / kRowAlign * kRowAlign;
}

}  // namespace nuq::cuda
