#include "header_entries.h"

#include <nlohmann/json.hpp>

#include "nuq/error.h"

namespace nuq::io {
namespace {

// What an open object or array is to the header: each SAX event is read by the role of the
// container it falls in and, in an object, the key before it.
enum class Role { header, tensor, metadata, shape, data_offsets, skipped };

class EntryReader : public nlohmann::json_sax<nlohmann::json> {
 public:
  explicit EntryReader(std::size_t kept_dims) : kept_dims_(kept_dims) {}
  HeaderEntries entries;

  bool start_object(std::size_t) override {
    roles_.push_back(roles_.empty() ? Role::header : container(/*object=*/true));
    return true;
  }
  bool start_array(std::size_t) override {
    roles_.push_back(roles_.empty() ? Role::skipped : container(/*object=*/false));
    return true;
  }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }

  bool key(string_t& name) override {
    switch (roles_.back()) {
      case Role::header:
        if (name == "__metadata__") {
          in_metadata_ = true;
          entries.metadata.emplace();
        } else {
          in_metadata_ = false;
          tensor_ = &entries.tensors[name];
        }
        break;
      case Role::tensor:
        field_ = name;
        break;
      case Role::metadata:
        metadata_key_ = &entries.metadata->values.emplace(name, std::nullopt).first->first;
        break;
      default:
        break;
    }
    return true;
  }

  bool string(string_t& text) override {
    scalar(&text, std::nullopt);
    return true;
  }
  bool number_unsigned(number_unsigned_t value) override {
    scalar(nullptr, value);
    return true;
  }
  bool null() override { return scalar(); }
  bool boolean(bool) override { return scalar(); }
  bool number_integer(number_integer_t) override { return scalar(); }
  bool number_float(number_float_t, const string_t&) override { return scalar(); }
  bool binary(binary_t&) override { return scalar(); }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    throw Error(std::string("not valid JSON (") + e.what() + ")");  // check_json_bounds has found none
  }

 private:
  // Records a value (a container when `object` says which) in its parent, and gives the role the
  // container takes.
  Role container(bool object) {
    switch (roles_.back()) {
      case Role::header:
        if (in_metadata_) {
          entries.metadata->is_object = object;
          return object ? Role::metadata : Role::skipped;
        }
        tensor_->is_object = object;
        return object ? Role::tensor : Role::skipped;
      case Role::tensor:
        if (HeaderNumbers* numbers = field_numbers()) {
          numbers->present = true;
          numbers->is_array = !object;
          return object ? Role::skipped : (field_ == "shape" ? Role::shape : Role::data_offsets);
        }
        if (field_ == "dtype") tensor_->has_dtype = true;  // and not a string
        return Role::skipped;
      case Role::shape:
      case Role::data_offsets:
        element(std::nullopt);
        return Role::skipped;
      default:
        return Role::skipped;  // a metadata value that is not a string stays nullopt
    }
  }

  bool scalar(const std::string* text = nullptr, std::optional<std::uint64_t> number = std::nullopt) {
    if (roles_.empty()) return true;  // a header that is one value, no object (parse_layout refuses it first)
    switch (roles_.back()) {
      case Role::header:
        if (in_metadata_) entries.metadata->is_object = false;
        else tensor_->is_object = false;
        break;
      case Role::tensor:
        if (HeaderNumbers* numbers = field_numbers()) {
          numbers->present = true;
          numbers->is_array = false;
        } else if (field_ == "dtype") {
          tensor_->has_dtype = true;
          if (text) tensor_->dtype = *text;
        }
        break;
      case Role::metadata:
        if (text) entries.metadata->values[*metadata_key_] = *text;
        break;
      case Role::shape:
      case Role::data_offsets:
        element(number);
        break;
      default:
        break;
    }
    return true;
  }

  HeaderNumbers* field_numbers() {
    if (field_ == "shape") return &tensor_->shape;
    if (field_ == "data_offsets") return &tensor_->data_offsets;
    return nullptr;
  }

  void element(std::optional<std::uint64_t> number) {
    const bool shape = roles_.back() == Role::shape;
    HeaderNumbers& numbers = shape ? tensor_->shape : tensor_->data_offsets;
    if (numbers.kept.size() < (shape ? kept_dims_ : 2)) numbers.kept.push_back(number);
    ++numbers.count;
  }

  bool close() {
    roles_.pop_back();
    return true;
  }

  std::size_t kept_dims_;
  std::vector<Role> roles_;
  bool in_metadata_ = false;
  HeaderTensor* tensor_ = nullptr;
  std::string field_;
  const std::string* metadata_key_ = nullptr;
};

}  // namespace

HeaderEntries read_header_entries(const std::string& text, std::size_t kept_dims) {
  EntryReader reader(kept_dims);
  nlohmann::json::sax_parse(text, &reader);
  return std::move(reader.entries);
}

}  // namespace nuq::io
