#include "nuq/qgemm.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <climits>
#include <cstring>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "nuq/error.h"
#include "packed_simd.h"
#include "panel_gemm.h"
#include "qgemm_lut.h"
#include "row_blocks.h"

namespace nuq {
namespace {

constexpr std::size_t kDirectMaxBatch = 16;  // up to this, decoded codes meet X in registers
constexpr std::size_t kRowBlock = 4;         // rows of W that share each load of X there (m >= 2)
constexpr std::size_t kBlockXRows = 4;       // rows of X a block takes at a time (4 x 4 accumulators)
using detail::kParallelMinWeights;
using detail::kRowsPerPass;

// Expands one packed row into floats. For widths below 8 a byte holds several codes; with one
// table for the matrix, a table maps each of the 256 byte values to its levels at once (a table
// per row would cost as much to build as the row to decode: those rows are decoded code by code).
class RowDecoder {
 public:
  RowDecoder(const QuantizedMatrix& w, const std::vector<LevelGrid>& grids)
      : w_(w), per_byte_(w.codes.bits < 8 ? 8 / w.codes.bits : 0), grids_(grids) {
    if (per_byte_ && !w.per_row()) {
      table_.resize(256 * per_byte_);
      const unsigned mask = (1u << w.codes.bits) - 1u;
      for (unsigned byte = 0; byte < 256; ++byte)
        for (std::size_t j = 0; j < per_byte_; ++j) {
          const unsigned code = (byte >> (j * w.codes.bits)) & mask;
          table_[byte * per_byte_ + j] = w.levels[code];
        }
    }
  }
  // Row `row` into out[0, cols), from column `from` on (a multiple of 16: the columns before it
  // were decoded sixteen at a time).
  void decode(std::size_t row, float* out, std::size_t from = 0) const {
    const std::size_t cols = w_.codes.cols;
    const float* levels = w_.row_levels(row);
    const std::uint8_t* bytes = w_.codes.bytes.data() + row * packed_row_bytes(cols, w_.codes.bits);
    if (w_.codes.bits == 8) {
      for (std::size_t c = from; c < cols; ++c) out[c] = levels[bytes[c]];
      return;
    }
    if (w_.codes.bits == 16) {  // little-endian, as the packed layout and the U16 files store it
      const std::optional<LevelGrid> grid = this->grid(row);
      for (std::size_t c = from; c < cols; ++c) {
        const std::size_t code = bytes[2 * c] | (std::size_t{bytes[2 * c + 1]} << 8);
        out[c] = grid ? grid->level(std::uint32_t(code)) : levels[code];
      }
      return;
    }
    if (table_.empty()) {
      for (std::size_t c = from; c < cols; ++c) out[c] = levels[w_.codes.at(row, c)];
      return;
    }
    const std::size_t full = cols / per_byte_;
    for (std::size_t b = from / per_byte_; b < full; ++b)
      std::copy_n(&table_[bytes[b] * per_byte_], per_byte_, out + b * per_byte_);
    for (std::size_t c = std::max(from, full * per_byte_); c < cols; ++c)
      out[c] = table_[bytes[full] * per_byte_ + (c - full * per_byte_)];
  }

  // Row `row`'s levels as a uniform grid (8- and 16-bit codes whose tables are on grids):
  // computed, not gathered.
  std::optional<LevelGrid> grid(std::size_t row) const {
    if (grids_.empty()) return std::nullopt;
    return grids_.size() == 1 ? grids_[0] : grids_[row];
  }

 private:
  const QuantizedMatrix& w_;
  std::size_t per_byte_;
  std::vector<float> table_;  // 256 bytes x per_byte_ levels; empty for 8/16 bits or per-row levels
  const std::vector<LevelGrid>& grids_;  // grids_of's: none, the matrix's, or one per row
};

// The direct products' vector code (direct_rows, below, says how they are used).
#if defined(__AVX512F__)
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 warns about the undefined pass-through operand inside its own AVX-512 intrinsics.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
using detail::Levels16;
using detail::unpack16;

// sums[j][first + i] = the dot products of R rows' first 16 * chunks decoded codes with rows i < M
// of x (row stride k): each load of X meets all R rows of W, one accumulator per pair, summed in
// chunk order (so a row gives the same sums alone or in a block).
template <std::size_t R, std::size_t M>
void dot_row_block(const Levels16* levels, const std::uint8_t* const* rows, int bits, std::size_t chunks,
                   const float* x, std::size_t k, float (*sums)[kDirectMaxBatch], std::size_t first) {
  __m512 acc[R][M];
  for (std::size_t j = 0; j < R; ++j)
    for (std::size_t i = 0; i < M; ++i) acc[j][i] = _mm512_setzero_ps();
  for (std::size_t c = 0; c < chunks; ++c) {
    __m512 weights[R];
    for (std::size_t j = 0; j < R; ++j) weights[j] = levels[j](unpack16(rows[j], c, bits));
    for (std::size_t i = 0; i < M; ++i) {
      const __m512 xi = _mm512_loadu_ps(x + i * k + 16 * c);
      for (std::size_t j = 0; j < R; ++j) acc[j][i] = _mm512_fmadd_ps(weights[j], xi, acc[j][i]);
    }
  }
  for (std::size_t j = 0; j < R; ++j)
    for (std::size_t i = 0; i < M; ++i) sums[j][first + i] = _mm512_reduce_add_ps(acc[j][i]);
}

// dot_row_block over all m rows of X, `per_pass` at a time: a larger batch passes over the codes
// again (decoding is cheap next to the FMAs).
template <std::size_t R>
void dot_rows_in_passes(const Levels16* levels, const std::uint8_t* const* rows, int bits, std::size_t chunks,
                        const float* x, std::size_t k, std::size_t m, std::size_t per_pass,
                        float (*sums)[kDirectMaxBatch]) {
  for (std::size_t first = 0; first < m; first += per_pass)
    detail::with_row_count(std::min(per_pass, m - first), [&](auto count) {
      dot_row_block<R, count()>(levels, rows, bits, chunks, x + first * k, k, sums, first);
    });
}

// Rows r .. r + kRowBlock - 1 with m >= 2 rows of X: returns the columns handled (a multiple of 16).
std::size_t direct_block_simd(const RowDecoder& decoder, const QuantizedMatrix& w, std::size_t r, const float* x,
                              std::size_t m, float (*sums)[kDirectMaxBatch]) {
  const int bits = w.codes.bits;
  const std::size_t k = w.codes.cols, chunks = k / 16, row_bytes = packed_row_bytes(k, bits);
  const Levels16 levels[kRowBlock] = {Levels16(w.row_levels(r), bits, decoder.grid(r)),
                                      Levels16(w.row_levels(r + 1), bits, decoder.grid(r + 1)),
                                      Levels16(w.row_levels(r + 2), bits, decoder.grid(r + 2)),
                                      Levels16(w.row_levels(r + 3), bits, decoder.grid(r + 3))};
  static_assert(kRowBlock == 4, "the levels above are one per row of the block");
  const std::uint8_t* rows[kRowBlock];
  for (std::size_t j = 0; j < kRowBlock; ++j) rows[j] = w.codes.bytes.data() + (r + j) * row_bytes;
  dot_rows_in_passes<kRowBlock>(levels, rows, bits, chunks, x, k, m, kBlockXRows, sums);
  return 16 * chunks;
}

#if defined(__AVX512VBMI__)
// 8-bit codes off a grid: sums[0][first + i] = the dot products of a row with rows i < M of x (row
// stride k), its levels looked up 64 at a time in the table's byte planes and the chunks of sixteen
// left over gathered; one row of X alone gets four accumulators, as direct_row_simd's gathers do.
template <std::size_t M>
void dot_row_planes(const detail::BytePlaneLevels& planes, const Levels16& gathered, const std::uint8_t* row,
                    std::size_t chunks, const float* x, std::size_t k, float (*sums)[kDirectMaxBatch],
                    std::size_t first) {
  constexpr std::size_t kLanes = M == 1 ? 4 : 1;  // accumulators per row of X
  __m512 acc[M][kLanes];
  for (auto& lanes : acc)
    for (__m512& a : lanes) a = _mm512_setzero_ps();
  std::size_t c = 0;
  for (; c + 4 <= chunks; c += 4) {
    __m512 weights[4];
    planes(row + 16 * c, weights);
    for (std::size_t u = 0; u < 4; ++u)
      for (std::size_t i = 0; i < M; ++i)
        acc[i][u % kLanes] = _mm512_fmadd_ps(weights[u], _mm512_loadu_ps(x + i * k + 16 * (c + u)), acc[i][u % kLanes]);
  }
  for (; c < chunks; ++c) {
    const __m512 weights = gathered(unpack16(row, c, 8));
    for (std::size_t i = 0; i < M; ++i) acc[i][0] = _mm512_fmadd_ps(weights, _mm512_loadu_ps(x + i * k + 16 * c), acc[i][0]);
  }
  for (std::size_t i = 0; i < M; ++i) {
    for (std::size_t u = 1; u < kLanes; ++u) acc[i][0] = _mm512_add_ps(acc[i][0], acc[i][u]);
    sums[0][first + i] = _mm512_reduce_add_ps(acc[i][0]);
  }
}
#endif

// Returns the number of columns handled (a multiple of 16); the caller finishes the rest.
std::size_t direct_row_simd(const QuantizedMatrix& w, std::size_t r, const float* x, std::size_t m,
                            float (*sums)[kDirectMaxBatch], const std::optional<LevelGrid>& grid) {
  const int bits = w.codes.bits;
  const std::size_t k = w.codes.cols, chunks = k / 16;
  const std::uint8_t* row = w.codes.bytes.data() + r * packed_row_bytes(k, bits);
  const Levels16 levels(w.row_levels(r), bits, grid);
#if defined(__AVX512VBMI__)
  if (bits == 8 && !grid && chunks >= 4) {
    const detail::BytePlaneLevels planes(w.row_levels(r));
    for (std::size_t first = 0; first < m; first += kRowsPerPass)
      detail::with_row_count(std::min(kRowsPerPass, m - first), [&](auto count) {
        dot_row_planes<count()>(planes, levels, row, chunks, x + first * k, k, sums, first);
      });
    return 16 * chunks;
  }
#endif
  if (m == 1) {  // four accumulators hide the FMA latency
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    std::size_t c = 0;
    for (; c + 4 <= chunks; c += 4)
      for (std::size_t u = 0; u < 4; ++u)
        acc[u] = _mm512_fmadd_ps(levels(unpack16(row, c + u, bits)), _mm512_loadu_ps(x + 16 * (c + u)), acc[u]);
    for (; c < chunks; ++c)
      acc[0] = _mm512_fmadd_ps(levels(unpack16(row, c, bits)), _mm512_loadu_ps(x + 16 * c), acc[0]);
    sums[0][0] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
    return 16 * chunks;
  }
  dot_rows_in_passes<1>(&levels, &row, bits, chunks, x, k, m, kRowsPerPass, sums);
  return 16 * chunks;
}

// Row r decoded into out sixteen codes at a time, to the levels RowDecoder gives (8-bit codes from
// their table, not the grid the dot products above may use); returns the columns done.
std::size_t decode_row_simd(const QuantizedMatrix& w, std::size_t r, float* out, const std::optional<LevelGrid>& grid) {
  const int bits = w.codes.bits;
  const std::size_t k = w.codes.cols, chunks = k / 16;
  const std::uint8_t* row = w.codes.bytes.data() + r * packed_row_bytes(k, bits);
  const Levels16 levels(w.row_levels(r), bits, bits == 16 ? grid : std::nullopt);
  std::size_t c = 0;
#if defined(__AVX512VBMI__)
  if (bits == 8 && chunks >= 4) {
    const detail::BytePlaneLevels planes(w.row_levels(r));
    for (__m512 decoded[4]; c + 4 <= chunks; c += 4) {
      planes(row + 16 * c, decoded);
      for (std::size_t u = 0; u < 4; ++u) _mm512_storeu_ps(out + 16 * (c + u), decoded[u]);
    }
  }
#endif
  for (; c < chunks; ++c) _mm512_storeu_ps(out + 16 * c, levels(unpack16(row, c, bits)));
  return 16 * chunks;
}
#endif

// Row r of `w` as floats, into out[0, cols).
void decode_row(const RowDecoder& decoder, const QuantizedMatrix& w, std::size_t r, float* out) {
  std::size_t done = 0;
#if defined(__AVX512F__)
  done = decode_row_simd(w, r, out, decoder.grid(r));
#endif
  if (done < w.codes.cols) decoder.decode(r, out, done);
}

// Row r's columns from `done` on (those the vector code left), added to sums[i < m].
void finish_row(const RowDecoder& decoder, const QuantizedMatrix& w, std::size_t r, const float* x, std::size_t m,
                std::size_t done, float* sums) {
  const std::size_t k = w.codes.cols;
  if (done == k) return;
  thread_local std::vector<float> row;
  row.resize(k);
  decoder.decode(r, row.data());
  for (std::size_t i = 0; i < m; ++i) {
    const float* xi = x + i * k;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (std::size_t c = done; c < k; ++c) sum += xi[c] * row[c];
    sums[i] += sum;
  }
}

// Dot products of `count` (1 to kRowBlock) packed rows from r on with m <= kDirectMaxBatch rows of
// X. With AVX-512, codes are decoded sixteen at a time in registers and meet X there, so no decoded
// row is ever stored, a full block of rows sharing each load of X (m >= 2); without it each row is
// decoded through the byte table into a buffer and dot products are vectorised by the compiler.
// (Where one row has a grid, every row has: grids_of gives all or none.)
void direct_rows(const RowDecoder& decoder, const QuantizedMatrix& w, std::size_t r, std::size_t count,
                 const float* x, std::size_t m, float (*sums)[kDirectMaxBatch]) {
  std::size_t done[kRowBlock] = {};
  for (std::size_t j = 0; j < count; ++j)
    for (std::size_t i = 0; i < m; ++i) sums[j][i] = 0.0f;
#if defined(__AVX512F__)
  // Levels gathered from 8/16-bit tables are not blocked: four rows' gathers in flight at once
  // measured slower than one row's (bench/results/cpu-qgemm-row-blocks-2026-12-06.md).
  if (count == kRowBlock && m >= 2 && (w.codes.bits <= 4 || decoder.grid(r))) {
    const std::size_t columns = direct_block_simd(decoder, w, r, x, m, sums);
    for (std::size_t j = 0; j < count; ++j) done[j] = columns;
  } else {
    for (std::size_t j = 0; j < count; ++j) done[j] = direct_row_simd(w, r + j, x, m, sums + j, decoder.grid(r + j));
  }
#endif
  for (std::size_t j = 0; j < count; ++j) finish_row(decoder, w, r + j, x, m, done[j], sums[j]);
}

}  // namespace

std::optional<LevelGrid> level_grid(const float* levels, std::size_t count) {
  if (count < 2 || count > (std::size_t{1} << 24)) return std::nullopt;  // (codes exact as floats)
  std::size_t nearest_zero = 0;
  for (std::size_t c = 0; c < count; ++c) {
    if (!std::isfinite(levels[c])) return std::nullopt;
    if (std::abs(levels[c]) < std::abs(levels[nearest_zero])) nearest_zero = c;
  }
  LevelGrid grid;
  grid.scale = float((double(levels[count - 1]) - double(levels[0])) / double(count - 1));
  grid.origin_code = std::int32_t(nearest_zero);
  grid.origin_level = levels[nearest_zero];
  // A table rounded from an exact grid (the uniform designs' are made in double) is met to within
  // about 2^-22 of each level: its own rounding, the FMA's, and the step's (from the ends' rounding
  // and its own), each a unit in the last place at most; 2^-21 leaves room, and a table computed in
  // float (errors of x_max's last place in every level) is no grid here: its levels are gathered.
  for (std::size_t c = 0; c < count; ++c) {
    const double tolerance = std::ldexp(std::max(std::abs(double(levels[c])), std::abs(double(grid.scale))), -21);
    if (std::abs(double(grid.level(std::uint32_t(c))) - double(levels[c])) > tolerance) return std::nullopt;
  }
  return grid;
}

void add_bias(const float* bias, std::size_t m, std::size_t n, float* y) {
  if (bias)
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t r = 0; r < n; ++r) y[i * n + r] += bias[r];
}

void check_quantized_matrix(const QuantizedMatrix& w, const std::string& what) {
  NUQ_REQUIRE(is_packable_bits(w.codes.bits), what, ": ", w.codes.bits, "-bit codes are not supported");
  const std::size_t per_table = std::size_t{1} << w.codes.bits;
  NUQ_REQUIRE(w.levels.size() == per_table || w.levels.size() == w.codes.rows * per_table, what, ": ",
              w.levels.size(), " levels for ", w.codes.bits, "-bit codes in ", w.codes.rows,
              " rows (need one per code, for the matrix or for every row)");
  NUQ_REQUIRE(w.codes.bytes.size() == w.codes.rows * packed_row_bytes(w.codes.cols, w.codes.bits), what,
              ": packed codes hold ", w.codes.bytes.size(), " bytes, the shape needs ",
              w.codes.rows * packed_row_bytes(w.codes.cols, w.codes.bits));
}

void qgemm(const float* x, std::size_t m, const QuantizedMatrix& w, const float* bias, float* y) {
  detail::qgemm_prepared(x, m, w, nullptr, bias, y);
}

bool cpu_layout_used(const QuantizedMatrix& w, std::size_t m) {
  if (m == 0) return false;
#if defined(__AVX512F__)
  // The rows' grids: read by the direct products (m <= kDirectMaxBatch) and by 16-bit decoding.
  if (detail::lut_compiled() && w.per_row() && w.codes.bits >= 8 && (m <= kDirectMaxBatch || w.codes.bits == 16))
    return true;
#endif
  return detail::lut_compiled() && detail::lut_applies(w) && m <= detail::lut_max_batch(w.codes.bits);
}

std::vector<LevelGrid> detail::grids_of(const QuantizedMatrix& w, bool with_row_tables) {
  if (w.codes.bits < 8 || (w.per_row() && !with_row_tables)) return {};
  const std::size_t tables = w.per_row() ? w.codes.rows : 1, per_table = std::size_t{1} << w.codes.bits;
  std::vector<LevelGrid> grids;
  grids.reserve(tables);
  for (std::size_t t = 0; t < tables; ++t) {
    const std::optional<LevelGrid> grid = level_grid(w.levels.data() + t * per_table, per_table);
    if (!grid) return {};
    grids.push_back(*grid);
  }
  return grids;
}

detail::CpuPrepared detail::prepare_cpu(const QuantizedMatrix& w) {
  check_quantized_matrix(w, "prepare");
  // Rows' grids only where the AVX-512 products compute from them (as cpu_layout_used says).
  return {make_lut_layout(w), grids_of(w, detail::lut_compiled())};
}

void detail::qgemm_prepared(const float* x, std::size_t m, const QuantizedMatrix& w, const CpuPrepared* prepared,
                            const float* bias, float* y) {
  check_quantized_matrix(w, "qgemm");
  const std::size_t n = w.codes.rows, k = w.codes.cols;
  if (m == 0 || n == 0) return;
  NUQ_REQUIRE(k <= std::size_t(INT_MAX) && m <= std::size_t(INT_MAX), "qgemm: ", m, " x ", k,
              " exceeds the 32-bit dimensions of the BLAS interface");
  const LutLayout* layout = prepared && !prepared->layout.empty() ? &prepared->layout : nullptr;
  if (detail::qgemm_lut(x, m, w, layout, y)) {  // 1-4-bit codes, one codebook, batches up to lut_max_batch
    add_bias(bias, m, n, y);
    return;
  }
  const std::vector<LevelGrid> found = prepared ? std::vector<LevelGrid>{} : detail::grids_of(w, false);
  const RowDecoder decoder(w, prepared ? prepared->grids : found);
  if (m <= kDirectMaxBatch) {
    // Blocks of rows are independent: threads take contiguous runs of them (indices are 64-bit
    // throughout, so matrices beyond 2^31 weights are addressed correctly).
    const auto blocks = static_cast<std::ptrdiff_t>((n + kRowBlock - 1) / kRowBlock);
#pragma omp parallel for schedule(static) if (n * k >= kParallelMinWeights) num_threads(cpu_threads())
    for (std::ptrdiff_t b = 0; b < blocks; ++b) {
      const std::size_t first = std::size_t(b) * kRowBlock, count = std::min(kRowBlock, n - first);
      float sums[kRowBlock][kDirectMaxBatch];
      direct_rows(decoder, w, first, count, x, m, sums);
      for (std::size_t j = 0; j < count; ++j)
        for (std::size_t i = 0; i < m; ++i) y[i * n + first + j] = sums[j][i] + (bias ? bias[first + j] : 0.0f);
    }
    return;
  }
  detail::panel_gemm(x, m, n, k, bias, y, [&](std::size_t first, std::size_t rows, float* out) {
    for (std::size_t r = 0; r < rows; ++r) decode_row(decoder, w, first + r, out + r * k);
  });
}

void dequantize_rows(const QuantizedMatrix& w, std::size_t first, std::size_t count, float* out) {
  check_quantized_matrix(w, "dequantize");
  NUQ_ASSERT(first <= w.codes.rows && count <= w.codes.rows - first, "dequantize_rows: rows ", first, " + ", count,
             " of ", w.codes.rows);
  if (w.codes.cols == 0) return;  // rows of no weights, 2^60 of them perhaps: nothing to visit
  for (std::size_t r = first; r < first + count; ++r) {
    const float* levels = w.row_levels(r);
    for (std::size_t c = 0; c < w.codes.cols; ++c) *out++ = levels[w.codes.at(r, c)];
  }
}

std::vector<float> dequantize(const QuantizedMatrix& w) {
  check_quantized_matrix(w, "dequantize");  // before the allocation its shape sizes
  std::vector<float> dense(w.codes.rows * w.codes.cols);
  dequantize_rows(w, 0, w.codes.rows, dense.data());
  return dense;
}

void qgemm_ref(const float* x, std::size_t m, const QuantizedMatrix& w, const float* bias, float* y) {
  const std::vector<float> dense = dequantize(w);
  const std::size_t n = w.codes.rows, k = w.codes.cols;
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(n), int(k), 1.0f, x, int(k), dense.data(),
              int(k), 0.0f, y, int(n));
  add_bias(bias, m, n, y);
}

}  // namespace nuq
