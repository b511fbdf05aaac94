#include "table.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "nuq/error.h"
#include "nuq/number_text.h"
#include "nuq/terminal_text.h"

namespace nuq::cli {
namespace {

std::size_t display_width(const std::string& text) {
  // Count UTF-8 code points: every byte that is not a continuation byte (10xxxxxx).
  return static_cast<std::size_t>(
      std::count_if(text.begin(), text.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

bool looks_numeric(const std::string& text) {
  if (text.empty()) return false;
  char* end = nullptr;
  std::strtod(text.c_str(), &end);
  return *end == '\0' || text == "-inf" || text == "inf";
}

}  // namespace

// A column is as wide as its widest cell up to kWidestColumn; a wider cell (a tensor name of
// megabytes, from a file) runs past it on its own line, rather than every row being padded to it.
constexpr std::size_t kWidestColumn = 120;

StreamedTable::StreamedTable(std::vector<std::string> header) : header_(std::move(header)), width_(header_.size()) {
  for (std::size_t c = 0; c < header_.size(); ++c) width_[c] = std::min(display_width(header_[c]), kWidestColumn);
}

void StreamedTable::measure(const std::vector<std::string>& cells) {
  NUQ_ASSERT(cells.size() == header_.size(), "row of ", cells.size(), " cells in a table of ", header_.size(),
             " columns");
  for (std::size_t c = 0; c < cells.size(); ++c)
    width_[c] = std::max(width_[c], std::min(display_width(terminal_text(cells[c])), kWidestColumn));
}

void StreamedTable::print_line(std::ostream& out, const std::vector<std::string>& cells, bool is_header) const {
  for (std::size_t c = 0; c < cells.size(); ++c) {
    const std::string cell = is_header ? cells[c] : terminal_text(cells[c]);
    const std::string padding(width_[c] - std::min(width_[c], display_width(cell)), ' ');
    const bool right = !is_header && c > 0 && looks_numeric(cell);
    out << (c ? "  " : "") << (right ? padding + cell : cell + (c + 1 < cells.size() ? padding : ""));
  }
  out << '\n';
}

void StreamedTable::print_header(std::ostream& out) const {
  print_line(out, header_, true);
  std::size_t total = 0;
  for (std::size_t w : width_) total += w;
  out << std::string(total + 2 * (width_.size() - 1), '-') << '\n';
}

void StreamedTable::print_row(std::ostream& out, const std::vector<std::string>& cells) const {
  NUQ_ASSERT(cells.size() == header_.size(), "row of ", cells.size(), " cells in a table of ", header_.size(),
             " columns");
  print_line(out, cells, false);
}

TextTable::TextTable(std::vector<std::string> header) : layout_(std::move(header)) {}

void TextTable::add_row(std::vector<std::string> cells) {
  layout_.measure(cells);
  rows_.push_back(std::move(cells));
}

std::string TextTable::render() const {
  std::ostringstream out;
  layout_.print_header(out);
  for (const auto& row : rows_) layout_.print_row(out, row);
  return out.str();
}

std::string fixed(double value, int decimals) { return fixed_text(value, decimals); }

std::string significant(double value, int digits) { return significant_text(value, digits); }

std::string signed_fixed(double value, int decimals) { return signed_text(value, decimals); }

}  // namespace nuq::cli
