// The mu-law compandor: compress with c(x) = x_max ln(1 + mu |x| / x_max) / ln(1 + mu) sgn(x),
// quantize uniformly with N levels on [-x_max, x_max], expand with the inverse of c. Its
// thresholds and levels are the expanded images of the uniform ones (ref. [16] of the main paper
// quotes SQNR = 4.44 dB for two bits and mu = 255).
#pragma once

#include <cstddef>

#include "nuq/codebook.h"
#include "nuq/laplace.h"

namespace nuq {

Codebook mulaw_codebook(std::size_t levels, double xmax, double mu, Provenance provenance = {});

// D of mulaw_codebook(levels, xmax, mu) on Laplace(0, sigma^2) without building it: the same, bit
// for bit, as laplace_distortion of the codebook, and the same error where it refuses one.
Distortion mulaw_distortion(std::size_t levels, double xmax, double mu, double sigma = 1.0);

}  // namespace nuq
