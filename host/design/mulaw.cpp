#include "nuq/mulaw.h"

#include <cmath>
#include <vector>

#include "nuq/error.h"
#include "nuq/uniform.h"

namespace nuq {
namespace {

void require_mu(double mu) {
  NUQ_REQUIRE(std::isfinite(mu) && mu > 0.0, "mu-law: mu must be finite and positive, got ", mu);
}

// c^{-1}(u) = x_max / mu ((1 + mu)^{|u| / x_max} - 1) sgn(u), written with expm1 for small u.
double expand(double u, double xmax, double mu, double log1p_mu) {
  return std::copysign(xmax / mu * std::expm1(std::abs(u) / xmax * log1p_mu), u);
}

}  // namespace

Codebook mulaw_codebook(std::size_t levels, double xmax, double mu, Provenance provenance) {
  require_mu(mu);
  const Codebook compressed = uniform_codebook(levels, xmax);
  const double log1p_mu = std::log1p(mu);
  auto expanded = [&](std::vector<double> values) {
    for (double& u : values) u = expand(u, xmax, mu, log1p_mu);
    return values;
  };
  provenance.xmax = xmax;
  provenance.mu = mu;
  return Codebook(compressed.bits(), expanded(compressed.thresholds()), expanded(compressed.levels()),
                  provenance);
}

Distortion mulaw_distortion(std::size_t levels, double xmax, double mu, double sigma) {
  require_mu(mu);
  const double log1p_mu = std::log1p(mu);
  const double step = uniform_step(levels, xmax);
  // A mu so large that neighbouring values expand to the same double (or to subnormal ties) makes a
  // codebook that mulaw_codebook refuses: the cells are checked as they come, and such a quantizer
  // goes through mulaw_codebook for the same error.
  bool ordered = true;
  double last_threshold = -HUGE_VAL, last_level = -HUGE_VAL;
  const auto check = [&](double value, double& last) {
    ordered = ordered && std::isfinite(value) && value > last;
    last = value;
    return value;
  };
  const Distortion d = laplace_distortion_of(
      levels,
      [&](std::size_t k) { return check(expand(uniform_threshold(k, levels, step), xmax, mu, log1p_mu), last_threshold); },
      [&](std::size_t k) { return check(expand(uniform_level(k, levels, step), xmax, mu, log1p_mu), last_level); },
      xmax, checked_laplace_rate(sigma));
  return ordered ? d : laplace_distortion(mulaw_codebook(levels, xmax, mu), sigma);
}

}  // namespace nuq
