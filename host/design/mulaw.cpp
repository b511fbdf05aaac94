#include "nuq/mulaw.h"

#include <cmath>
#include <vector>

#include "nuq/error.h"
#include "nuq/uniform.h"

namespace nuq {

Codebook mulaw_codebook(std::size_t levels, double xmax, double mu, Provenance provenance) {
  NUQ_REQUIRE(std::isfinite(mu) && mu > 0.0, "mu-law: mu must be finite and positive, got ", mu);
  const Codebook compressed = uniform_codebook(levels, xmax);
  const double log1p_mu = std::log1p(mu);
  // c^{-1}(u) = x_max / mu ((1 + mu)^{|u| / x_max} - 1) sgn(u), written with expm1 for small u.
  auto expand = [&](std::vector<double> values) {
    for (double& u : values)
      u = std::copysign(xmax / mu * std::expm1(std::abs(u) / xmax * log1p_mu), u);
    return values;
  };
  provenance.xmax = xmax;
  provenance.mu = mu;
  return Codebook(compressed.bits(), expand(compressed.thresholds()), expand(compressed.levels()),
                  provenance);
}

}  // namespace nuq
