#include "index_entries.h"

#include <vector>

#include "nuq/error.h"

namespace nuq {
namespace {

// What an open object or array is to the index (as in io/header_entries.cpp).
enum class Role { index, weight_map, metadata, skipped };

class IndexReader : public nlohmann::json_sax<nlohmann::json> {
 public:
  IndexEntries entries;

  bool start_object(std::size_t) override { return open(nlohmann::json::object()); }
  bool start_array(std::size_t) override { return open(nlohmann::json::array()); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }

  bool key(string_t& name) override {
    if (roles_.back() == Role::weight_map) file_of_ = &entries.weight_map[name];
    key_ = name;
    return true;
  }

  bool string(string_t& text) override {
    if (!roles_.empty() && roles_.back() == Role::weight_map) *file_of_ = text;
    return value(text);
  }
  bool null() override { return value(nullptr); }
  bool boolean(bool b) override { return value(b); }
  bool number_integer(number_integer_t n) override { return value(n); }
  bool number_unsigned(number_unsigned_t n) override { return value(n); }
  bool number_float(number_float_t x, const string_t&) override { return value(x); }
  bool binary(binary_t&) override { return value(nullptr); }  // (JSON text holds none)

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    throw Error(std::string("not valid JSON (") + e.what() + ")");  // check_json_bounds has found none
  }

 private:
  bool open(nlohmann::json empty) {
    if (roles_.empty()) {  // the index itself
      roles_.push_back(empty.is_object() ? Role::index : Role::skipped);
      return true;
    }
    const Role parent = roles_.back();
    if (parent == Role::index && key_ == "weight_map" && empty.is_object()) {
      entries.has_weight_map = true;
      roles_.push_back(Role::weight_map);
    } else if (parent == Role::index && key_ == "metadata" && empty.is_object()) {
      trees_.push_back(&entries.metadata);
      roles_.push_back(Role::metadata);
    } else if (parent == Role::metadata) {
      trees_.push_back(insert(std::move(empty)));
      roles_.push_back(Role::metadata);
    } else {
      roles_.push_back(Role::skipped);  // a weight_map value that is not a string stays nullopt
    }
    return true;
  }

  bool close() {
    if (roles_.back() == Role::metadata) trees_.pop_back();
    roles_.pop_back();
    return true;
  }

  template <typename Value>
  bool value(Value&& v) {
    // (No role: an index that is one value, not an object.)
    if (!roles_.empty() && roles_.back() == Role::metadata) insert(nlohmann::json(std::forward<Value>(v)));
    return true;
  }

  // Puts `v` into the metadata's innermost open container. (Only the innermost grows while it is
  // open, so the pointers to its ancestors stay valid.)
  nlohmann::json* insert(nlohmann::json v) {
    if (++metadata_values_ > kMaxIndexMetadataValues)
      throw Error("its metadata holds more than " + std::to_string(kMaxIndexMetadataValues) +
                  " values (an index's metadata is total_size and perhaps a few fields more)");
    nlohmann::json& parent = *trees_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(v));
      return &parent.back();
    }
    return &(parent[key_] = std::move(v));
  }

  std::vector<Role> roles_;
  std::vector<nlohmann::json*> trees_;  // the metadata's open containers, outermost first
  std::string key_;
  std::optional<std::string>* file_of_ = nullptr;
  std::size_t metadata_values_ = 0;
};

}  // namespace

IndexEntries read_index_entries(const std::string& text) {
  IndexReader reader;
  nlohmann::json::sax_parse(text, &reader);
  return std::move(reader.entries);
}

}  // namespace nuq
