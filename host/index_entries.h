// A sharded checkpoint's index (model.safetensors.index.json), read by one SAX pass without a tree
// of the whole: a tree takes 30 to 40 bytes of memory a byte of text for some indexes (100 MiB of
// empty objects in its metadata took 4.3 GB and 45 s). The weight_map is read into a map; the
// metadata, which nuq writes into the index it makes, into a tree of at most kMaxIndexMetadataValues
// values (an index's metadata is total_size and perhaps a few fields more); the rest is skipped.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace nuq {

constexpr std::size_t kMaxIndexMetadataValues = std::size_t{1} << 20;

struct IndexEntries {
  bool has_weight_map = false;  // a weight_map that is an object, in an index that is one
  std::map<std::string, std::optional<std::string>> weight_map;  // nullopt: a value that is not a string
  nlohmann::json metadata = nlohmann::json::object();  // an object; {} where the index has none
};

// `text` has passed io::check_json_bounds. Throws nuq::Error (without the file's name) for
// metadata of more than kMaxIndexMetadataValues values.
IndexEntries read_index_entries(const std::string& text);

}  // namespace nuq
