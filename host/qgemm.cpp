#include "nuq/qgemm.h"

#include <cblas.h>

#include <algorithm>

#include "nuq/error.h"

namespace nuq {
namespace {

constexpr std::size_t kPanelRows = 64;      // rows decoded per sgemm: 64 x 4096 floats = 1 MiB
constexpr std::size_t kDirectMaxBatch = 4;  // below this, dot products beat a panel sgemm

// Expands one packed row into floats. For widths below 8 a byte holds several codes; a table
// maps each of the 256 byte values to its levels at once.
class RowDecoder {
 public:
  explicit RowDecoder(const QuantizedMatrix& w) : w_(w), per_byte_(w.codes.bits < 8 ? 8 / w.codes.bits : 0) {
    if (per_byte_) {
      table_.resize(256 * per_byte_);
      const unsigned mask = (1u << w.codes.bits) - 1u;
      for (unsigned byte = 0; byte < 256; ++byte)
        for (std::size_t j = 0; j < per_byte_; ++j) {
          const unsigned code = (byte >> (j * w.codes.bits)) & mask;
          table_[byte * per_byte_ + j] = w.levels[code];
        }
    }
  }
  void decode(std::size_t row, float* out) const {
    const std::size_t cols = w_.codes.cols;
    if (!per_byte_) {
      for (std::size_t c = 0; c < cols; ++c) out[c] = w_.levels[w_.codes.at(row, c)];
      return;
    }
    const std::uint8_t* bytes = w_.codes.bytes.data() + row * packed_row_bytes(cols, w_.codes.bits);
    const std::size_t full = cols / per_byte_;
    for (std::size_t b = 0; b < full; ++b)
      std::copy_n(&table_[bytes[b] * per_byte_], per_byte_, out + b * per_byte_);
    for (std::size_t c = full * per_byte_; c < cols; ++c) out[c] = table_[bytes[full] * per_byte_ + (c - full * per_byte_)];
  }

 private:
  const QuantizedMatrix& w_;
  std::size_t per_byte_;
  std::vector<float> table_;
};

// Every code of the width has a level (unused codes of a 3-level codebook in 2 bits included), so
// no code read from a file can index past the table.
void check(const QuantizedMatrix& w) {
  NUQ_REQUIRE(is_packable_bits(w.codes.bits), "qgemm: ", w.codes.bits, "-bit codes are not supported");
  NUQ_REQUIRE(w.levels.size() == (std::size_t{1} << w.codes.bits), "qgemm: ", w.levels.size(),
              " levels for ", w.codes.bits, "-bit codes (need one per code)");
  NUQ_REQUIRE(w.codes.bytes.size() == w.codes.rows * packed_row_bytes(w.codes.cols, w.codes.bits),
              "qgemm: packed codes hold ", w.codes.bytes.size(), " bytes, the shape needs ",
              w.codes.rows * packed_row_bytes(w.codes.cols, w.codes.bits));
}

}  // namespace

void qgemm(const float* x, std::size_t m, const QuantizedMatrix& w, const float* bias, float* y) {
  check(w);
  const std::size_t n = w.codes.rows, k = w.codes.cols;
  if (m == 0 || n == 0) return;
  const RowDecoder decoder(w);
  if (m <= kDirectMaxBatch) {
    std::vector<float> row(k);
    for (std::size_t r = 0; r < n; ++r) {
      decoder.decode(r, row.data());
      for (std::size_t i = 0; i < m; ++i) {
        const float* xi = x + i * k;
        float sum = 0.0f;
        for (std::size_t c = 0; c < k; ++c) sum += xi[c] * row[c];
        y[i * n + r] = sum + (bias ? bias[r] : 0.0f);
      }
    }
    return;
  }
  std::vector<float> panel(kPanelRows * k);
  for (std::size_t first = 0; first < n; first += kPanelRows) {
    const std::size_t rows = std::min(kPanelRows, n - first);
    for (std::size_t r = 0; r < rows; ++r) decoder.decode(first + r, &panel[r * k]);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(rows), int(k), 1.0f, x, int(k),
                panel.data(), int(k), 0.0f, y + first, int(n));
  }
  if (bias)
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t r = 0; r < n; ++r) y[i * n + r] += bias[r];
}

std::vector<float> dequantize(const QuantizedMatrix& w) {
  check(w);
  std::vector<float> dense(w.codes.rows * w.codes.cols);
  for (std::size_t r = 0; r < w.codes.rows; ++r)
    for (std::size_t c = 0; c < w.codes.cols; ++c) {
      dense[r * w.codes.cols + c] = w.levels[w.codes.at(r, c)];
    }
  return dense;
}

void qgemm_ref(const float* x, std::size_t m, const QuantizedMatrix& w, const float* bias, float* y) {
  const std::vector<float> dense = dequantize(w);
  const std::size_t n = w.codes.rows, k = w.codes.cols;
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(n), int(k), 1.0f, x, int(k), dense.data(),
              int(k), 0.0f, y, int(n));
  if (bias)
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t r = 0; r < n; ++r) y[i * n + r] += bias[r];
}

}  // namespace nuq
