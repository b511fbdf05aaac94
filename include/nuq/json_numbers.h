// JSON numbers as JSON defines them: 2 and 2.0 are one number. Files and codebooks written by
// other tools may give any integer a zero fraction, and their descriptions are compared and
// fingerprinted whatever the writer's number style.
#pragma once

#include <cstdint>
#include <optional>

#include <nlohmann/json.hpp>

namespace nuq {

// The integer `value` holds (an integer, or a float with no fraction, within int64), else nothing.
std::optional<std::int64_t> json_integer(const nlohmann::json& value);

// `value` with every float that holds an integer within int64 written as that integer (objects
// keep their keys sorted): one text, through dump(), for one description however it was written.
nlohmann::json canonical_json(nlohmann::json value);

}  // namespace nuq
