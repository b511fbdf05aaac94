// JSON numbers as JSON defines them: 2 and 2.0 are one number. Files and codebooks written by
// other tools may give any integer a zero fraction, and their descriptions are compared and
// fingerprinted whatever the writer's number style.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace nuq {

// The integer `value` holds (an integer, or a float with no fraction, within int64), else nothing.
std::optional<std::int64_t> json_integer(const nlohmann::json& value);

// One text for a JSON value, reproducible by any JSON library: every float that holds an integer
// within int64 written as that integer (2.0 and 2 are one number), the rest written as
// Python's json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False) writes it
// (keys sorted, no whitespace, every other number in the shortest digits that read back as the
// same double, Python's repr: fixed notation for decimal exponents -4..15, d.ddde±XX otherwise).
// nlohmann's dump() is not always the shortest (Grisu2): -5.7326334528589324 for -5.732633452858932.
std::string canonical_text(const nlohmann::json& value);

}  // namespace nuq
