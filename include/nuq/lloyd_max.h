// Lloyd-Max quantizer for the Laplacian: the N-level scalar quantizer of least MSE, found by
// Lloyd's alternation (thresholds halfway between levels, levels at the centroids of their
// cells) with closed-form cell moments, its fixed point reached by Newton's method. It is the ceiling that every other fixed-rate scalar
// design of the same N is measured against.
#pragma once

#include <cstddef>

#include "nuq/codebook.h"

namespace nuq {

constexpr std::size_t kMaxLloydMaxLevels = std::size_t{1} << 16;  // 16 bits, the widest code nuq stores

// Unit variance; scale the result with Codebook::scaled for another sigma. The codebook's x_max
// is the edge of the outermost cell if its level were the cell's midpoint, 2 y_N - t_{N-1}.
// Converges when no level moves by more than `tolerance`; throws if `max_iterations` pass first.
Codebook lloyd_max_codebook(std::size_t levels, double tolerance = 1e-12,
                            int max_iterations = 2000000);

}  // namespace nuq
