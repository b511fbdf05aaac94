#include "nuq/laplace.h"

#include <cmath>

#include "nuq/error.h"

namespace nuq {
namespace {

void require_sigma(double sigma) {
  NUQ_REQUIRE(std::isfinite(sigma) && sigma > 0.0,
              "Laplacian source: sigma must be finite and positive, got ", sigma);
}

}  // namespace

Distortion laplace_distortion(const std::vector<double>& thresholds,
                              const std::vector<double>& levels, double xmax, double sigma) {
  require_sigma(sigma);
  NUQ_REQUIRE(levels.size() == thresholds.size() + 1, "distortion: ", levels.size(),
              " levels need ", levels.size() - 1, " thresholds, got ", thresholds.size());
  NUQ_REQUIRE(std::isfinite(xmax) && xmax >= 0.0, "distortion: x_max must be finite, got ", xmax);
  return laplace_distortion_of(
      levels.size(), [&](std::size_t k) { return thresholds[k]; }, [&](std::size_t k) { return levels[k]; }, xmax,
      closed_form::laplace_rate(sigma));
}

double checked_laplace_rate(double sigma) {
  require_sigma(sigma);
  return closed_form::laplace_rate(sigma);
}

Distortion laplace_distortion(const Codebook& codebook, double sigma) {
  return laplace_distortion(codebook.thresholds(), codebook.levels(), codebook.xmax(), sigma);
}

double sqnr_db(double distortion, double sigma) {
  require_sigma(sigma);
  NUQ_REQUIRE(distortion > 0.0, "SQNR: distortion must be positive, got ", distortion);
  return 10.0 * std::log10(sigma * sigma / distortion);
}

double laplace_sqnr_db(const Codebook& codebook, double sigma) {
  return sqnr_db(laplace_distortion(codebook, sigma).total(), sigma);
}

IntervalMoments laplace_moments(double a, double b, double sigma) {
  require_sigma(sigma);
  NUQ_REQUIRE(!(a > b), "Laplacian moments: interval [", a, ", ", b, "] is reversed");
  return closed_form::interval_moments(a, b, 0.0, closed_form::laplace_rate(sigma));
}

double laplace_within_support(double xmax, double sigma) {
  require_sigma(sigma);
  return -std::expm1(-closed_form::laplace_rate(sigma) * xmax);
}

double laplace_pdf(double x, double sigma) {
  require_sigma(sigma);
  const double lambda = closed_form::laplace_rate(sigma);
  return 0.5 * lambda * std::exp(-lambda * std::abs(x));
}

}  // namespace nuq
