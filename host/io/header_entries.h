// A safetensors header's entries, read from its text by one SAX pass without building a JSON
// tree. A tree takes 30 to 40 bytes of memory per byte of text for some headers (a 100 MiB one of
// empty arrays took 3.9 GB to refuse). Each tensor's entry (its dtype, at most a few numbers of
// its shape and data_offsets) is handed to the caller as its value ends, to be judged and kept
// or dropped then; only the metadata's strings are kept here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
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
  std::map<std::string, std::string> values;    // the string values
  std::optional<std::string> first_not_string;  // the least key whose value is not a string
};

// Called once for each top-level key but __metadata__, as its value ends.
using HeaderTensorSink = std::function<void(const std::string& name, const HeaderTensor& tensor)>;

// `text` has passed check_json_bounds (io/json_parse.h): no key is named twice. Keeps up to
// `kept_dims` elements of each shape (one more than the largest rank allowed tells a shape too
// long) and two of data_offsets. Returns __metadata__, if the header has it.
std::optional<HeaderMetadata> read_header_entries(const std::string& text, std::size_t kept_dims,
                                                  const HeaderTensorSink& sink);

}  // namespace nuq::io
