// Support-region rules: how the threshold x_max of the granular region [-x_max, x_max] is chosen
// for a set of normalised weights (the "cases" of the main paper's Tables 3-7).
#pragma once

#include <string>

namespace nuq {

// Asymptotically optimal (Hui and Neuhoff [23]) and optimal (Jayant [20]) x_max of the two-bit
// uniform quantizer for the unit Laplacian, as the paper prints them. Its Section 6 names the two
// "optimal and asymptotically optimal" in the order H, J; its conclusion calls Case 5 (J) the
// optimal one, and the exact distortion agrees (its minimum is at 2.17479).
constexpr double kXmaxHui = 1.9605;
constexpr double kXmaxJayant = 2.1748;

enum class SupportRule {
  MinAbsWeight,    // case 1: min(|w_min|, |w_max|)
  MaxAbsWeight,    // case 2: max(|w_min|, |w_max|)
  SptqOptimum,     // case 3: 3 Delta, Delta from the SPTQ rule (18)
  MsptqOptimum,    // case 4 for MSPTQ: 3 Delta_mod, from the MSPTQ rule (28)
  Hui,             // case 4: x_max[H]
  Jayant,          // case 5: x_max[J]
  TernaryOptimum,  // Table 6 (b): 3 / sqrt(2), the ternary quantizer's optimum [20]
  Fixed,           // any given value
};

struct Support {
  SupportRule rule = SupportRule::Fixed;
  double value = 0.0;  // x_max for Fixed; unused otherwise
  double alpha = 1.0;  // scale factor applied to the rule's x_max (Table 6 (b))
};

// Extremes of the normalised weights (zero mean, unit variance).
struct WeightRange {
  double min = 0.0;
  double max = 0.0;
};

// Cases 1 and 2: x_max comes from the weights' extremes, so it differs from network to network.
bool depends_on_extremes(const Support& support);

// x_max of the rule for normalised weights with this range; throws nuq::Error for a range that
// makes no sense (not finite, min > max) when the rule needs it, or a non-positive result.
double resolve_xmax(const Support& support, const WeightRange& range);

// From the command line: case1 (or min-abs), case2 (max-abs), case3 (3delta), 3delta-mod, case4
// (hui), case5 (jayant), ternary, or a number (Fixed). Throws nuq::Error listing the choices.
Support parse_support(const std::string& text);

// The region [-x_max, x_max] in words: "±3Δ", "±x_max[H]", "±α·3/√2, α = 3/2".
std::string describe(const Support& support);

}  // namespace nuq
