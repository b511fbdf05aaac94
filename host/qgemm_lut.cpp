// Quantized GEMV by table look-up across rows (the idea of T-MAC's LUT kernels, kept in FP32).
//
// A nibble of a packed row holds 4 / bits codes of consecutive columns; with one codebook for the
// matrix, its contribution to a dot product with x depends only on the nibble's value and its
// position p. So for every position, a table T_p[v] = sum_j level(code j of v) * x[col(p, j)] of
// 16 floats is built once per call (cheap: a few FMAs per position), and a row's dot product is
// the sum over positions of T_p[nibble]. Sixteen rows go together: 64 bytes of each are loaded
// and transposed so that one register holds the 16 rows' 32-bit words at the same offset (a
// gather was three times slower on Zen 4), and one vpermps per nibble position looks up all
// sixteen rows' tables at once (vpermps reads only the low 4 bits of each lane's index, so a
// shift right by 4 moves to the next nibble with no mask). Per 16 rows x 8 positions that is 7
// shifts, 8 look-ups and 8 additions for 256 two-bit weights, against a decode, a look-up and an
// FMA per 16 weights on the row-by-row path. The tables are walked in chunks that stay in L1.
// The transpose costs about 40 % of the time (its shuffles share the ports with vpermps), so a
// matrix used many times is rearranged once (LutLayout) into that transposed order, chunk by
// chunk, and the pass then streams it front to back with one aligned load per word.
#include "qgemm_lut.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "nuq/cpu_threads.h"
#include "row_blocks.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace nuq::detail {

#if defined(__AVX512F__) && defined(__AVX512BW__)
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 warns about the undefined pass-through operand inside its own AVX-512 intrinsics.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
namespace {

constexpr std::size_t kRows = 16;        // rows per register
constexpr std::size_t kNibbles = 8;      // nibble positions per 32-bit word
constexpr std::size_t kChunkGroups = 2;  // 64-byte groups per row per pass: 256 tables, 16 KiB per row of X
constexpr std::size_t kSlice = kRowsPerPass;  // rows of X per pass: 8 accumulators + the codes fit the 32 registers

// Where the nibbles of a packed row fall among its k columns: `count` runs of `cols` columns, each
// packed from a fresh byte into `bytes` bytes. An ungrouped matrix is one run of k columns; a
// grouped tensor's row is its groups, one after another in memory.
struct Runs {
  std::size_t cols, bytes, count;
};

// tables[(i * positions + p) * 16 + v] for row i of X; positions past a run's columns, and past the
// last run, are zero.
void build_tables(const float* x, std::size_t m, std::size_t k, int bits, const float* levels, const Runs& runs,
                  std::size_t positions, float* tables) {
  const unsigned per_nibble = 4u / unsigned(bits), mask = (1u << bits) - 1u;
  __m512 lane_levels[4];  // lane v of vector j: the level of the j-th code of nibble value v
  for (unsigned j = 0; j < per_nibble; ++j) {
    alignas(64) float l[16];
    for (unsigned v = 0; v < 16; ++v) l[v] = levels[(v >> (j * unsigned(bits))) & mask];
    lane_levels[j] = _mm512_load_ps(l);
  }
  for (std::size_t i = 0; i < m; ++i) {
    float* t = tables + i * positions * 16;
    std::size_t p = 0;
    for (std::size_t run = 0; run < runs.count; ++run) {
      const float* xr = x + i * k + run * runs.cols;
      for (std::size_t q = 0; q < 2 * runs.bytes; ++q, ++p) {
        __m512 sum = _mm512_setzero_ps();
        for (unsigned j = 0; j < per_nibble; ++j) {
          const std::size_t col = q * per_nibble + j;
          if (col < runs.cols) sum = _mm512_fmadd_ps(lane_levels[j], _mm512_set1_ps(xr[col]), sum);
        }
        _mm512_storeu_ps(t + p * 16, sum);
      }
    }
    for (; p < positions; ++p) _mm512_storeu_ps(t + p * 16, _mm512_setzero_ps());
  }
}

// Sixteen rows' 32-bit words [16g, 16g + 16) turned so that out[j] holds word 16g + j of every
// row (lane r: row r): one 64-byte load per row, then a 16 x 16 transpose in four shuffle stages.
// Bytes past the end of a row, and rows past `rows`, read as zero (masked loads never fault).
void load_words(const std::uint8_t* base, std::size_t row_bytes, std::size_t rows, std::size_t g, __m512i out[16]) {
  __m512i r[16];
  const std::size_t begin = 64 * g;
  const std::size_t available = row_bytes > begin ? std::min<std::size_t>(64, row_bytes - begin) : 0;
  const __mmask64 bytes = available == 64 ? ~__mmask64{0} : (__mmask64{1} << available) - 1;
  for (std::size_t i = 0; i < 16; ++i)
    r[i] = i < rows ? _mm512_maskz_loadu_epi8(bytes, base + i * row_bytes + begin) : _mm512_setzero_si512();
  __m512i t[16], u[16];
  for (std::size_t i = 0; i < 8; ++i) {  // per 128-bit lane L: rows 2i, 2i+1 of words 4L..4L+3, interleaved
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (std::size_t i = 0; i < 4; ++i) {  // u[4i + q], lane L: rows 4i..4i+3 of word 4L + q
    u[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i + 0], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i + 0], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (std::size_t q = 0; q < 4; ++q) {  // out[4L + q] = lane L of u[q], u[4 + q], u[8 + q], u[12 + q]
    const __m512i v0 = _mm512_shuffle_i32x4(u[q], u[4 + q], 0x44), v1 = _mm512_shuffle_i32x4(u[q], u[4 + q], 0xEE);
    const __m512i v2 = _mm512_shuffle_i32x4(u[8 + q], u[12 + q], 0x44);
    const __m512i v3 = _mm512_shuffle_i32x4(u[8 + q], u[12 + q], 0xEE);
    out[q] = _mm512_shuffle_i32x4(v0, v2, 0x88);
    out[4 + q] = _mm512_shuffle_i32x4(v0, v2, 0xDD);
    out[8 + q] = _mm512_shuffle_i32x4(v1, v3, 0x88);
    out[12 + q] = _mm512_shuffle_i32x4(v1, v3, 0xDD);
  }
}

// Where block() takes the 16 rows' words of each 64-byte group from: group(g) makes word(d) hold
// word 16g + d of every row.
class TransposedOnTheFly {  // the row-major packed codes, transposed per group
 public:
  TransposedOnTheFly(const std::uint8_t* codes, std::size_t row_bytes, std::size_t row0, std::size_t rows)
      : base_(codes + row0 * row_bytes), row_bytes_(row_bytes), rows_(rows) {}
  void group(std::size_t g) { load_words(base_, row_bytes_, rows_, g, words_); }
  __m512i word(std::size_t d) const { return words_[d]; }

 private:
  const std::uint8_t* base_;
  std::size_t row_bytes_, rows_;
  __m512i words_[16];
};

class Interleaved {  // a LutLayout's block of this chunk: the groups one after another
 public:
  Interleaved(const std::uint32_t* block, std::size_t first) : block_(block), first_(first) {}
  void group(std::size_t g) { current_ = block_ + (g - first_) * 256; }
  __m512i word(std::size_t d) const { return _mm512_load_si512(current_ + 16 * d); }

 private:
  const std::uint32_t* block_;
  std::size_t first_;
  const std::uint32_t* current_ = nullptr;
};

// A grouped tensor's scales as block() applies them: run q of row r (its q-th group) spans `words`
// 32-bit words of the packed row and has the scale values[r * per_row + q].
struct RunScales {
  const float* values;
  std::size_t per_row, words;
};

// Adds to y the contributions of word groups [first, last) (16 words each) of the 16 (or `rows`)
// rows from `row0`; with kScaled, each run's sum times its scale (a * s + b * s = (a + b) * s, so
// a run cut by the end of a chunk is finished by the next one).
template <std::size_t kBatch, bool kScaled, typename Words>
void block(Words words, std::size_t row0, std::size_t rows, std::size_t first, std::size_t last, const float* tables,
           std::size_t positions, float* y, std::size_t n, const RunScales* scales) {
  constexpr std::size_t kAcc = kBatch == 1 ? 4 : kBatch <= 4 ? 2 : 1;  // independent sums hide the latency
  const __mmask16 valid = rows == kRows ? __mmask16(0xFFFF) : __mmask16((1u << rows) - 1u);
  __m512 acc[kBatch][kAcc];  // the sums of the current run (kScaled) or of everything
  __m512 total[kBatch];      // kScaled: the finished runs' sums times their scales
  for (std::size_t i = 0; i < kBatch; ++i) {
    total[i] = _mm512_setzero_ps();
    for (std::size_t a = 0; a < kAcc; ++a) acc[i][a] = _mm512_setzero_ps();
  }
  const auto sum_of = [&](std::size_t i) {
    __m512 sum = acc[i][0];
    for (std::size_t a = 1; a < kAcc; ++a) sum = _mm512_add_ps(sum, acc[i][a]);
    return sum;
  };
  // kScaled: the run the words being summed belong to, and how many of its words are still to come.
  std::size_t current = 0, left = 0;
  __m512i scale_index = _mm512_setzero_si512();  // lane r: row r's first scale, relative to row0's
  if constexpr (kScaled) {
    current = 16 * first / scales->words;
    left = scales->words - 16 * first % scales->words;
    scale_index = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                     _mm512_set1_epi32(int(scales->per_row)));
  }
  const auto finish_run = [&] {  // runs past the row's last are padding, whose sums are zero
    if (current < scales->per_row) {
      const __m512 scale = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), valid, scale_index,
                                                    scales->values + row0 * scales->per_row + current, 4);
      for (std::size_t i = 0; i < kBatch; ++i) {
        total[i] = _mm512_fmadd_ps(sum_of(i), scale, total[i]);
        for (std::size_t a = 0; a < kAcc; ++a) acc[i][a] = _mm512_setzero_ps();
      }
    }
  };
  for (std::size_t g = first; g < last; ++g) {
    words.group(g);
    for (std::size_t d = 0; d < 16; ++d) {
      __m512i word = words.word(d);
      const float* t = tables + (16 * g + d) * kNibbles * 16;
      for (std::size_t j = 0; j < kNibbles; ++j) {
        for (std::size_t i = 0; i < kBatch; ++i)
          acc[i][j % kAcc] = _mm512_add_ps(
              acc[i][j % kAcc], _mm512_permutexvar_ps(word, _mm512_loadu_ps(t + (i * positions + j) * 16)));
        word = _mm512_srli_epi32(word, 4);
      }
      if constexpr (kScaled) {
        if (--left == 0) {
          finish_run();
          ++current;
          left = scales->words;
        }
      }
    }
  }
  if constexpr (kScaled) {
    if (left != scales->words) finish_run();  // the part of a run this chunk holds
  }
  for (std::size_t i = 0; i < kBatch; ++i) {
    const __m512 sum = kScaled ? total[i] : sum_of(i);
    float* out = y + i * n + row0;
    _mm512_mask_storeu_ps(out, valid, _mm512_add_ps(_mm512_maskz_loadu_ps(valid, out), sum));
  }
}

std::size_t word_groups(std::size_t row_bytes) { return (row_bytes + 63) / 64; }

// The LutLayout order: chunks of kChunkGroups groups (the last may be shorter); within a chunk,
// blocks of 16 rows; within a block, its groups; within a group, 16 words of 16 rows (lane = row).
// So a pass over one chunk, block by block, reads the layout front to back.
std::size_t block_start(std::size_t first, std::size_t groups, std::size_t blocks, std::size_t b) {
  const std::size_t in_chunk = std::min(kChunkGroups, groups - first);
  return (first * blocks + b * in_chunk) * 256;
}

// What run() multiplies: n rows of row_bytes packed bytes, row-major from `codes`, or from a prepared
// `layout` where there is one; `weights` (n * k) decides whether a second thread is worth it.
struct PackedRows {
  const std::uint8_t* codes;
  std::size_t n, row_bytes, weights;
  const LutLayout* layout;
};

template <std::size_t kBatch, bool kScaled>
void run(const PackedRows& w, const RunScales* scales, const float* tables, std::size_t positions, float* y) {
  const std::size_t n = w.n, groups = word_groups(w.row_bytes), blocks = (n + kRows - 1) / kRows;
  const auto block_count = static_cast<std::ptrdiff_t>(blocks);
#pragma omp parallel if (w.weights >= kParallelMinWeights) num_threads(cpu_threads())
  for (std::size_t first = 0; first < groups; first += kChunkGroups) {
    const std::size_t last = std::min(groups, first + kChunkGroups);
    // The same static split of blocks in every chunk: a thread only ever touches its own rows of y.
#pragma omp for schedule(static) nowait
    for (std::ptrdiff_t b = 0; b < block_count; ++b) {
      const std::size_t row0 = std::size_t(b) * kRows, rows = std::min(kRows, n - row0);
      if (w.layout)
        block<kBatch, kScaled>(
            Interleaved(w.layout->words.data() + block_start(first, groups, blocks, std::size_t(b)), first), row0,
            rows, first, last, tables, positions, y, n, scales);
      else
        block<kBatch, kScaled>(TransposedOnTheFly(w.codes, w.row_bytes, row0, rows), row0, rows, first, last, tables,
                               positions, y, n, scales);
    }
  }
}

// The most a thread keeps of its tables between products (see the end of multiply).
constexpr std::size_t kKeptTableBytes = std::size_t{16} << 20;

// y[m, n] = x[m, k] * W^T for W's packed rows `w`, whose nibbles fall among the columns as `runs`
// says, coded by `levels`, each run scaled by `scales` when not null.
void multiply(const float* x, std::size_t m, std::size_t k, int bits, const float* levels, const Runs& runs,
              const PackedRows& w, const RunScales* scales, float* y) {
  const std::size_t positions = kNibbles * 16 * word_groups(w.row_bytes);  // whole 64-byte groups
  thread_local std::vector<float> tables;
  std::fill(y, y + m * w.n, 0.0f);
  // Up to kSlice rows of X share each register of codes; more are taken slice by slice, each with
  // its own tables (so their memory stays kSlice rows' worth whatever the batch).
  tables.resize(std::min(m, kSlice) * positions * 16);
  for (std::size_t first = 0; first < m; first += kSlice) {
    const std::size_t rows = std::min(kSlice, m - first);
    build_tables(x + first * k, rows, k, bits, levels, runs, positions, tables.data());
    const float* t = tables.data();
    float* out = y + first * w.n;
    with_row_count(rows, [&](auto count) {
      if (scales)
        run<count(), true>(w, scales, t, positions, out);
      else
        run<count(), false>(w, nullptr, t, positions, out);
    });
  }
  // Kept for the thread's next product only while small: at 16 floats a code nibble for each of up
  // to 8 rows of X, an X of 2^20 columns needs hundreds of MB, which a thread would otherwise hold
  // for good (an LLM layer's, up to 28,672 columns at 4 bits, stays under 16 MiB and is kept).
  if (tables.capacity() * sizeof(float) > kKeptTableBytes) std::vector<float>().swap(tables);
}

}  // namespace

bool lut_applies(const QuantizedMatrix& w) { return w.codes.bits <= 4 && !w.per_row() && w.codes.rows > 0; }

namespace {

// Rows of `row_bytes` packed bytes in the LutLayout order: each 64-byte group of 16 rows transposed
// once by the load_words a call without a layout runs for it (so the two read the same words).
LutLayout interleave(const std::uint8_t* codes, std::size_t n, std::size_t k, std::size_t row_bytes, int bits) {
  LutLayout layout;
  const std::size_t groups = word_groups(row_bytes), blocks = (n + kRows - 1) / kRows;
  layout.rows = n;
  layout.cols = k;
  layout.row_bytes = row_bytes;
  layout.bits = bits;
  layout.words.resize(blocks * groups * 256);  // uninitialised: every word is stored below, padding as zero
  const auto block_count = static_cast<std::ptrdiff_t>(blocks);
#pragma omp parallel for schedule(static) if (n * k >= kParallelMinWeights) num_threads(cpu_threads())
  for (std::ptrdiff_t b = 0; b < block_count; ++b) {
    const std::size_t row0 = std::size_t(b) * kRows, rows = std::min(kRows, n - row0);
    for (std::size_t g = 0; g < groups; ++g) {
      __m512i words[16];
      load_words(codes + row0 * row_bytes, row_bytes, rows, g, words);
      const std::size_t first = g / kChunkGroups * kChunkGroups;
      std::uint32_t* at = layout.words.data() + block_start(first, groups, blocks, std::size_t(b)) + (g - first) * 256;
      for (std::size_t d = 0; d < 16; ++d) _mm512_store_si512(at + 16 * d, words[d]);
    }
  }
  return layout;
}

}  // namespace

LutLayout make_lut_layout(const QuantizedMatrix& w) {
  if (!lut_applies(w)) return {};
  return interleave(w.codes.bytes.data(), w.codes.rows, w.codes.cols,
                    packed_row_bytes(w.codes.cols, w.codes.bits), w.codes.bits);
}

LutLayout make_grouped_lut_layout(const QuantizedTensor& w, std::size_t n, std::size_t k) {
  const int bits = w.matrix.codes.bits;
  const std::size_t group_bytes = packed_row_bytes(w.group_size, bits), per_row = k / w.group_size;
  if (n == 0 || k == 0 || !grouped_lut_applies(bits, group_bytes, per_row)) return {};
  return interleave(w.matrix.codes.bytes.data(), n, k, per_row * group_bytes, bits);
}

bool lut_compiled() { return true; }

bool qgemm_lut(const float* x, std::size_t m, const QuantizedMatrix& w, const LutLayout* layout, float* y) {
  const int bits = w.codes.bits;
  const std::size_t n = w.codes.rows, k = w.codes.cols, row_bytes = packed_row_bytes(k, bits);
  if (m == 0 || m > lut_max_batch(bits) || !lut_applies(w)) return false;
  if (layout && !layout->fits(w)) layout = nullptr;
  const PackedRows rows{w.codes.bytes.data(), n, row_bytes, n * k, layout};
  multiply(x, m, k, bits, w.levels.data(), Runs{k, row_bytes, 1}, rows, nullptr, y);
  return true;
}

bool qgemm_lut_grouped(const float* x, std::size_t m, std::size_t n, std::size_t k, const QuantizedTensor& w,
                       const LutLayout* layout, const float* bias, float* y) {
  const int bits = w.matrix.codes.bits;
  const std::size_t group_bytes = packed_row_bytes(w.group_size, bits), per_row = k / w.group_size;
  if (m == 0 || m > lut_max_batch(bits) || n == 0 || k == 0 || !grouped_lut_applies(bits, group_bytes, per_row))
    return false;
  if (!all_finite(x, m * k)) return false;  // see mean_part
  const RunScales scales{w.scales.data(), per_row, group_bytes / 4};
  const std::size_t row_bytes = per_row * group_bytes;
  if (layout && !layout->fits(n, k, row_bytes, bits)) layout = nullptr;
  multiply(x, m, k, bits, w.normalised_levels.data(), Runs{w.group_size, group_bytes, per_row},
           PackedRows{w.matrix.codes.bytes.data(), n, row_bytes, n * k, layout}, &scales, y);
  for (std::size_t i = 0; i < m; ++i) {
    const float shift = mean_part(w.mean, x + i * k, k);
    for (std::size_t r = 0; r < n; ++r) y[i * n + r] += shift + (bias ? bias[r] : 0.0f);
  }
  return true;
}

#else

bool lut_compiled() { return false; }
bool lut_applies(const QuantizedMatrix&) { return false; }
LutLayout make_lut_layout(const QuantizedMatrix&) { return {}; }
LutLayout make_grouped_lut_layout(const QuantizedTensor&, std::size_t, std::size_t) { return {}; }
bool qgemm_lut(const float*, std::size_t, const QuantizedMatrix&, const LutLayout*, float*) { return false; }
bool qgemm_lut_grouped(const float*, std::size_t, std::size_t, std::size_t, const QuantizedTensor&, const LutLayout*,
                       const float*, float*) {
  return false;
}

#endif

}  // namespace nuq::detail
