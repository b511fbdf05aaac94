// Internal to host/qgemm.cpp and the CPU backend: the CPU path for 1-, 2- and 4-bit codes by table
// look-up across rows, up to moderate batches, and the interleaved layout prepared for it once per
// matrix. See qgemm_lut.cpp.
#pragma once

#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <utility>
#include <vector>

#include "nuq/ptq.h"
#include "nuq/qgemm.h"

namespace nuq::detail {

// The largest batch the look-up takes at `bits`; its cost grows linearly with the batch. Measured
// on 4096 x 4096 against the other two paths (bench/results/cpu-qgemm-2026-12-02.md): at 1 and 2
// bits it beats them up to m = 128 and ties at 256 (2 bits, m = 128: 22.7 ms against 32.4 ms for
// the panels); at 4 bits each row of X costs it a table per nibble position, and it is faster
// only up to m = 3 (0.81 ms against 0.87 ms direct; at m = 4 1.26 ms against 0.97 ms).
constexpr std::size_t lut_max_batch(int bits) { return bits == 4 ? 3 : 256; }

// Whole cache lines, so that each 64-byte load of the interleaved words is one line. For layouts
// only: resize() leaves what it adds uninitialised (construct below), since a layout's every word
// is stored once right after.
template <typename T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <typename U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64})); }
  void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t{64}); }
  // resize() leaves new elements uninitialised: every layout word is stored once, and zeroing them
  // first would be a pass over as many bytes again.
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <typename U>
  bool operator==(const CacheLineAllocator<U>&) const { return true; }
  template <typename U>
  bool operator!=(const CacheLineAllocator<U>&) const { return false; }
};

// A matrix's packed codes rearranged so that the look-up path reads, with one aligned 64-byte load,
// the same 32-bit word of sixteen consecutive rows (which it otherwise builds per call with a
// 16 x 16 transpose). Empty when the path does not take the matrix. The same bytes again, rounded
// up to whole blocks of 16 rows and 64-byte groups.
struct LutLayout {
  std::size_t rows = 0, cols = 0, row_bytes = 0;  // of the rows the look-up sees (a grouped tensor's whole rows)
  int bits = 0;
  std::vector<std::uint32_t, CacheLineAllocator<std::uint32_t>> words;

  bool empty() const { return words.empty(); }
  bool fits(std::size_t n, std::size_t k, std::size_t packed_bytes, int b) const {
    return !empty() && rows == n && cols == k && row_bytes == packed_bytes && bits == b;
  }
  bool fits(const QuantizedMatrix& w) const {
    return fits(w.codes.rows, w.codes.cols, packed_row_bytes(w.codes.cols, w.codes.bits), w.codes.bits);
  }
};

// True when the look-up path takes `w` at all (AVX-512 F and BW in the build, 1/2/4-bit codes,
// one table of levels for the matrix, at least one row).
bool lut_applies(const QuantizedMatrix& w);
// Whether this build of the library compiled the look-up at all (AVX-512 F and BW: -march=native on
// such a CPU; the portable and sanitizer builds have neither). Asked at run time, since the library
// and its callers are compiled with different flags.
bool lut_compiled();
LutLayout make_lut_layout(const QuantizedMatrix& w);  // `w` already checked (check_quantized_matrix)
// Whether the grouped look-up (where the build has it) takes groups of `group_bytes` packed bytes
// at `bits` bits, `per_row` to a row: a run must end on a word, and the scales of 16 rows must be
// within reach of the gather's 32-bit offsets.
inline bool grouped_lut_applies(int bits, std::size_t group_bytes, std::size_t per_row) {
  return bits <= 4 && group_bytes % 4 == 0 && per_row <= std::size_t(INT_MAX) / 16;
}

// A grouped tensor's layout, of its n whole rows of k columns, where qgemm_lut_grouped takes it
// (1-4-bit groups of whole words); `w` already checked (check_grouped).
LutLayout make_grouped_lut_layout(const QuantizedTensor& w, std::size_t n, std::size_t k);

// y[m, rows] = x[m, cols] * W^T (no bias) when the path applies and m <= lut_max_batch, from
// `layout` when it is given and fits `w`, else from the row-major codes. Returns false, touching
// nothing, otherwise.
bool qgemm_lut(const float* x, std::size_t m, const QuantizedMatrix& w, const LutLayout* layout, float* y);

// y[m, n] = x[m, k] * W^T (+ bias[n] when not null) for a grouped tensor W of [n, k] (already
// checked: check_grouped) with 1-, 2- or 4-bit codes in groups of whole 32-bit words, by the same
// look-up on its normalised levels, each group's sum times its scale, plus the mean times the sum
// of the row of X; when m <= lut_max_batch and X is finite; from `layout` when it is given and
// fits. Returns false, touching nothing, otherwise.
bool qgemm_lut_grouped(const float* x, std::size_t m, std::size_t n, std::size_t k, const QuantizedTensor& w,
                       const LutLayout* layout, const float* bias, float* y);

// A grouped weight is mean + scale * level, so the mean's part of its dot product with a row of X
// of k values is mean * sum(x), summed in double. (Where the products take it apart, an infinite x
// would meet both parts and could give inf - inf; those paths take finite X only.)
inline float mean_part(double mean, const float* x, std::size_t k) {
  double sum = 0.0;
  for (std::size_t c = 0; c < k; ++c) sum += x[c];
  return float(mean * sum);
}
inline bool all_finite(const float* x, std::size_t count) {
  for (std::size_t i = 0; i < count; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

// What the CPU backend works out once per matrix (Backend::prepare) instead of on every call.
struct CpuPrepared {
  LutLayout layout;              // the look-up path's interleaved rows; empty where it does not apply
  std::vector<LevelGrid> grids;  // 8/16-bit codes' levels on uniform grids (grids_of)
};
CpuPrepared prepare_cpu(const QuantizedMatrix& w);

// The level grids of 8- or 16-bit codes, whose levels a product then computes instead of gathering
// them from a table: one for a matrix of one table, one per row for a table per row (a uniform
// design under per-channel normalisation: each row's own map of the same grid); empty when any
// table is not on a grid, or for narrower codes. Checking a table costs about as much as a row's
// product at m = 1, so a table per row is checked only where prepared (with_row_tables).
std::vector<LevelGrid> grids_of(const QuantizedMatrix& w, bool with_row_tables);

// nuq::qgemm (host/qgemm.cpp) from what was prepared, or, with null, working it out on the way.
void qgemm_prepared(const float* x, std::size_t m, const QuantizedMatrix& w, const CpuPrepared* prepared,
                    const float* bias, float* y);

}  // namespace nuq::detail
