// The bit-rate rule for given weights, as they meet the unit-variance uniform design quantized
// unnormalised (`nuq bitrate --model`, nuq.bit_rate_of): the weights together, or each tensor, as
// the Laplacian of its own mean and sigma (mismatch.h's WeightScale), and where on the rule's axis
// they lie, 20 log10 of their rms (the mean counted: it is signal, and it moves the weights toward
// the support's edge). Derivation and limits: docs/variance-mismatch.md.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "nuq/checkpoint_stats.h"
#include "nuq/mismatch.h"

namespace nuq {

struct WeightsRange {
  double from_db = 0.0, to_db = 0.0;  // the weights together (one point), or the smallest and largest tensor's rms
  std::vector<WeightScale> scales;    // what the rule judges: every tensor, or per tensor those with a signal
  std::vector<std::size_t> with_signal;   // the tensors not all zero (a fresh network's biases are)
  std::size_t smallest = 0, largest = 0;  // the tensors of least and greatest rms among those with a signal
  std::size_t zero_tensors = 0;           // all-zero: no signal; per tensor, left out
};

// An error names `what` (the model) where every weight is zero, and it or the tensor beyond the
// +-200 dB the rule computes over.
WeightsRange weights_range(const CheckpointStats& weights, bool per_tensor, const std::string& what);

// The rule's table for `range`: each R in [min_bits, max_bits], its worst case (per tensor the worst
// tensor's SQNR, together the pooled signal over the pooled noise).
std::vector<BitRateChoice> weights_rates(const WeightsRange& range, bool per_tensor, int min_bits, int max_bits);

// The first of `rates` (R ascending) whose worst case keeps `sqnr_min_db`: the rule's answer.
std::optional<BitRateChoice> first_keeping(const std::vector<BitRateChoice>& rates, double sqnr_min_db);

// Why no R up to max_bits keeps the floor by the rule, as `nuq bitrate` says it, from the worst
// case at max_bits and at max_bits - 1: `rates` (R ascending, up to max_bits) where they hold it,
// else worst_at(max_bits - 1) (none where max_bits is 1). A bit more halves the
// step: where granular noise decides, the worst SQNR gains about 6 dB a bit (a little less as the
// support widens); where weights or variances outgrow the support (overload) it gains next to
// nothing, and only normalising them helps. `of_weights`: said of a model's weights, else of a
// range of variance.
std::string rule_no_rate_reason(const std::vector<BitRateChoice>& rates,
                                const std::function<BitRateChoice(int bits)>& worst_at, double sqnr_min_db,
                                int max_bits, bool of_weights);

}  // namespace nuq
