// Plain-text tables for the terminal: columns padded to their widest cell (counted in UTF-8
// code points, so Δ and α line up), numbers right-aligned.
#pragma once

#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace nuq::cli {

// A table whose rows are given twice instead of held: each to measure() first, then, after
// print_header(), each to print_row() in the same order. For a row per tensor of a checkpoint, which
// a hostile header makes a million rows. Cells pass through terminal_text (a name from a file).
class StreamedTable {
 public:
  explicit StreamedTable(std::vector<std::string> header);
  void measure(const std::vector<std::string>& cells);
  void print_header(std::ostream& out) const;  // the header and its rule
  void print_row(std::ostream& out, const std::vector<std::string>& cells) const;

 private:
  void print_line(std::ostream& out, const std::vector<std::string>& cells, bool is_header) const;
  std::vector<std::string> header_;
  std::vector<std::size_t> width_;
};

// Prints `rows` (any range) as a StreamedTable, each row's cells made by cells_of(row): measured
// first, then printed.
template <typename Rows, typename CellsOf>
void print_table(std::ostream& out, std::vector<std::string> header, const Rows& rows, const CellsOf& cells_of) {
  StreamedTable table(std::move(header));
  for (const auto& row : rows) table.measure(cells_of(row));
  table.print_header(out);
  for (const auto& row : rows) table.print_row(out, cells_of(row));
}

// A table held whole (tens of rows: reports, sweeps), laid out as StreamedTable lays it out.
class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header);
  void add_row(std::vector<std::string> cells);
  std::string render() const;

 private:
  StreamedTable layout_;
  std::vector<std::vector<std::string>> rows_;
};

// Fixed-point text: fixed(6.97903, 4) == "6.9790"; NaN and infinities spelled out.
std::string fixed(double value, int decimals);
// Text of `digits` significant digits, for errors of any magnitude: significant(4.2e-13, 6) == "4.2e-13".
std::string significant(double value, int digits);
// Signed fixed-point text for differences: "+0.0000", "-0.0012".
std::string signed_fixed(double value, int decimals);

}  // namespace nuq::cli
