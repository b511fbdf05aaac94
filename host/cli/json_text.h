// JSON as the CLI writes it (--json, report.json): indented two spaces. Linux file names may hold
// any bytes; one that is not valid UTF-8 is written with U+FFFD in place of its bad bytes, rather
// than failing once the work is done.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace nuq::cli {

inline std::string json_text(const nlohmann::json& j) {
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace nuq::cli
