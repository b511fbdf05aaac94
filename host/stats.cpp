#include "nuq/stats.h"

#include <algorithm>
#include <cmath>

#include "nuq/error.h"

namespace nuq {

double WeightStats::stddev() const { return std::sqrt(variance()); }

WeightStats combine(const WeightStats& a, const WeightStats& b) {
  WeightStats s = a.count == 0 ? b : a;
  if (a.count != 0 && b.count != 0) {  // Chan's combination of two non-empty parts
    s.count = a.count + b.count;
    const double delta = b.mean - a.mean;
    s.mean = a.mean + delta * double(b.count) / double(s.count);
    s.m2 = a.m2 + b.m2 + delta * delta * double(a.count) * double(b.count) / double(s.count);
    s.min = std::min(a.min, b.min);
    s.max = std::max(a.max, b.max);
  }
  s.nonfinite = a.nonfinite + b.nonfinite;
  return s;
}

void accumulate(WeightStats& stats, const std::vector<float>& values, const std::string& name, NonFinite nonfinite) {
  WeightStats local;
  std::size_t skipped = 0;  // counted apart: local.count must stay the finite count for Welford
  for (std::size_t i = 0; i < values.size(); ++i) {
    const double x = values[i];
    if (!std::isfinite(x) && nonfinite == NonFinite::Skip) {
      ++skipped;
      continue;
    }
    NUQ_REQUIRE(std::isfinite(x), name, ": element ", i, " is ", x,
                "; weights must be finite (--nonfinite saturate quantizes them to the outermost levels instead)");
    if (local.count == 0) local.min = local.max = x;
    ++local.count;
    const double delta = x - local.mean;
    local.mean += delta / double(local.count);
    local.m2 += delta * (x - local.mean);
    local.min = std::min(local.min, x);
    local.max = std::max(local.max, x);
  }
  local.nonfinite = skipped;
  stats = combine(stats, local);
}

}  // namespace nuq
