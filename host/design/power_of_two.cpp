#include "nuq/power_of_two.h"

#include <cmath>

#include "nuq/error.h"

namespace nuq {
namespace {

constexpr double kSqrt2 = 1.4142135623730951;
constexpr int kMaxIterations = 100000;

void require_step(double delta) {
  NUQ_REQUIRE(std::isfinite(delta) && delta > 0.0, "power-of-two quantizer: the step must be "
              "finite and positive, got ", delta);
}

}  // namespace

Codebook power_of_two_codebook(Method method, double delta, XmaxRule rule, int iterations) {
  require_step(delta);
  NUQ_REQUIRE(method == Method::Sptq || method == Method::Msptq,
              "power_of_two_codebook: method must be sptq or msptq, got ", to_string(method));
  // Table 1: x_1 = Delta (SPTQ) or 5/4 Delta_mod (MSPTQ); y_1 = Delta/2, y_2 = 2 Delta for both.
  const double x1 = method == Method::Sptq ? delta : 1.25 * delta;
  Provenance provenance;
  provenance.method = method;
  provenance.rule = rule;
  provenance.xmax = 3.0 * delta;
  provenance.iterations = iterations;
  return Codebook::symmetric(2, {x1}, {0.5 * delta, 2.0 * delta}, /*midtread=*/false, provenance);
}

double sptq_distortion_eq15(double delta) {
  require_step(delta);
  return 1.0 - kSqrt2 / 2.0 * delta + delta * delta / 4.0 +
         (0.75 * delta * delta - 1.5 * kSqrt2 * delta) * std::exp(-kSqrt2 * delta);
}

double msptq_distortion_eq25(double delta_mod) {
  require_step(delta_mod);
  return 1.0 + delta_mod * delta_mod / 4.0 -
         kSqrt2 / 2.0 * delta_mod * (1.0 + 3.0 * std::exp(-5.0 * kSqrt2 * delta_mod / 4.0));
}

double sptq_step_eq18(double delta) {
  return kSqrt2 + (1.5 * kSqrt2 * delta * delta - 9.0 * delta + 3.0 * kSqrt2) * std::exp(-kSqrt2 * delta);
}

double msptq_step_eq28(double delta_mod) {
  return kSqrt2 * (1.0 - 9.0 / (15.0 + 2.0 * std::exp(5.0 * kSqrt2 * delta_mod / 4.0)));
}

FixedPointTrace sptq_iterate(double delta0, double epsilon) {
  require_step(delta0);
  return iterate_until_stable(sptq_step_eq18, delta0, epsilon, kMaxIterations, "SPTQ rule (18)");
}

FixedPointTrace msptq_iterate(double delta0, double epsilon) {
  require_step(delta0);
  return iterate_until_stable(msptq_step_eq28, delta0, epsilon, kMaxIterations, "MSPTQ rule (28)");
}

}  // namespace nuq
