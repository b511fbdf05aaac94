#include "nuq/support.h"

#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "nuq/error.h"
#include "nuq/power_of_two.h"

namespace nuq {
namespace {

double weight_extreme(const WeightRange& range, bool largest) {
  NUQ_REQUIRE(std::isfinite(range.min) && std::isfinite(range.max) && range.min <= range.max,
              "support rule: the weight range [", range.min, ", ", range.max, "] makes no sense");
  const double a = std::abs(range.min), b = std::abs(range.max);
  return largest ? std::fmax(a, b) : std::fmin(a, b);
}

std::string format_alpha(double alpha) {
  // The paper's factors are quarters: print 3/2 rather than 1.5.
  const double quarters = alpha * 4.0;
  char text[32];
  if (std::abs(quarters - std::round(quarters)) < 1e-12) {
    int numerator = static_cast<int>(std::round(quarters)), denominator = 4;
    while (numerator % 2 == 0 && denominator > 1) numerator /= 2, denominator /= 2;
    if (denominator == 1) std::snprintf(text, sizeof text, "%d", numerator);
    else std::snprintf(text, sizeof text, "%d/%d", numerator, denominator);
  } else {
    std::snprintf(text, sizeof text, "%g", alpha);
  }
  return text;
}

}  // namespace

double resolve_xmax(const Support& support, const WeightRange& range) {
  double xmax = 0.0;
  switch (support.rule) {
    case SupportRule::MinAbsWeight: xmax = weight_extreme(range, false); break;
    case SupportRule::MaxAbsWeight: xmax = weight_extreme(range, true); break;
    case SupportRule::SptqOptimum: xmax = 3.0 * sptq_iterate().value(); break;
    case SupportRule::MsptqOptimum: xmax = 3.0 * msptq_iterate(sptq_iterate().value()).value(); break;
    case SupportRule::Hui: xmax = kXmaxHui; break;
    case SupportRule::Jayant: xmax = kXmaxJayant; break;
    case SupportRule::TernaryOptimum: xmax = 3.0 / std::sqrt(2.0); break;
    case SupportRule::Fixed: xmax = support.value; break;
  }
  xmax *= support.alpha;
  NUQ_REQUIRE(std::isfinite(xmax) && xmax > 0.0, "support rule ", describe(support),
              " gives x_max = ", xmax, ", which is not a usable support threshold");
  return xmax;
}

bool depends_on_extremes(const Support& support) {
  return support.rule == SupportRule::MinAbsWeight || support.rule == SupportRule::MaxAbsWeight;
}

Support parse_support(const std::string& text) {
  const struct {
    const char* names[2];
    SupportRule rule;
  } named[] = {{{"case1", "min-abs"}, SupportRule::MinAbsWeight}, {{"case2", "max-abs"}, SupportRule::MaxAbsWeight},
               {{"case3", "3delta"}, SupportRule::SptqOptimum},   {{"3delta-mod", "3delta-mod"}, SupportRule::MsptqOptimum},
               {{"case4", "hui"}, SupportRule::Hui},              {{"case5", "jayant"}, SupportRule::Jayant},
               {{"ternary", "ternary"}, SupportRule::TernaryOptimum}};
  for (const auto& entry : named)
    if (text == entry.names[0] || text == entry.names[1]) return Support{entry.rule};
  std::size_t used = 0;
  double value = 0.0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  NUQ_REQUIRE(used == text.size() && used > 0 && std::isfinite(value) && value > 0.0, "unknown support '", text,
              "' (case1|min-abs, case2|max-abs, case3|3delta, 3delta-mod, case4|hui, case5|jayant, ternary, "
              "or a positive x_max)");
  return Support{SupportRule::Fixed, value};
}

std::string describe(const Support& support) {
  std::string region;
  switch (support.rule) {
    case SupportRule::MinAbsWeight: region = "min(|w_min|, |w_max|)"; break;
    case SupportRule::MaxAbsWeight: region = "max(|w_min|, |w_max|)"; break;
    case SupportRule::SptqOptimum: region = "3Δ"; break;
    case SupportRule::MsptqOptimum: region = "3Δmod"; break;
    case SupportRule::Hui: region = "x_max[H]"; break;
    case SupportRule::Jayant: region = "x_max[J]"; break;
    case SupportRule::TernaryOptimum: region = "3/√2"; break;
    case SupportRule::Fixed: {
      char text[32];
      std::snprintf(text, sizeof text, "%g", support.value);
      region = text;
      break;
    }
  }
  if (support.alpha != 1.0) return "±α·" + region + ", α = " + format_alpha(support.alpha);
  return "±" + region;
}

}  // namespace nuq
