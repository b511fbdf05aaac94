#include "nuq/error.h"

namespace nuq {

std::string Error::without_nul(const std::string& message) {
  if (message.find('\0') == std::string::npos) return message;
  std::string text;
  for (char c : message) c == '\0' ? text += "\\x00" : text += c;
  return text;
}

NonFiniteWeight::NonFiniteWeight(const std::string& where, std::size_t index, double value, const std::string& place)
    : Error(detail::concat(where, ": element ", place.empty() ? std::to_string(index) : place, " is ", value,
                           "; weights must be finite (asked to saturate them, nuq takes +-Inf to the outermost levels "
                           "and NaN to the level of the cell holding the mean: --nonfinite saturate, nonfinite='saturate' in "
                           "Python)")),
      index(index),
      value(value) {}

}  // namespace nuq

namespace nuq::detail {

void throw_internal(const char* file, int line, const char* condition, const std::string& message) {
  std::string what = std::string(file) + ":" + std::to_string(line) + ": internal error: `" +
                     condition + "` does not hold";
  if (!message.empty()) what += ": " + message;
  throw InternalError(what);
}

}  // namespace nuq::detail
