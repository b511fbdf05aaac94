#include "nuq/weights_rule.h"

#include <algorithm>
#include <cmath>

#include "nuq/error.h"
#include "nuq/number_text.h"

namespace nuq {
namespace {

// The weights' rms in dB from sigma_ref = 1, within the +-200 dB the rule computes over, or an error
// naming `what`.
double mismatch_db(const WeightStats& stats, const std::string& what) {
  const double db = 20.0 * std::log10(stats.rms());
  NUQ_REQUIRE(std::abs(db) <= 200.0, what, ": rms ", significant_text(stats.rms(), 6), " is ", fixed_text(db, 1),
              " dB from sigma_ref = 1, beyond the +-200 dB the rule computes over: ",
              db < 0.0 ? "the weights are all but zero against any rate's step"
                       : "the weights lie far outside any rate's support",
              "; quantize them normalised (nuq quantize --normalise per-tensor) or leave them out (--skip)");
  return db;
}

}  // namespace

WeightsRange weights_range(const CheckpointStats& weights, bool per_tensor, const std::string& what) {
  NUQ_REQUIRE(weights.all.rms() > 0.0, what, ": every weight is zero; there is no signal for an SQNR floor to keep");
  WeightsRange r;
  std::vector<std::size_t>& signal = r.with_signal;
  for (std::size_t i = 0; i < weights.tensors.size(); ++i)
    if (weights.tensors[i].stats.rms() > 0.0) signal.push_back(i);
  r.zero_tensors = weights.tensors.size() - signal.size();
  const auto rms = [&](std::size_t i) { return weights.tensors[i].stats.rms(); };
  const auto by_rms = [&](std::size_t a, std::size_t b) { return rms(a) < rms(b); };
  r.smallest = *std::min_element(signal.begin(), signal.end(), by_rms);
  r.largest = *std::max_element(signal.begin(), signal.end(), by_rms);
  const auto scale = [](const WeightStats& s) { return WeightScale{s.mean, s.stddev(), s.count}; };
  if (!per_tensor) {
    r.from_db = r.to_db = mismatch_db(weights.all, what);
    for (const TensorStats& t : weights.tensors) r.scales.push_back(scale(t.stats));
    return r;
  }
  const auto named = [&](std::size_t i) { return what + ": tensor '" + weights.tensors[i].name + "'"; };
  r.from_db = mismatch_db(weights.tensors[r.smallest].stats, named(r.smallest));
  r.to_db = mismatch_db(weights.tensors[r.largest].stats, named(r.largest));
  for (const std::size_t i : signal) r.scales.push_back(scale(weights.tensors[i].stats));
  return r;
}

std::vector<BitRateChoice> weights_rates(const WeightsRange& range, bool per_tensor, int min_bits, int max_bits) {
  return per_tensor ? worst_cases_of(range.scales, min_bits, max_bits)
                    : pooled_cases(range.scales, min_bits, max_bits);
}

std::optional<BitRateChoice> first_keeping(const std::vector<BitRateChoice>& rates, double sqnr_min_db) {
  for (const BitRateChoice& r : rates)
    if (r.worst_sqnr_db >= sqnr_min_db) return r;
  return std::nullopt;
}

std::string rule_no_rate_reason(const std::vector<BitRateChoice>& rates,
                                const std::function<BitRateChoice(int bits)>& worst_at, double sqnr_min_db,
                                int max_bits, bool of_weights) {
  const BitRateChoice& top = rates.back();
  std::optional<BitRateChoice> below;
  if (rates.size() >= 2) below = rates[rates.size() - 2];
  else if (max_bits > 1) below = worst_at(max_bits - 1);
  std::string reason = "no rate up to " + std::to_string(max_bits) + (max_bits == 1 ? " bit" : " bits") +
                       " keeps SQNR >= " + fixed_text(sqnr_min_db, 2) + " dB: at R = " + std::to_string(max_bits) +
                       " the worst is " + fixed_text(top.worst_sqnr_db, 2) + " dB at " +
                       fixed_text(top.worst_at_db, 1) + " dB";
  if (!below) return reason + " (raise --max-bits)";
  const double gain = top.worst_sqnr_db - below->worst_sqnr_db;
  if (gain <= 3.0)
    return reason + " (overload: the last bit gained " + fixed_text(gain, 2) + " dB; " +
           (of_weights ? "the weights outgrow the support, by their scale or their mean: normalise them, "
                         "nuq quantize --normalise per-tensor)"
                       : "the variance outgrows the support there: narrow the range or normalise the weights)");
  if (max_bits < 16) return reason + " (granular noise: each bit gains about 6 dB; raise --max-bits)";
  return reason + (of_weights ? " (granular noise: the weights are small against the step even at 16 bits; "
                                "normalise them or lower the floor)"
                              : " (granular noise: the variance is small against the step even at 16 bits; "
                                "narrow the range, normalise the weights or lower the floor)");
}

}  // namespace nuq
