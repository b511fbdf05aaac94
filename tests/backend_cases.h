// Inputs shared by the CPU backend tests and the GPU tests that compare against them: weights
// drawn from a Laplacian, a Gaussian or a uniform law, and codebooks of every packed width and
// search path (linear compare-and-count, bisection, uniform grid).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "nuq/codebook.h"
#include "nuq/lloyd_max.h"
#include "nuq/uniform.h"

namespace nuq::test {

enum class Law { Laplace, Gauss, Uniform };
inline std::string to_string(Law law) { return law == Law::Laplace ? "laplace" : law == Law::Gauss ? "gauss" : "uniform"; }

inline std::vector<float> draw(Law law, std::size_t count, double mean, double sigma, std::uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> values(count);
  std::exponential_distribution<double> exponential(std::sqrt(2.0) / sigma);
  std::normal_distribution<double> normal(mean, sigma);
  std::uniform_real_distribution<double> flat(mean - std::sqrt(3.0) * sigma, mean + std::sqrt(3.0) * sigma);
  for (float& v : values) {
    if (law == Law::Laplace) v = float(mean + (rng() & 1 ? 1.0 : -1.0) * exponential(rng));
    if (law == Law::Gauss) v = float(normal(rng));
    if (law == Law::Uniform) v = float(flat(rng));
  }
  return values;
}

// A codebook with `levels` random non-uniform levels in `bits` bits (no grid: forces the search).
inline Codebook random_codebook(std::size_t levels, int bits, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(-3.0, 3.0);
  std::vector<double> y(levels);
  for (double& v : y) v = u(rng);
  std::sort(y.begin(), y.end());
  for (std::size_t k = 1; k < levels; ++k) y[k] = std::max(y[k], y[k - 1] + 1e-3);
  std::vector<double> t(levels - 1);
  for (std::size_t k = 0; k + 1 < levels; ++k) t[k] = 0.5 * (y[k] + y[k + 1]);
  Provenance p;
  p.xmax = std::max(std::abs(y.front()), std::abs(y.back()));  // the support holds every level (y may all be negative)
  return Codebook(bits, t, y, p);
}

struct NamedCodebook {
  std::string name;
  Codebook codebook;
  int storage_bits;
};

inline std::vector<NamedCodebook> codebooks_of_every_width() {
  return {
      {"uniform-2", uniform_codebook(2, 1.5), 1},
      {"lloyd-max-4", lloyd_max_codebook(4), 2},
      {"ternary", uniform_codebook(3, 1.2), 2},
      {"uniform-16", uniform_codebook(16, 4.0), 4},
      {"random-200", random_codebook(200, 8, 7), 8},
      {"uniform-256", uniform_codebook(256, 6.0), 8},
      {"uniform-1000", uniform_codebook(1000, 7.0), 16},
      {"uniform-65536", uniform_codebook(65536, 8.0), 16},
  };
}

}  // namespace nuq::test
