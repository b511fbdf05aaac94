#include "nuq/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "nuq/error.h"

namespace nuq {
namespace {

// Weights are taken a chunk at a time: the chunk's mean first, then its squared deviations from
// that mean (two passes over 16 KiB that stay in L1), and the chunks are joined with Chan's
// formula. This is as accurate as Welford's update and vectorises, which Welford's division per
// weight does not.
constexpr std::size_t kChunk = 4096;

// One weight at a time (Welford), for chunks that hold NaN or Inf.
WeightStats chunk_with_nonfinite(const float* values, std::size_t first, std::size_t count, const std::string& name,
                                 NonFinite nonfinite) {
  WeightStats local;
  for (std::size_t i = first; i < first + count; ++i) {
    const double x = values[i];
    if (!std::isfinite(x)) {
      NUQ_REQUIRE(nonfinite == NonFinite::Skip, name, ": element ", i, " is ", x,
                  "; weights must be finite (--nonfinite saturate quantizes them to the outermost levels instead)");
      ++local.nonfinite;
      continue;
    }
    if (local.count == 0) local.min = local.max = x;
    ++local.count;
    const double delta = x - local.mean;
    local.mean += delta / double(local.count);
    local.m2 += delta * (x - local.mean);
    local.min = std::min(local.min, x);
    local.max = std::max(local.max, x);
  }
  return local;
}

WeightStats chunk_stats(const float* values, std::size_t first, std::size_t count, const std::string& name,
                        NonFinite nonfinite) {
  const float* x = values + first;
  bool finite = true;
  double sum = 0.0;
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
#pragma omp simd reduction(&& : finite) reduction(+ : sum) reduction(min : lo) reduction(max : hi)
  for (std::size_t i = 0; i < count; ++i) {
    finite = finite && std::abs(x[i]) <= std::numeric_limits<float>::max();
    sum += double(x[i]);
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  if (!finite) return chunk_with_nonfinite(values, first, count, name, nonfinite);
  WeightStats s;
  s.count = count;
  s.mean = sum / double(count);
  double m2 = 0.0;
  const double mean = s.mean;
#pragma omp simd reduction(+ : m2)
  for (std::size_t i = 0; i < count; ++i) {
    const double d = double(x[i]) - mean;
    m2 += d * d;
  }
  s.m2 = m2;
  s.min = lo;
  s.max = hi;
  return s;
}

}  // namespace

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

void accumulate(WeightStats& stats, const float* values, std::size_t count, const std::string& name,
                NonFinite nonfinite) {
  const auto chunks = static_cast<std::ptrdiff_t>((count + kChunk - 1) / kChunk);
  WeightStats local;
  std::string error;  // the first error in index order, rethrown outside the parallel region
  std::size_t error_chunk = std::numeric_limits<std::size_t>::max();
#pragma omp parallel if (count > 16 * kChunk)
  {
    WeightStats mine;
#pragma omp for schedule(static) nowait
    for (std::ptrdiff_t chunk = 0; chunk < chunks; ++chunk) {
      const std::size_t first = std::size_t(chunk) * kChunk;
      try {
        mine = combine(mine, chunk_stats(values, first, std::min(kChunk, count - first), name, nonfinite));
      } catch (const Error& e) {
#pragma omp critical(nuq_stats_error)
        if (std::size_t(chunk) < error_chunk) error_chunk = std::size_t(chunk), error = e.what();
      }
    }
#pragma omp critical(nuq_stats_combine)
    local = combine(local, mine);
  }
  if (!error.empty()) throw Error(error);
  stats = combine(stats, local);
}

void accumulate(WeightStats& stats, const std::vector<float>& values, const std::string& name, NonFinite nonfinite) {
  accumulate(stats, values.data(), values.size(), name, nonfinite);
}

WeightStats stats_ref(const float* values, std::size_t count, const std::string& name, NonFinite nonfinite) {
  return chunk_with_nonfinite(values, 0, count, name, nonfinite);
}

}  // namespace nuq
