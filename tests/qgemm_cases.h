// Random packed matrices shared by the CPU and GPU quantized-GEMM tests.
#pragma once

#include <random>
#include <vector>

#include "nuq/packed.h"
#include "nuq/qgemm.h"

namespace nuq::test {

// Codes uniform over 2^bits; levels random in [-2, 2], or the small integers (k mod 7) - 3 when
// `integers` (so that every product and sum is exact in float). `per_row`: a table of its own for
// every row (per-channel normalisation), each row's integers shifted by its index mod 3.
inline QuantizedMatrix random_matrix(std::size_t rows, std::size_t cols, int bits, std::mt19937& rng, bool integers,
                                     bool per_row = false) {
  std::uniform_int_distribution<std::uint32_t> code(0, (1u << bits) - 1);
  std::vector<std::uint32_t> codes(rows * cols);
  for (auto& c : codes) c = code(rng);
  const std::size_t per_table = std::size_t{1} << bits, tables = per_row ? rows : 1;
  std::vector<float> levels(tables * per_table);
  std::uniform_real_distribution<float> value(-2.0f, 2.0f);
  for (std::size_t t = 0; t < tables; ++t)
    for (std::size_t k = 0; k < per_table; ++k)
      levels[t * per_table + k] = integers ? float(int((k + t) % 7) - 3 + int(t % 3)) : value(rng);
  return {pack_codes(codes, rows, cols, bits), levels};
}

}  // namespace nuq::test
