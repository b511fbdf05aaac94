#include "nuq/io/json_parse.h"

#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "nuq/error.h"

namespace nuq::io {
namespace {

// nlohmann's parse error as a message: without its "[json.exception.parse_error.101]" tag and
// without the text it last read, which is the input's own bytes (raw, perhaps not UTF-8 or not
// printable: a terminal would show them garbled).
std::string json_error_text(const std::string& what) {
  std::string text = what;
  if (text.rfind("[json.exception.", 0) == 0 && text.find("] ") != std::string::npos) text.erase(0, text.find("] ") + 2);
  if (const std::size_t read = text.find("; last read: "); read != std::string::npos) {
    const std::size_t expected = text.find("; expected ", read);
    text.erase(read, expected == std::string::npos ? std::string::npos : expected - read);
  }
  return "not valid JSON (" + text + ")";
}

// A SAX pass that only measures the depth and looks for a key named twice in one object.
// (nlohmann's callback parser would do it in one pass, but it rescans the parent object at every
// object's end: quadratic in the number of tensors, 12 s for 40,000.)
class BoundsFinder : public nlohmann::json_sax<nlohmann::json> {
 public:
  explicit BoundsFinder(int max_depth) : max_depth_(max_depth) {}
  std::optional<std::string> duplicate;  // (a flag apart from the name: the name may be "")

  bool start_object(std::size_t) override {
    deeper();
    keys_.emplace_back();
    return true;
  }
  bool end_object() override {
    keys_.pop_back();
    --depth_;
    return true;
  }
  bool key(string_t& name) override {
    if (!duplicate && !keys_.back().insert(name).second) duplicate = name;
    return true;
  }
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_array(std::size_t) override {
    deeper();
    return true;
  }
  bool end_array() override {
    --depth_;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    throw Error(json_error_text(e.what()));
  }

 private:
  void deeper() {
    if (++depth_ > max_depth_) throw Error("nested deeper than " + std::to_string(max_depth_) + " levels");
  }
  int max_depth_;
  std::vector<std::set<std::string>> keys_;
  int depth_ = 0;
};

// A SAX pass that builds the tree as nlohmann's parser does, except for the members of one member
// of the top-level object (when that is an object): it is left empty, and each of its members is
// handed to a visitor as soon as it is whole, then let go.
class TreeWithoutMembers : public nlohmann::json_sax<nlohmann::json> {
 public:
  TreeWithoutMembers(const std::string& collapsed, const MemberVisitor& visit) : collapsed_(collapsed), visit_(visit) {}
  nlohmann::json root;

  bool null() override { return value(nullptr); }
  bool boolean(bool b) override { return value(b); }
  bool number_integer(number_integer_t n) override { return value(n); }
  bool number_unsigned(number_unsigned_t n) override { return value(n); }
  bool number_float(number_float_t x, const string_t&) override { return value(x); }
  bool string(string_t& text) override { return value(std::move(text)); }
  bool binary(binary_t& bytes) override { return value(nlohmann::json::binary(std::move(bytes))); }
  bool start_object(std::size_t) override { return open(nlohmann::json::object()); }
  bool start_array(std::size_t) override { return open(nlohmann::json::array()); }
  bool key(string_t& name) override {
    keys_.back() = std::move(name);
    return true;
  }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    throw Error(json_error_text(e.what()));
  }

 private:
  // Places a value: in the container open innermost (under the last key, in an object), as the
  // root, or, a member of the collapsed object, as the member being built.
  nlohmann::json* place(nlohmann::json v) {
    if (open_.empty()) {
      root = std::move(v);
      return &root;
    }
    if (in_members()) {
      member_ = std::move(v), member_name_ = keys_.back();
      return &member_;
    }
    nlohmann::json& parent = *open_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(v));
      return &parent.back();
    }
    nlohmann::json& slot = parent[keys_.back()];
    slot = std::move(v);
    return &slot;
  }
  // Whether the collapsed object is the container open innermost: a value placed there is a
  // member, and is whole once the innermost is that object again.
  bool in_members() const { return members_level_ && open_.size() == members_level_; }
  void hand_over_whole_member() {
    if (!in_members()) return;
    visit_(member_name_, member_);
    member_ = nullptr;
  }
  bool value(nlohmann::json v) {
    place(std::move(v));
    hand_over_whole_member();
    return true;
  }
  bool open(nlohmann::json container) {
    // (a key is named once in an object: check_json_bounds refuses it twice)
    const bool collapses =
        open_.size() == 1 && root.is_object() && container.is_object() && keys_.back() == collapsed_;
    open_.push_back(place(std::move(container)));
    keys_.emplace_back();
    if (collapses) members_level_ = open_.size();
    return true;
  }
  bool close() {
    open_.pop_back();
    keys_.pop_back();
    if (members_level_ && open_.size() < members_level_) {  // the collapsed object itself
      members_level_ = 0;
      return true;
    }
    hand_over_whole_member();
    return true;
  }

  const std::string& collapsed_;
  const MemberVisitor& visit_;
  std::vector<nlohmann::json*> open_;  // the containers being built, outermost first
  std::vector<std::string> keys_;      // each open container's last key (unused in arrays)
  std::size_t members_level_ = 0;      // while in the collapsed object: open_.size() there
  nlohmann::json member_;
  std::string member_name_;
};

}  // namespace

void check_json_bounds(const std::string& text, int max_depth) {
  // nlohmann's lexer takes a NUL byte for the end of its input, so whatever followed one (in a
  // safetensors header: anything, within the length the file gives) would be ignored. JSON text
  // holds none (a string holds \u0000), and the reference reader refuses one.
  if (const std::size_t nul = text.find('\0'); nul != std::string::npos)
    throw Error("not valid JSON (a NUL byte at byte " + std::to_string(nul) + "; JSON is padded with spaces)");
  BoundsFinder finder(max_depth);
  nlohmann::json::sax_parse(text, &finder);
  NUQ_REQUIRE(!finder.duplicate, "names '", finder.duplicate.value_or(""), "' twice in one object");
}

nlohmann::json parse_json_bounded(const std::string& text, int max_depth) {
  check_json_bounds(text, max_depth);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(json_error_text(e.what()));
  }
}

nlohmann::json parse_json_bounded(const std::string& text, int max_depth, const std::string& collapsed,
                                  const MemberVisitor& visit) {
  check_json_bounds(text, max_depth);
  TreeWithoutMembers builder(collapsed, visit);
  nlohmann::json::sax_parse(text, &builder);
  return std::move(builder.root);
}

}  // namespace nuq::io
