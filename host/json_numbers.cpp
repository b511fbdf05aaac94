#include "nuq/json_numbers.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <string>

namespace nuq {

std::optional<std::int64_t> json_integer(const nlohmann::json& value) {
  if (value.is_number_unsigned()) {
    const std::uint64_t u = value.get<std::uint64_t>();
    if (u <= std::uint64_t(INT64_MAX)) return std::int64_t(u);
    return std::nullopt;
  }
  if (value.is_number_integer()) return value.get<std::int64_t>();
  if (!value.is_number_float()) return std::nullopt;
  const double d = value.get<double>();
  // Within (-2^63, 2^63): every such integral double converts exactly.
  if (!std::isfinite(d) || d != std::floor(d) || std::abs(d) >= 9223372036854775808.0) return std::nullopt;
  return std::int64_t(d);
}

namespace {

// `x` (finite) as Python's repr writes a float: the shortest round-trip digits (std::to_chars),
// in fixed notation for decimal exponents -4..15 and as d.ddde±XX otherwise.
std::string python_float_text(double x) {
  char text[64];
  const std::to_chars_result written = std::to_chars(text, text + sizeof text, x, std::chars_format::scientific);
  const std::string scientific(text, written.ptr);  // "-1.2345e-05"
  const std::size_t e = scientific.find('e');
  const bool negative = scientific[0] == '-';
  std::string digits;
  for (std::size_t i = negative ? 1 : 0; i < e; ++i)
    if (scientific[i] != '.') digits += scientific[i];
  const int exponent = std::stoi(scientific.substr(e + 1));
  std::string out = negative ? "-" : "";
  if (exponent < -4 || exponent >= 16) {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    const std::string magnitude = std::to_string(std::abs(exponent));
    return out + "e" + (exponent < 0 ? "-" : "+") + (magnitude.size() < 2 ? "0" : "") + magnitude;
  }
  if (exponent < 0) return out + "0." + std::string(std::size_t(-exponent - 1), '0') + digits;
  const std::size_t whole = std::size_t(exponent) + 1;
  if (digits.size() <= whole) return out + digits + std::string(whole - digits.size(), '0') + ".0";
  return out + digits.substr(0, whole) + "." + digits.substr(whole);
}

void write_canonical(const nlohmann::json& value, std::string& out) {
  if (value.is_object()) {  // nlohmann's objects keep their keys sorted (std::map), as sort_keys does
    char separator = '{';
    for (const auto& [key, item] : value.items()) {
      out += separator;
      out += nlohmann::json(key).dump();
      out += ':';
      write_canonical(item, out);
      separator = ',';
    }
    out += value.empty() ? "{}" : "}";
  } else if (value.is_array()) {
    char separator = '[';
    for (const auto& item : value) {
      out += separator;
      write_canonical(item, out);
      separator = ',';
    }
    out += value.empty() ? "[]" : "]";
  } else if (value.is_number_float()) {
    if (const std::optional<std::int64_t> integer = json_integer(value)) out += std::to_string(*integer);
    else out += python_float_text(value.get<double>());
  } else {
    out += value.dump();  // strings (escaped as json.dumps escapes them), integers, true, false, null
  }
}

}  // namespace

std::string canonical_text(const nlohmann::json& value) {
  std::string out;
  write_canonical(value, out);
  return out;
}

}  // namespace nuq
