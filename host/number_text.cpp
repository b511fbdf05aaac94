#include "nuq/number_text.h"

#include <cmath>
#include <cstdio>

namespace nuq {
namespace {

std::string formatted(const char* format, int decimals, double value) {
  const int length = std::snprintf(nullptr, 0, format, decimals, value);
  std::string text(std::size_t(length > 0 ? length : 0), '\0');
  std::snprintf(text.data(), text.size() + 1, format, decimals, value);
  return text;
}

}  // namespace

std::string fixed_text(double value, int decimals) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  // From 1e15 on, fixed notation would show digits a double does not hold (and 1e300 would take
  // 300 of them): scientific notation with as many significant digits as decimals asked for.
  if (std::fabs(value) >= 1e15) return formatted("%.*g", decimals > 0 ? decimals : 1, value);
  return formatted("%.*f", decimals, value);
}

std::string significant_text(double value, int digits) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  return formatted("%.*g", digits > 0 ? digits : 1, value);
}

std::string signed_text(double value, int decimals) {
  std::string text = fixed_text(value, decimals);
  if (text.front() == '-' && text.find_first_not_of("-0.") == std::string::npos) text.erase(0, 1);
  return text.front() == '-' ? text : "+" + text;
}

}  // namespace nuq
