// Internal to host/: what the CPU's quantized products (host/qgemm.cpp, host/qgemm_lut.cpp,
// host/grouped.cpp) share about taking rows of X in register-sized blocks and going parallel.
#pragma once

#include <cstddef>
#include <type_traits>

namespace nuq::detail {

// Below this many weights a second thread costs more than it saves.
constexpr std::size_t kParallelMinWeights = std::size_t{1} << 18;

// Rows of X met by one pass over a row of W: eight accumulators, and what the row gives them, fit
// the 32 AVX-512 registers.
constexpr std::size_t kRowsPerPass = 8;

// f(std::integral_constant<std::size_t, M>{}) with M = rows (1 to kRowsPerPass): the count made a
// compile-time constant, so that a kernel's per-row accumulators are an array the compiler keeps
// in registers.
template <typename F>
void with_row_count(std::size_t rows, F&& f) {
  switch (rows) {
    case 1: f(std::integral_constant<std::size_t, 1>{}); break;
    case 2: f(std::integral_constant<std::size_t, 2>{}); break;
    case 3: f(std::integral_constant<std::size_t, 3>{}); break;
    case 4: f(std::integral_constant<std::size_t, 4>{}); break;
    case 5: f(std::integral_constant<std::size_t, 5>{}); break;
    case 6: f(std::integral_constant<std::size_t, 6>{}); break;
    case 7: f(std::integral_constant<std::size_t, 7>{}); break;
    default: f(std::integral_constant<std::size_t, kRowsPerPass>{}); break;
  }
}

}  // namespace nuq::detail
