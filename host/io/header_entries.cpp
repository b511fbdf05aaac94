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
  EntryReader(std::size_t kept_dims, const HeaderTensorSink& sink) : kept_dims_(kept_dims), sink_(sink) {}
  std::optional<HeaderMetadata> metadata;

  bool start_object(std::size_t) override {
    roles_.push_back(roles_.empty() ? Role::header : container(/*object=*/true));
    return true;
  }
  bool start_array(std::size_t) override {
    roles_.push_back(roles_.empty() ? Role::skipped : container(/*object=*/false));
    return true;
  }
  bool end_object() override {
    if (roles_.back() == Role::tensor) sink_(name_, tensor_);  // the tensor's entry is whole
    roles_.pop_back();
    return true;
  }
  bool end_array() override {
    roles_.pop_back();
    return true;
  }

  bool key(string_t& key) override {
    switch (roles_.back()) {
      case Role::header:
        in_metadata_ = key == "__metadata__";
        if (in_metadata_) metadata.emplace();
        else name_ = key;
        break;
      case Role::tensor:
      case Role::metadata:
        key_ = key;
        break;
      default:
        break;
    }
    return true;
  }

  bool string(string_t& text) override { return scalar(&text, std::nullopt); }
  bool number_unsigned(number_unsigned_t value) override { return scalar(nullptr, value); }
  bool null() override { return scalar(); }
  bool boolean(bool) override { return scalar(); }
  bool number_integer(number_integer_t) override { return scalar(); }
  bool number_float(number_float_t, const string_t&) override { return scalar(); }
  bool binary(binary_t&) override { return scalar(); }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    throw Error(std::string("not valid JSON (") + e.what() + ")");  // check_json_bounds has found none
  }

 private:
  // Records a container value (an object when `object`) in its parent, and gives the role it takes.
  Role container(bool object) {
    switch (roles_.back()) {
      case Role::header:
        if (in_metadata_) {
          metadata->is_object = object;
          return object ? Role::metadata : Role::skipped;
        }
        tensor_ = HeaderTensor{};
        tensor_.is_object = object;
        if (!object) sink_(name_, tensor_);
        return object ? Role::tensor : Role::skipped;
      case Role::tensor:
        if (HeaderNumbers* numbers = field_numbers()) {
          numbers->present = true;
          numbers->is_array = !object;
          return object ? Role::skipped : (key_ == "shape" ? Role::shape : Role::data_offsets);
        }
        if (key_ == "dtype") tensor_.has_dtype = true;  // and not a string
        return Role::skipped;
      case Role::metadata:
        not_a_string();
        return Role::skipped;
      case Role::shape:
      case Role::data_offsets:
        element(std::nullopt);
        return Role::skipped;
      default:
        return Role::skipped;
    }
  }

  bool scalar(const std::string* text = nullptr, std::optional<std::uint64_t> number = std::nullopt) {
    if (roles_.empty()) return true;  // a header that is one value, no object (parse_layout refuses it first)
    switch (roles_.back()) {
      case Role::header:
        if (in_metadata_) {
          metadata->is_object = false;
        } else {
          tensor_ = HeaderTensor{};
          sink_(name_, tensor_);
        }
        break;
      case Role::tensor:
        if (HeaderNumbers* numbers = field_numbers()) {
          numbers->present = true;
          numbers->is_array = false;
        } else if (key_ == "dtype") {
          tensor_.has_dtype = true;
          if (text) tensor_.dtype = *text;
        }
        break;
      case Role::metadata:
        if (text) metadata->values.emplace(key_, *text);
        else not_a_string();
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

  void not_a_string() {
    if (!metadata->first_not_string || key_ < *metadata->first_not_string) metadata->first_not_string = key_;
  }

  HeaderNumbers* field_numbers() {
    if (key_ == "shape") return &tensor_.shape;
    if (key_ == "data_offsets") return &tensor_.data_offsets;
    return nullptr;
  }

  void element(std::optional<std::uint64_t> number) {
    const bool shape = roles_.back() == Role::shape;
    HeaderNumbers& numbers = shape ? tensor_.shape : tensor_.data_offsets;
    if (numbers.kept.size() < (shape ? kept_dims_ : 2)) numbers.kept.push_back(number);
    ++numbers.count;
  }

  std::size_t kept_dims_;
  const HeaderTensorSink& sink_;
  std::vector<Role> roles_;
  bool in_metadata_ = false;
  std::string name_;     // the tensor whose value is being read
  HeaderTensor tensor_;  // its entry so far
  std::string key_;      // the last key in a tensor or in __metadata__
};

}  // namespace

std::optional<HeaderMetadata> read_header_entries(const std::string& text, std::size_t kept_dims,
                                                  const HeaderTensorSink& sink) {
  EntryReader reader(kept_dims, sink);
  nlohmann::json::sax_parse(text, &reader);
  return std::move(reader.metadata);
}

}  // namespace nuq::io
