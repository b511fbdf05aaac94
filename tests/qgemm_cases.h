// Random packed matrices shared by the CPU and GPU quantized-GEMM tests.
#pragma once

#include <random>
#include <vector>

#include "nuq/packed.h"
#include "nuq/qgemm.h"

namespace nuq::test {

// Codes uniform over 2^bits; levels random in [-2, 2], or the small integers (k mod 7) - 3 when
// `integers` (so that every product and sum is exact in float).
inline QuantizedMatrix random_matrix(std::size_t rows, std::size_t cols, int bits, std::mt19937& rng, bool integers) {
  std::uniform_int_distribution<std::uint32_t> code(0, (1u << bits) - 1);
  std::vector<std::uint32_t> codes(rows * cols);
  for (auto& c : codes) c = code(rng);
  std::vector<float> levels(std::size_t{1} << bits);
  std::uniform_real_distribution<float> value(-2.0f, 2.0f);
  for (std::size_t k = 0; k < levels.size(); ++k) levels[k] = integers ? float(int(k % 7) - 3) : value(rng);
  return {pack_codes(codes, rows, cols, bits), levels};
}

}  // namespace nuq::test
