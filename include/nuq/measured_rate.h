// The bit-rate rule checked on the weights themselves (`nuq bitrate --model M --measure`): the
// weights quantized unnormalised at R bits, as `nuq quantize -m uniform -b R --normalise none`
// quantizes them (nothing is written), their SQNR measured rather than predicted. The rule
// (mismatch.h) takes each tensor for the Laplacian of its mean and sigma; weights no Laplacian
// describes (heavy tails, pruned zeros) measure what it cannot foresee: Student-t weights of 3
// degrees at sigma 1 were predicted 30.2 dB and measured 10.4.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "nuq/checkpoint_stats.h"
#include "nuq/codebook.h"
#include "nuq/quantize_table.h"
#include "nuq/weight_type.h"

namespace nuq {

// The codebook `nuq quantize -m uniform -b bits` quantizes with: the uniform design for unit
// variance at its numeric optimum x_max (the rule's mismatch_design takes the iterative x_max; the
// two differ by under 1e-4, which matters to SQNRs above about 75 dB).
Codebook uniform_design(int bits);

// The table that quantizes weights as they are (--normalise none) by `codebook`, at its storage
// width: the one every tensor of such a run shares.
QuantizeTable unnormalised_table(const Codebook& codebook);

// The totals of `count` weights of `type` (contiguous) quantized by `table`, a group of one map:
// their codes are thrown away. `scratch` holds a piece's codes between calls.
QuantizeTotals quantized_totals(const void* values, WeightType type, std::size_t count, const QuantizeTable& table,
                                std::vector<std::uint8_t>& scratch);

// One rate as measured: the weights together (their signal over their noise, each summed over the
// tensors, as quantize's summary), and the tensor that measures lowest among those with a signal
// (all-zero tensors have none to keep). A tensor quantized without error measures +inf.
struct MeasuredRate {
  int bits = 0;
  double together_db = 0.0;
  std::size_t lowest = 0;  // its index in the totals given
  double lowest_db = 0.0;
  // What the floor is held to: the lowest tensor's SQNR (per tensor), or the weights together's.
  double judged_db(bool per_tensor) const { return per_tensor ? lowest_db : together_db; }
};
MeasuredRate measured_rate(int bits, const std::vector<QuantizeTotals>& tensors);

// The smallest R in [min_bits, max_bits] whose measured SQNR (judged_db) keeps `sqnr_min_db`,
// searched from `start_bits` (the rule's answer, or max_bits where it has none), each rate one
// call of `measure` (one read of the weights: it gives each tensor's totals at R). The search
// gallops (steps of 1, 2, 4, ... bits down while rates keep the floor, or up while they do not)
// and then bisects the last step, so that the answer R keeps the floor and R - 1 was measured not
// to: 2 reads where the rule is right, about 2 log2 of the distance where it is not. The measured
// SQNR grows with R but for weights concentrated on a few values or with a mean far larger than
// their spread, where a rate below one that fails may keep the floor again; such rates are not
// tried. Where none keeps the floor, max_bits - 1 is measured too (when min_bits allows), for
// what the last bit gained.
struct MeasuredSearch {
  std::vector<MeasuredRate> rates;  // those measured, R ascending
  std::optional<int> bits;          // empty: none up to max_bits keeps the floor
};
using MeasureAt = std::function<std::vector<QuantizeTotals>(int bits)>;
MeasuredSearch search_measured_rate(double sqnr_min_db, int start_bits, int min_bits, int max_bits, bool per_tensor,
                                    const MeasureAt& measure);

// Why no rate keeps the floor as measured, as `nuq bitrate --measure` says it: the top rate's SQNR
// together and its lowest tensor (named by `names`, in the totals' order), and what the last bit
// gained: next to nothing where weights beyond the support decide (overload: heavy tails, or a
// scale or mean far from the design's), about 6 dB where granular noise does.
std::string measured_no_rate_reason(const MeasuredSearch& search, double sqnr_min_db, int max_bits, bool per_tensor,
                                    const std::vector<TensorStats>& names);

// Weights quantized again by a table: each tensor's totals, in their order, and with `fourth` each
// tensor's sum of ((w - mean) / sigma)^4 about its own mean and sigma (0 for one of no spread),
// which over its count is its kurtosis. A checkpoint's: checkpoint_quantized_totals.
using QuantizeWeights =
    std::function<std::vector<QuantizeTotals>(const QuantizeTable& table, std::vector<double>* fourth)>;

// Contiguous weights in memory (a network's parameters, arrays from Python), with their statistics.
struct WeightsInMemory {
  const void* data = nullptr;
  WeightType type = WeightType::F32;
  std::size_t count = 0;
};
std::vector<QuantizeTotals> in_memory_totals(const std::vector<WeightsInMemory>& tensors,
                                             const std::vector<TensorStats>& stats, const QuantizeTable& table,
                                             std::vector<double>* fourth);

// The search above on given weights, the rates' tables made as nuq quantize -m uniform -b R makes
// them, and the weights' excess kurtosis (per tensor, NaN where it has no spread; 3 for the
// Laplacian the rule assumes), taken on the first read.
struct WeightsMeasured {
  MeasuredSearch search;
  std::vector<double> excess_kurtosis;
};
WeightsMeasured measure_weights_rate(double sqnr_min_db, int start_bits, int min_bits, int max_bits, bool per_tensor,
                                     const std::vector<TensorStats>& stats, const QuantizeWeights& quantized);

}  // namespace nuq
