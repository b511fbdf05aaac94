// The two-bit power-of-two quantizers of the main paper, for the unit-variance Laplacian.
//
// SPTQ (Section 3): cells of width Delta and 2 Delta on each side, x_max = 3 Delta (eqs. 5-6),
// thresholds 0, +-Delta (eq. 7), levels the cell midpoints +-Delta/2, +-2 Delta (eq. 8).
// MSPTQ (Section 4): the same levels and x_max = 3 Delta_mod, but the threshold centred between
// the levels, x_1 = 5/4 Delta_mod (eqs. 22-23).
// Both are fixed by their step; the paper's closed forms and iterative rules are kept here
// verbatim, and the tests check them against the general exact distortion in laplace.h.
#pragma once

#include "nuq/codebook.h"
#include "nuq/optimize.h"

namespace nuq {

// Method::Sptq or Method::Msptq at step `delta` (x_max = 3 delta); sigma = 1.
Codebook power_of_two_codebook(Method method, double delta, XmaxRule rule = XmaxRule::Given,
                               int iterations = 0);

// D^SPTQ(Delta), eq. (15), and D^MSPTQ(Delta_mod), eq. (25).
double sptq_distortion_eq15(double delta);
double msptq_distortion_eq25(double delta_mod);

// One step of the iterative rules: eq. (18) for SPTQ, eq. (28) for MSPTQ.
double sptq_step_eq18(double delta);
double msptq_step_eq28(double delta_mod);

// Algorithm 1: iterate the rule from delta0 until two iterates differ by less than epsilon.
FixedPointTrace sptq_iterate(double delta0 = 1.0, double epsilon = kPaperEpsilon);
FixedPointTrace msptq_iterate(double delta0, double epsilon = kPaperEpsilon);

}  // namespace nuq
