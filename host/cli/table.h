// Plain-text tables for the terminal: columns padded to their widest cell (counted in UTF-8
// code points, so Δ and α line up), numbers right-aligned.
#pragma once

#include <string>
#include <vector>

namespace nuq::cli {

class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header);
  void add_row(std::vector<std::string> cells);
  std::string render() const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

// Fixed-point text: fixed(6.97903, 4) == "6.9790"; NaN and infinities spelled out.
std::string fixed(double value, int decimals);
// Text of `digits` significant digits, for errors of any magnitude: significant(4.2e-13, 6) == "4.2e-13".
std::string significant(double value, int digits);
// Signed fixed-point text for differences: "+0.0000", "-0.0012".
std::string signed_fixed(double value, int decimals);

}  // namespace nuq::cli
