#include "nuq/number_text.h"

#include <cmath>
#include <cstdio>

namespace nuq {

std::string fixed_text(double value, int decimals) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", decimals, value);
  return text;
}

std::string signed_text(double value, int decimals) {
  std::string text = fixed_text(value, decimals);
  if (text.front() == '-' && text.find_first_not_of("-0.") == std::string::npos) text.erase(0, 1);
  return text.front() == '-' ? text : "+" + text;
}

}  // namespace nuq
