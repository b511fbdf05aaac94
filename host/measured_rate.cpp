#include "nuq/measured_rate.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "nuq/design.h"
#include "nuq/error.h"
#include "nuq/number_text.h"
#include "nuq/packed.h"

namespace nuq {

Codebook uniform_design(int bits) {
  DesignSpec spec;
  spec.method = Method::Uniform;
  spec.bits = bits;
  return design(spec).codebook;
}

QuantizeTable unnormalised_table(const Codebook& codebook) {
  return make_quantize_table(codebook, storage_bits(codebook), {Affine{0.0, 1.0}});
}

QuantizeTotals quantized_totals(const void* values, WeightType type, std::size_t count, const QuantizeTable& table,
                                std::vector<std::uint8_t>& scratch) {
  NUQ_ASSERT(table.groups == 1, "weights quantized as they are share one map");
  // One map for every weight: any [rows, cols] view quantizes them alike, so they are taken as rows
  // of kCols (the rows spread over the cores), kRows of them at a time to bound the codes held.
  constexpr std::size_t kCols = 4096, kRows = 256;
  const auto* bytes = static_cast<const std::uint8_t*>(values);
  const std::size_t element = element_bytes(type);
  QuantizeTotals totals;
  for (std::size_t first = 0; first < count;) {
    const std::size_t cols = std::min(kCols, count - first);
    const std::size_t rows = cols < kCols ? 1 : std::min(kRows, (count - first) / kCols);
    scratch.resize(std::max(scratch.size(), rows * packed_row_bytes(cols, table.bits)));
    totals = combine(totals, quantize_fast(bytes + first * element, type, rows, cols, table, scratch.data()));
    first += rows * cols;
  }
  return totals;
}

MeasuredRate measured_rate(int bits, const std::vector<QuantizeTotals>& tensors) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  const auto db = [](double signal, double noise) { return noise > 0.0 ? 10.0 * std::log10(signal / noise) : kInf; };
  MeasuredRate r;
  r.bits = bits;
  double signal = 0.0, noise = 0.0;
  bool any = false;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    signal += tensors[i].signal;
    noise += tensors[i].noise;
    if (!(tensors[i].signal > 0.0)) continue;  // no signal to keep: left out, as the rule leaves it
    const double own = db(tensors[i].signal, tensors[i].noise);
    if (!any || own < r.lowest_db) r.lowest = i, r.lowest_db = own;
    any = true;
  }
  NUQ_REQUIRE(any, "measuring a bit rate: every weight is zero; there is no signal for an SQNR floor to keep");
  r.together_db = db(signal, noise);
  return r;
}

MeasuredSearch search_measured_rate(double sqnr_min_db, int start_bits, int min_bits, int max_bits, bool per_tensor,
                                    const MeasureAt& measure) {
  NUQ_ASSERT(min_bits <= start_bits && start_bits <= max_bits, "the search starts inside its range");
  MeasuredSearch search;
  const auto keeps = [&](int bits) {
    search.rates.push_back(measured_rate(bits, measure(bits)));
    return search.rates.back().judged_db(per_tensor) >= sqnr_min_db;
  };
  // fails < answer <= kept: the highest rate measured to fail (min_bits - 1: none yet) and the
  // lowest measured to keep the floor (max_bits + 1: none yet).
  int fails = min_bits - 1, kept = max_bits + 1;
  if (keeps(start_bits)) {
    kept = start_bits;
    for (int step = 1; fails < min_bits && kept > min_bits; step *= 2) {  // down, until one fails
      const int probe = std::max(min_bits, kept - step);
      (keeps(probe) ? kept : fails) = probe;
    }
  } else {
    fails = start_bits;
    for (int step = 1; kept > max_bits && fails < max_bits; step *= 2) {  // up, until one keeps it
      const int probe = std::min(max_bits, fails + step);
      (keeps(probe) ? kept : fails) = probe;
    }
  }
  while (kept <= max_bits && kept - fails > 1) {  // the last step bisected: the rates within it are unknown
    const int probe = fails + (kept - fails) / 2;
    (keeps(probe) ? kept : fails) = probe;
  }
  if (kept <= max_bits) {
    search.bits = kept;
  } else if (max_bits > min_bits &&
             std::none_of(search.rates.begin(), search.rates.end(),
                          [&](const MeasuredRate& r) { return r.bits == max_bits - 1; })) {
    keeps(max_bits - 1);  // for what the last bit gained
  }
  std::sort(search.rates.begin(), search.rates.end(),
            [](const MeasuredRate& a, const MeasuredRate& b) { return a.bits < b.bits; });
  return search;
}

std::string measured_no_rate_reason(const MeasuredSearch& search, double sqnr_min_db, int max_bits, bool per_tensor,
                                    const std::vector<TensorStats>& names) {
  NUQ_ASSERT(!search.bits && !search.rates.empty(), "a search that found no rate");
  const MeasuredRate& top = search.rates.back();
  std::string reason = "no rate up to " + std::to_string(max_bits) + (max_bits == 1 ? " bit" : " bits") +
                       " keeps SQNR >= " + fixed_text(sqnr_min_db, 2) + " dB as measured: at R = " +
                       std::to_string(top.bits) + " the weights measure " + fixed_text(top.together_db, 2) +
                       " dB together, '" + names[top.lowest].name + "' lowest at " + fixed_text(top.lowest_db, 2) +
                       " dB";
  if (search.rates.size() < 2 || search.rates[search.rates.size() - 2].bits != top.bits - 1)
    return reason + (max_bits == 1 ? " (raise --max-bits)" : "");
  const double gain = top.judged_db(per_tensor) - search.rates[search.rates.size() - 2].judged_db(per_tensor);
  if (gain <= 3.0)
    return reason + " (overload: the last bit gained " + fixed_text(gain, 2) +
           " dB; weights beyond the support decide it: normalise weights whose scale or mean is far from the "
           "design's, nuq quantize --normalise per-tensor; heavy tails overload any unit-variance support)";
  return reason + " (granular noise: the last bit gained " + fixed_text(gain, 2) + " dB; " +
         (max_bits < 16 ? "raise --max-bits)" : "the weights are small against the step even at 16 bits: normalise "
                                                "them or lower the floor)");
}

std::vector<QuantizeTotals> in_memory_totals(const std::vector<WeightsInMemory>& tensors,
                                             const std::vector<TensorStats>& stats, const QuantizeTable& table,
                                             std::vector<double>* fourth) {
  NUQ_ASSERT(tensors.size() == stats.size(), "a tensor's statistics for each tensor");
  std::vector<QuantizeTotals> totals;
  std::vector<std::uint8_t> codes;
  if (fourth) fourth->assign(tensors.size(), 0.0);
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const WeightsInMemory& w = tensors[i];
    totals.push_back(quantized_totals(w.data, w.type, w.count, table, codes));
    const WeightStats& s = stats[i].stats;
    if (fourth && has_spread(s)) (*fourth)[i] = fourth_moment(w.data, w.type, w.count, s.mean, s.stddev());
  }
  return totals;
}

WeightsMeasured measure_weights_rate(double sqnr_min_db, int start_bits, int min_bits, int max_bits, bool per_tensor,
                                     const std::vector<TensorStats>& stats, const QuantizeWeights& quantized) {
  WeightsMeasured m;
  std::vector<double> fourth;  // the same at every rate: taken on the first read
  bool first = true;
  m.search = search_measured_rate(sqnr_min_db, start_bits, min_bits, max_bits, per_tensor, [&](int bits) {
    std::vector<QuantizeTotals> totals = quantized(unnormalised_table(uniform_design(bits)), first ? &fourth : nullptr);
    first = false;
    return totals;
  });
  for (std::size_t i = 0; i < stats.size(); ++i) {
    const WeightStats& s = stats[i].stats;
    m.excess_kurtosis.push_back(has_spread(s) ? fourth[i] / double(s.count) - 3.0
                                              : std::numeric_limits<double>::quiet_NaN());
  }
  return m;
}

}  // namespace nuq
