// JSON as the CLI writes it (--json, report.json): indented two spaces. Linux file names may hold
// any bytes; one that is not valid UTF-8 is written with U+FFFD in place of its bad bytes, rather
// than failing once the work is done.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <ostream>
#include <string>

#include <nlohmann/json.hpp>

namespace nuq::cli {

inline std::string json_text(const nlohmann::json& j) {
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

// An array written an element at a time: `count` elements, the i-th made by `element(i)` as it is
// written, so that a row per tensor of a hostile header (a million) is never held as one tree.
struct JsonRows {
  std::size_t count = 0;
  std::function<nlohmann::json(std::size_t)> element;
};

// Writes the object `head` with each of `rows` as an array under its key, exactly as json_text
// writes the whole object, and a newline.
void print_json(std::ostream& out, nlohmann::json head, const std::map<std::string, JsonRows>& rows);

}  // namespace nuq::cli
