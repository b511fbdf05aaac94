// JSON from files nuq did not write (safetensors headers, their metadata values, sharded
// indexes), parsed with bounds: nesting deeper than a caller's limit is refused before the parse
// that would hold every level (and before any recursion over the result could overflow the
// stack), and a key named twice in one object is refused (nlohmann would keep the last silently;
// the safetensors reference parser refuses). Linear in the text's size.
#pragma once

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

namespace nuq::io {

// Throws nuq::Error with "not valid JSON (...)", "nested deeper than N levels" or "names 'k' twice"
// (callers prefix the file and what the text is).
nlohmann::json parse_json_bounded(const std::string& text, int max_depth);
// The same, except that when the top-level object's member `collapsed` is an object its members are
// not kept: it is an empty object in the result, and each member is handed to `visit` (its name
// and value) as soon as it is parsed. For a caller that needs a little of each of many members
// (nlohmann's tree of 200,000 tensors' entries took 128 MB).
using MemberVisitor = std::function<void(const std::string& name, const nlohmann::json& value)>;
nlohmann::json parse_json_bounded(const std::string& text, int max_depth, const std::string& collapsed,
                                  const MemberVisitor& visit);
// The same checks without the parse, for a caller that reads the text by its own SAX pass: its
// memory is the keys of the open objects, not a tree.
void check_json_bounds(const std::string& text, int max_depth);

}  // namespace nuq::io
