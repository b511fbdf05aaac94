#include "nuq/io/json_parse.h"

#include <optional>
#include <set>
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

}  // namespace nuq::io
