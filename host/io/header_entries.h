// A safetensors header's entries, read from its text by one SAX pass without building a JSON
// tree. A tree takes 30 to 40 bytes of memory per byte of text for some headers (a 100 MiB one of
// empty arrays took 3.9 GB to refuse); these entries hold what the checks in parse_layout read
// (at most a few numbers of each shape and data_offsets) and skip everything else.
//
// Nothing is judged here except the JSON itself: parse_layout judges the entries in name order,
// as it did when it walked a tree, so a header with several faults names the same one first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace nuq::io {

// An array of numbers as the header gave it: the first `kept` elements (an element that is not a
// non-negative integer kept as nullopt) and how many there were.
struct HeaderNumbers {
  bool present = false, is_array = false;
  std::size_t count = 0;
  std::vector<std::optional<std::uint64_t>> kept;
};

struct HeaderTensor {
  bool is_object = false;
  bool has_dtype = false;
  std::optional<std::string> dtype;  // nullopt when has_dtype and it is not a string
  HeaderNumbers shape, data_offsets;
};

struct HeaderMetadata {
  bool is_object = false;
  std::map<std::string, std::optional<std::string>> values;  // nullopt: a value that is not a string
};

struct HeaderEntries {
  std::map<std::string, HeaderTensor> tensors;  // every top-level key but __metadata__
  std::optional<HeaderMetadata> metadata;
};

// `text` has passed check_json_bounds (io/json_parse.h). Keeps up to `kept_dims` elements of each
// shape (one more than the largest rank allowed tells a shape too long) and two of data_offsets.
HeaderEntries read_header_entries(const std::string& text, std::size_t kept_dims);

}  // namespace nuq::io
