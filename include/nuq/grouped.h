// Grouped tensors (`nuq quantize --group-size G`, docs/format.md): each run of G weights along a
// row has its own scale, the RMS of its weights about the tensor's mean, and meets the one codebook
// as (w - tensor mean) / group scale. What every writer and reader of such tensors shares: the
// streamed quantizer, the in-memory one (the Python binding) and the file reader.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "nuq/codebook.h"
#include "nuq/ptq.h"
#include "nuq/quantize_table.h"

namespace nuq {

namespace detail {
struct LutLayout;  // host/qgemm_lut.h
}

// A group's map from its own statistics (`group`: its mean and standard deviation, as
// normalise_tensor gives a row's): the tensor's mean, and the group's RMS about that mean rounded
// to the F32 that .scales stores (so that the codes are cut by the scale a reader sees).
Affine group_map(const Affine& group, double tensor_mean);

// The codebook's levels in normalised units, F32 [2^bits]: the .codebook of a grouped tensor.
std::vector<float> normalised_levels(const Codebook& codebook, int bits);

// The quantize table of groups whose maps group_map gave: thresholds as make_quantize_table cuts
// them, levels as a reader restores them (group_level of the F32 normalised levels, not of the
// design's doubles), so that a run's noise and largest error are those of the file it writes.
QuantizeTable grouped_quantize_table(const Codebook& codebook, int bits, const std::vector<Affine>& maps,
                                     const std::string& where);

// Every group's table of 2^bits levels as every reader computes them (group_level in
// quantized_file.h): mean + scales[g] * normalised[k]. A table per group can outweigh the codes
// many times (8 bits in groups of 8: 128 bytes of levels a weight), so no tensor holds them; this
// is for the one who asks (Python's QuantizedTensor.levels).
std::vector<float> group_levels(double mean, const std::vector<float>& scales, const std::vector<float>& normalised);

// Throws nuq::Error unless a grouped tensor's codes, scales and normalised levels fit its shape and
// one another (what dequantize_groups and qgemm_grouped read).
void check_grouped(const QuantizedTensor& w, const std::string& what);
// Refuses, naming `where`, a grouped tensor whose normalised levels are not all finite, or one of
// whose groups has a scale that is not finite and >= 0 or levels (mean + scale * normalised level)
// that are not finite. O(groups): for what comes from outside (files, pickles), not every product.
void check_group_levels_finite(const QuantizedTensor& w, const std::string& where);

// Groups [first, first + count) of a grouped tensor restored into `out` (count * group_size
// floats), each weight group_level(mean, its group's scale, the normalised level of its code).
void dequantize_groups(const QuantizedTensor& w, std::size_t first, std::size_t count, float* out);

// y[m, rows] = x[m, cols] * W^T (+ bias[rows] when not null) for a grouped tensor W of [rows, cols]
// (its matrix is the [groups, G] view). A weight is mean + scale * level, so for finite X the
// product is taken apart where it pays: mean * sum(x) plus, per group, its scale times the dot
// product with its normalised levels; by table look-up across rows for 1-4-bit groups of whole
// 32-bit words up to the look-up's batch (lut_max_batch in host/qgemm_lut.h: 256 rows of X at 1-2
// bits, 3 at 4), else up to m = 16 sixteen codes at a time in registers for groups of whole runs
// of sixteen. Otherwise (other groups, an infinite x) each row is decoded once into a buffer and
// meets every row of X there up to m = 16, and above, 8 MiB panels of rows are decoded for sgemm.
// The CPU's; the look-up and register paths of qgemm.h assume a table per row at most.
void qgemm_grouped(const float* x, std::size_t m, const QuantizedTensor& w, const float* bias, float* y);

// A grouped tensor made ready once for many products (as PreparedWeights is for the backends):
// where the look-up takes it (1-4-bit groups of whole 32-bit words), its codes laid out in the
// order the look-up reads them, so that no product pays the transpose of its rows (a third of a
// product at m = 1). That costs as many bytes again as the codes, each row rounded up to 64 bytes
// and the rows to 16 (so far more for rows of a few bytes); otherwise nothing. It keeps a
// reference to `w` (checked here), which must outlive it unchanged.
class PreparedGrouped {
 public:
  explicit PreparedGrouped(const QuantizedTensor& w);
  ~PreparedGrouped();
  PreparedGrouped(const PreparedGrouped&) = delete;
  PreparedGrouped& operator=(const PreparedGrouped&) = delete;

  const QuantizedTensor& tensor() const { return tensor_; }
  std::size_t layout_bytes() const;  // what it holds besides the tensor: 0 where the look-up does not take it

 private:
  friend void qgemm_grouped(const float*, std::size_t, const PreparedGrouped&, const float*, float*);
  const QuantizedTensor& tensor_;
  std::unique_ptr<detail::LutLayout> layout_;
};

// The same product as above, bit for bit, from a prepared tensor.
void qgemm_grouped(const float* x, std::size_t m, const PreparedGrouped& w, const float* bias, float* y);

// Whether the product of grouped `w` with m rows of X reads the layout PreparedGrouped makes (the
// look-up takes it at this batch, in a build for a CPU with AVX-512).
bool cpu_layout_used(const QuantizedTensor& w, std::size_t m);

}  // namespace nuq
