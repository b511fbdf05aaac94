#include "nuq/json_numbers.h"

#include <cmath>

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

nlohmann::json canonical_json(nlohmann::json value) {
  if (value.is_structured()) {
    for (auto& item : value) item = canonical_json(std::move(item));
    return value;
  }
  if (value.is_number_float())
    if (const std::optional<std::int64_t> integer = json_integer(value)) return *integer;
  return value;
}

}  // namespace nuq
