// Packed codes rearranged once into the tensor cores' fragment order (nuq/mma_fragment.h), so that
// the small-batch mma kernel (kernels/qgemm_mma.cu) gives each lane its B registers for several
// k-steps from one 16-byte load, and back. The CUDA backend's prepare does this when the mma
// kernel is chosen (cuda::QgemmKernel::Mma).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "nuq/packed.h"

namespace nuq {

struct FragmentCodes {
  std::size_t rows = 0, cols = 0;  // the matrix's shape, without the padding of the last unit
  int bits = 2;
  std::size_t row_blocks = 0, k_units = 0;  // units of 8 rows x mma::unit_cols(bits) columns
  std::vector<std::uint8_t> bytes;         // row_blocks * k_units * mma::kUnitBytes
};

// Whether codes of `bits` bits have a fragment order (1, 2, 4 or 8; 16-bit codes do not: their
// products stay on the other kernels).
bool has_fragment_order(int bits);

// Throws nuq::Error naming the widths when has_fragment_order(codes.bits) is false. Rows and
// columns past the matrix (to whole units) are code 0.
FragmentCodes to_fragment_order(const PackedCodes& codes);
PackedCodes from_fragment_order(const FragmentCodes& codes);

}  // namespace nuq
