// Lists in messages: the first few entries spelled out and the rest counted, so that a warning
// about thousands of tensors stays one readable line.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace nuq {

// first_few({"a", "b", "c", "d"}, 2) == "a, b and 2 more".
inline std::string first_few(const std::vector<std::string>& entries, std::size_t shown) {
  std::string list;
  for (std::size_t i = 0; i < entries.size() && i < shown; ++i) list += (i ? ", " : "") + entries[i];
  if (entries.size() > shown) list += " and " + std::to_string(entries.size() - shown) + " more";
  return list;
}

}  // namespace nuq
