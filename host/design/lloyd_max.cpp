#include "nuq/lloyd_max.h"

#include <cmath>
#include <limits>
#include <vector>

#include "nuq/error.h"
#include "nuq/laplace.h"
#include "nuq/uniform.h"

namespace nuq {

Codebook lloyd_max_codebook(std::size_t levels, double tolerance, int max_iterations) {
  NUQ_REQUIRE(levels >= 2 && levels <= kMaxLloydMaxLevels, "Lloyd-Max: the number of levels must "
              "be in 2..", kMaxLloydMaxLevels, ", got ", levels);
  NUQ_REQUIRE(tolerance > 0.0, "Lloyd-Max: tolerance must be positive");
  constexpr double kInfinity = std::numeric_limits<double>::infinity();
  // Start from a uniform quantizer whose support grows like the Laplacian's quantile of 1/N.
  std::vector<double> y = uniform_codebook(levels, 1.0 + std::log(static_cast<double>(levels))).levels();
  std::vector<double> t(levels - 1);
  for (int iteration = 1; iteration <= max_iterations; ++iteration) {
    for (std::size_t k = 0; k + 1 < levels; ++k) t[k] = 0.5 * (y[k] + y[k + 1]);
    double largest_move = 0.0;
    for (std::size_t k = 0; k < levels; ++k) {
      const double lo = k == 0 ? -kInfinity : t[k - 1];
      const double hi = k + 1 == levels ? kInfinity : t[k];
      const IntervalMoments m = laplace_moments(lo, hi, 1.0);
      const double centroid = m.first_moment / m.probability;
      largest_move = std::fmax(largest_move, std::abs(centroid - y[k]));
      y[k] = centroid;
    }
    if (largest_move < tolerance) {
      for (std::size_t k = 0; k + 1 < levels; ++k) t[k] = 0.5 * (y[k] + y[k + 1]);
      Provenance provenance;
      provenance.method = Method::LloydMax;
      provenance.rule = XmaxRule::Lloyd;
      provenance.iterations = iteration;
      provenance.xmax = levels == 2 ? 2.0 * y.back() : 2.0 * y.back() - t.back();
      return Codebook(bits_for_levels(levels), t, y, provenance);
    }
  }
  throw Error("Lloyd-Max: no convergence to " + std::to_string(tolerance) + " within " +
              std::to_string(max_iterations) + " iterations for " + std::to_string(levels) + " levels");
}

}  // namespace nuq
