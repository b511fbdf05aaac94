#include "json_text.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "nuq/error.h"

namespace nuq::cli {
namespace {

// Where a key's array goes: the key holds [null] while the object is written, which json_text
// writes as below after a top-level key. No string in the text can hold it (json_text writes a
// newline in a string as \n), and a top-level key is indented by two spaces, nested ones by more.
constexpr char kPlaceholder[] = "[\n    null\n  ]";

// `element` (json_text, indented from column 0) written as an element of a top-level array.
void write_indented(std::ostream& out, const std::string& element) {
  constexpr char kIndent[] = "    ";
  out << kIndent;
  std::size_t from = 0;
  for (std::size_t newline; (newline = element.find('\n', from)) != std::string::npos; from = newline + 1)
    out.write(element.data() + from, std::streamsize(newline + 1 - from)) << kIndent;
  out.write(element.data() + from, std::streamsize(element.size() - from));
}

}  // namespace

void print_json(std::ostream& out, nlohmann::json head, const std::map<std::string, JsonRows>& rows) {
  NUQ_ASSERT(head.is_object(), "print_json writes an object");
  for (const auto& [key, unused] : rows) head[key] = nlohmann::json::array({nullptr});
  const std::string text = json_text(head);
  std::vector<std::pair<std::size_t, const JsonRows*>> arrays;  // where each array begins in `text`
  for (const auto& [key, array] : rows) {
    const std::string key_text = "\n  " + json_text(key) + ": ";
    const std::size_t at = text.find(key_text + kPlaceholder);
    NUQ_ASSERT(at != std::string::npos, "print_json: the array under '", key, "' was not found");
    arrays.emplace_back(at + key_text.size(), &array);
  }
  std::sort(arrays.begin(), arrays.end());
  std::size_t written = 0;
  for (const auto& [at, array] : arrays) {
    out.write(text.data() + written, std::streamsize(at - written));
    written = at + sizeof kPlaceholder - 1;
    if (array->count == 0) {
      out << "[]";
      continue;
    }
    out << "[\n";
    for (std::size_t i = 0; i < array->count; ++i) {
      if (i) out << ",\n";
      write_indented(out, json_text(array->element(i)));
    }
    out << "\n  ]";
  }
  out.write(text.data() + written, std::streamsize(text.size() - written)) << '\n';
}

}  // namespace nuq::cli
