#include "nuq/normalisation.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include "nuq/error.h"
#include "nuq/list_text.h"

namespace nuq {
namespace {

constexpr Normalisation kAll[] = {Normalisation::Global, Normalisation::PerTensor, Normalisation::PerChannel,
                                  Normalisation::None};

// The tensor's (or row's) own map: its mean, and its standard deviation unless it has none.
Affine own_map(const WeightStats& s) { return {s.mean, s.count ? s.stddev() : 0.0}; }

// Extremes of `s`'s finite values under map `a` (a constant group lands on 0).
void widen(WeightRange& range, const WeightStats& s, const Affine& a) {
  if (s.count == 0) return;
  const auto normalised = [&](double w) { return a.scale > 0.0 ? (w - a.mean) / a.scale : 0.0; };
  range.min = std::min(range.min, normalised(s.min));
  range.max = std::max(range.max, normalised(s.max));
}

}  // namespace

std::string to_string(Normalisation normalisation) {
  switch (normalisation) {
    case Normalisation::Global: return "global";
    case Normalisation::PerTensor: return "per-tensor";
    case Normalisation::PerChannel: return "per-channel";
    case Normalisation::None: return "none";
  }
  return "?";
}

Normalisation parse_normalisation(const std::string& text) {
  for (Normalisation n : kAll)
    if (text == to_string(n)) return n;
  throw Error("unknown normalisation '" + text + "' (global, per-tensor, per-channel or none)");
}

TensorNormalisation normalise_tensor(Normalisation normalisation, const float* values, std::size_t rows,
                                     std::size_t cols, const WeightStats& global, const WeightStats& own,
                                     const std::string& name, NonFinite nonfinite, Backend& backend) {
  return normalise_tensor(normalisation, values, WeightType::F32, rows, cols, global, own, name, nonfinite, backend);
}

TensorNormalisation normalise_tensor(Normalisation normalisation, const void* values, WeightType type, std::size_t rows,
                                     std::size_t cols, const WeightStats& global, const WeightStats& own,
                                     const std::string& name, NonFinite nonfinite, Backend& backend) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  TensorNormalisation result{{}, {kInf, -kInf}};
  if (normalisation != Normalisation::PerChannel) {
    Affine map;  // None: the weights as they are
    if (normalisation == Normalisation::Global) map = {global.mean, global.stddev()};
    if (normalisation == Normalisation::PerTensor) map = own_map(own);
    result.maps = {map};
    widen(result.normalised, own, map);
    return result;
  }
  std::vector<WeightStats> row_stats(rows);
  if (rows > 0) backend.row_stats(values, type, rows, cols, name, nonfinite, row_stats.data());
  result.maps.reserve(rows);
  for (const WeightStats& row : row_stats) {
    result.maps.push_back(row_map(row, own));
    widen(result.normalised, row, result.maps.back());
  }
  if (rows == 0) result.maps = {own_map(own)};  // an empty tensor still has one (unused) map
  return result;
}

Affine row_map(const WeightStats& row, const WeightStats& tensor) {
  return row.count ? own_map(row) : Affine{tensor.count ? tensor.mean : 0.0, 0.0};
}

void require_storable(Normalisation normalisation, int bits, const std::string& where, std::size_t group_size) {
  NUQ_REQUIRE(!group_size || bits <= 8, where, ": groups of ", group_size,
              " weights take codebooks of up to 256 levels (8-bit codes); this one's codes are stored at ", bits,
              " bits (a width of 9 to 16 is stored as 16); quantize this design without groups (per-tensor "
              "normalisation, say)");
  NUQ_REQUIRE(normalisation != Normalisation::PerChannel || bits <= 8, where,
              ": per-channel normalisation keeps a table of levels per row and takes codebooks of up to 8 bits (this "
              "one's codes are stored at ", bits, " bits: ", std::size_t{1} << bits, " levels per row); use per-tensor");
}

std::string scale_setting_tensors(const std::vector<std::pair<std::string, WeightStats>>& tensors,
                                  const WeightStats& global) {
  constexpr double kRmsRatio = 10.0, kSigmaRatio = 1.5;
  // The centre: the mean of the tensor holding the median weight, in the order of their means. Not
  // the global mean, which tensors far off the others' (masks of ones left as weights, a third of
  // them) pull along, so that every tensor's RMS about it grows and none stands out.
  std::vector<std::pair<double, std::size_t>> means;  // (mean, index), tensors with finite weights
  for (std::size_t i = 0; i < tensors.size(); ++i)
    if (tensors[i].second.count > 0) means.push_back({tensors[i].second.mean, i});
  std::sort(means.begin(), means.end());
  double centre = 0.0;
  for (std::size_t i = 0, weights = 0; i < means.size() && 2 * weights < global.count; ++i) {
    weights += tensors[means[i].second].second.count;
    centre = means[i].first;
  }
  // Each tensor's root mean square about the centre, and the weighted median of them.
  std::vector<std::pair<double, std::size_t>> rms;  // (RMS, index)
  for (const auto& [mean, i] : means) {
    const WeightStats& t = tensors[i].second;
    const double off = mean - centre;
    rms.push_back({std::sqrt((t.m2 + double(t.count) * off * off) / double(t.count)), i});
  }
  std::sort(rms.begin(), rms.end());
  double median = 0.0;
  for (std::size_t i = 0, weights = 0; i < rms.size() && 2 * weights < global.count; ++i) {
    weights += tensors[rms[i].second].second.count;
    median = rms[i].first;
  }
  if (!(median > 0.0)) return "";
  WeightStats setting, rest;
  std::vector<std::string> names;
  for (const auto& [r, i] : rms) {
    const WeightStats& t = tensors[i].second;
    if (r >= kRmsRatio * median) {
      setting = combine(setting, t);
      names.push_back("'" + tensors[i].first + "'");
    } else {
      rest = combine(rest, t);
    }
  }
  // (Without a spread the rest have no scale to be set: constant tensors, stored as some level.)
  if (names.empty() || !(rest.stddev() > 0.0)) return "";
  const double ratio = global.stddev() / rest.stddev();
  if (ratio < kSigmaRatio) return "";
  std::sort(names.begin(), names.end());
  char numbers[200];
  std::snprintf(numbers, sizeof numbers, "%.2g%% of the weights, each with an RMS over %g times the median tensor's, "
                "make sigma %.3g times what the rest give alone, so the rest meet the codebook %.3g times too small",
                100.0 * double(setting.count) / double(global.count), kRmsRatio, ratio, ratio);
  return "with global normalisation " + std::to_string(names.size()) + " tensor(s) set every other's scale: " +
         first_few(names, 3) + " (" + numbers + "); keep buffers stored as weights (a rotary cache, a positional "
         "table, Mamba's A_log) with --skip, and quantize tensors of another scale (T5's embeddings) with --normalise "
         "per-tensor";
}

}  // namespace nuq
