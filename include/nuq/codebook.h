// Codebook: the one type every design produces and every backend consumes.
//
// A scalar quantizer with N levels is N-1 sorted decision thresholds and N sorted representation
// levels over the whole real line: x falls in cell k when thresholds[k-1] <= x < thresholds[k]
// (cell 0 is everything below thresholds[0], cell N-1 everything from thresholds[N-2] up) and is
// represented by levels[k]. Symmetric quantizers are stored the same way; `symmetric()` tells.
// Codes are stored in `bits` bits, so N <= 2^bits (a ternary quantizer has N = 3 in 2 bits).
// A uniform grid (levels first + k * step, thresholds halfway between) is flagged so that kernels
// can compute the index arithmetically instead of searching the thresholds.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace nuq {

// Which family of quantizer a codebook comes from. The bit width is never part of the method.
// Custom (levels another writer recorded) stays last: the methods before it are those nuq designs.
enum class Method { Uniform, Sptq, Msptq, Ternary, MuLaw, LloydMax, Custom };

// How the support threshold x_max of a design was chosen.
enum class XmaxRule {
  Given,      // the caller's value (a support-region case, a fixed number)
  Iterative,  // the design's fixed-point rule (eq. 18 for SPTQ, eq. 28 for MSPTQ, ...)
  Numeric,    // 1-D minimisation of the exact distortion
  Lloyd,      // Lloyd-Max iteration: no single x_max drives the design
};

std::string to_string(Method method);
std::string to_string(XmaxRule rule);
Method parse_method(const std::string& name);      // throws nuq::Error naming the valid choices
XmaxRule parse_xmax_rule(const std::string& name);

// The source scales a codebook can be designed for (and read with): beyond them sigma^2 * D_unit,
// the variance or the distortion overflows a double and the SQNR would come out as NaN.
constexpr double kMinSigma = 1e-100, kMaxSigma = 1e100;
// A support this many standard deviations out holds no mass worth quantizing; beyond it the
// granular distortion of the outermost cell overflows. One this small holds none: its levels and
// thresholds would round together (a denormal x_max gave all-zero levels, or thresholds out of order).
constexpr double kMaxStandardDeviations = 1e6, kMinStandardDeviations = 1e-6;

struct Provenance {
  Method method = Method::Custom;
  XmaxRule rule = XmaxRule::Given;
  double xmax = 0.0;   // support threshold: the granular region is [-xmax, xmax]
  double sigma = 1.0;  // standard deviation of the Laplacian source the design was made for
  int iterations = 0;  // fixed-point or Lloyd iterations; 0 where none ran
  std::optional<double> mu;     // mu-law compression
  std::optional<double> alpha;  // ternary scale factor
};

struct UniformGrid {
  double first_level = 0.0;
  double step = 0.0;
};

class Codebook {
 public:
  // Validates: N >= 2, N <= 2^bits, bits in 1..16, everything finite, both lists strictly
  // increasing, thresholds.size() == levels.size() - 1. Throws nuq::Error naming the problem.
  Codebook(int bits, std::vector<double> thresholds, std::vector<double> levels,
           Provenance provenance, std::optional<UniformGrid> grid = std::nullopt);

  // Builds the full lists from the positive half: positive thresholds t_1 < ... and positive
  // levels y_1 < ...; a midtread quantizer adds the level 0 (odd N), a midrise one the threshold 0.
  static Codebook symmetric(int bits, const std::vector<double>& positive_thresholds,
                            const std::vector<double>& positive_levels, bool midtread,
                            Provenance provenance, std::optional<UniformGrid> grid = std::nullopt);

  int bits() const { return bits_; }
  std::size_t size() const { return levels_.size(); }
  const std::vector<double>& thresholds() const { return thresholds_; }
  const std::vector<double>& levels() const { return levels_; }
  const Provenance& provenance() const { return provenance_; }
  const std::optional<UniformGrid>& uniform_grid() const { return grid_; }
  double xmax() const { return provenance_.xmax; }

  // True when thresholds and levels are mirror images about 0 (to a relative 1e-12).
  bool symmetric() const;
  // The same quantizer for a source scaled by `factor` (thresholds, levels, x_max, sigma).
  Codebook scaled(double factor) const;

  // Reference quantization: the cell index of x (ties go to the upper cell) and its level.
  std::uint32_t index_of(double x) const;
  double quantize(double x) const { return levels_[index_of(x)]; }

 private:
  int bits_;
  std::vector<double> thresholds_;
  std::vector<double> levels_;
  Provenance provenance_;
  std::optional<UniformGrid> grid_;
};

nlohmann::json to_json(const Codebook& codebook);
Codebook codebook_from_json(const nlohmann::json& j);  // validates like the constructor
// The design parameters alone (method, rule, x_max, sigma, iterations, mu, alpha). method and
// xmax are required; a missing xmax_rule reads as given, sigma as 1, iterations as 0.
Provenance provenance_from_json(const nlohmann::json& j);

}  // namespace nuq
