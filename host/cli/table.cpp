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

TextTable::TextTable(std::vector<std::string> header) : header_(std::move(header)) {}

void TextTable::add_row(std::vector<std::string> cells) {
  NUQ_ASSERT(cells.size() == header_.size(), "row of ", cells.size(), " cells in a table of ",
             header_.size(), " columns");
  for (std::string& cell : cells) cell = terminal_text(cell);  // a tensor's name from a file, say
  rows_.push_back(std::move(cells));
}

std::string TextTable::render() const {
  // A column is as wide as its widest cell up to kWidestColumn; a wider cell (a tensor name of
  // megabytes, from a file) runs past it on its own line, rather than every row being padded to it.
  constexpr std::size_t kWidestColumn = 120;
  std::vector<std::size_t> width(header_.size());
  for (std::size_t c = 0; c < header_.size(); ++c) width[c] = std::min(display_width(header_[c]), kWidestColumn);
  for (const auto& row : rows_)
    for (std::size_t c = 0; c < row.size(); ++c)
      width[c] = std::max(width[c], std::min(display_width(row[c]), kWidestColumn));
  std::ostringstream out;
  auto line = [&](const std::vector<std::string>& cells, bool is_header) {
    for (std::size_t c = 0; c < cells.size(); ++c) {
      const std::string padding(width[c] - std::min(width[c], display_width(cells[c])), ' ');
      const bool right = !is_header && c > 0 && looks_numeric(cells[c]);
      out << (c ? "  " : "") << (right ? padding + cells[c] : cells[c] + (c + 1 < cells.size() ? padding : ""));
    }
    out << '\n';
  };
  line(header_, true);
  std::size_t total = 0;
  for (std::size_t w : width) total += w;
  out << std::string(total + 2 * (width.size() - 1), '-') << '\n';
  for (const auto& row : rows_) line(row, false);
  return out.str();
}

std::string fixed(double value, int decimals) { return fixed_text(value, decimals); }

std::string significant(double value, int digits) { return significant_text(value, digits); }

std::string signed_fixed(double value, int decimals) { return signed_text(value, decimals); }

}  // namespace nuq::cli
