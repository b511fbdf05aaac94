// Uniform scalar quantizers with N = 2..65536 levels over the support region [-x_max, x_max]:
// N cells of width Delta = 2 x_max / N, levels at the cell midpoints (midrise for even N,
// midtread for odd N; the ternary quantizer is N = 3).
#pragma once

#include <cstddef>

#include "nuq/codebook.h"

namespace nuq {

constexpr std::size_t kMaxUniformLevels = 65536;

// The smallest code width that holds `levels` distinct codes.
int bits_for_levels(std::size_t levels);

// The N-level uniform quantizer on [-xmax, xmax], flagged with its UniformGrid.
Codebook uniform_codebook(std::size_t levels, double xmax, Provenance provenance = {});

// One step of the scale rule for quantizers whose thresholds lie halfway between neighbouring
// levels (uniform, ternary, MSPTQ). Scaling such a quantizer by s moves every threshold and level
// together; because the integrand is continuous across a midpoint threshold, dD/ds = 0 reduces to
//   s = s * (sum_k y_k M1_k) / (sum_k y_k^2 P_k),
// with P_k, M1_k the probability and first moment of cell k at the current scale. The codebook's
// x_max is the current s; the return value is the next one. Derivation: docs/design-math.md.
double midpoint_scale_step(const Codebook& at_current_scale, double sigma = 1.0);

}  // namespace nuq
