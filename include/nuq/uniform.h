// Uniform scalar quantizers with N = 2..65536 levels over the support region [-x_max, x_max]:
// N cells of width Delta = 2 x_max / N, levels at the cell midpoints (midrise for even N,
// midtread for odd N; the ternary quantizer is N = 3).
#pragma once

#include <cstddef>

#include "nuq/codebook.h"
#include "nuq/laplace.h"

namespace nuq {

constexpr std::size_t kMaxUniformLevels = 65536;

// The smallest code width that holds `levels` distinct codes.
int bits_for_levels(std::size_t levels);

// The N-level uniform quantizer on [-xmax, xmax], flagged with its UniformGrid.
Codebook uniform_codebook(std::size_t levels, double xmax, Provenance provenance = {});

// Its cell width Delta = 2 x_max / N (levels and x_max refused as uniform_codebook refuses them),
// and its level k and threshold k (between levels k and k + 1): positions relative to the centre,
// so that the halves mirror each other exactly.
double uniform_step(std::size_t levels, double xmax);
inline double uniform_level(std::size_t k, std::size_t levels, double step) {
  return (static_cast<double>(k) - 0.5 * static_cast<double>(levels - 1)) * step;
}
inline double uniform_threshold(std::size_t k, std::size_t levels, double step) {
  return (static_cast<double>(k) + 0.5 - 0.5 * static_cast<double>(levels - 1)) * step;
}

// D of uniform_codebook(levels, xmax) on Laplace(0, sigma^2) without building it: the same, bit for
// bit, as laplace_distortion of the codebook (what a search over x_max evaluates).
Distortion uniform_distortion(std::size_t levels, double xmax, double sigma = 1.0);

// One step of the scale rule for quantizers whose thresholds lie halfway between neighbouring
// levels (uniform, ternary, MSPTQ). Scaling such a quantizer by s moves every threshold and level
// together; because the integrand is continuous across a midpoint threshold, dD/ds = 0 reduces to
//   s = s * (sum_k y_k M1_k) / (sum_k y_k^2 P_k),
// with P_k, M1_k the probability and first moment of cell k at the current scale. The codebook's
// x_max is the current s; the return value is the next one. Derivation: docs/design-math.md.
double midpoint_scale_step(const Codebook& at_current_scale, double sigma = 1.0);

// The iterative rule for the support threshold of the N-level uniform quantizer on the unit
// Laplacian, from dD/dx_max = 0 written so that it contracts fast at every N: the outermost cells
// [t, inf), t = x_max - Delta, contribute y_N e^{-sqrt2 t} (1/sqrt2 - Delta/2) to the
// stationarity condition and the inner cells F(x_max) = sum_k y_k int_cell (x - y_k) p < 0, so
//   x_max = Delta + (1/sqrt2) ln( y_N (1/sqrt2 - Delta/2) / -F(x_max) ),
// iterated with Delta = 2 x_max / N and F taken at the current x_max.
// Below eight levels (where the optimum lies close to Delta = sqrt2 and the map is steep), or where
// the form does not apply, the step is midpoint_scale_step's.
double uniform_support_step(std::size_t levels, double xmax);

}  // namespace nuq
