#include "nuq/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

#if defined(__AVX512F__)
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 warns about the undefined pass-through operand inside its own AVX-512 intrinsics.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#elif defined(__AVX__)
#include <immintrin.h>
#endif

#include "nuq/error.h"

#include "omp_threads.h"
#include "weight_loads.h"

namespace nuq {
namespace {

// Weights are taken a chunk at a time, one pass of shifted sums each (below), and the chunks are
// joined with Chan's formula: as accurate as Welford's update, and it vectorises, which Welford's
// division per weight does not.
constexpr std::size_t kChunk = 4096;
// Up to this many chunks are taken on the calling thread (the same sums a team of one would make).
constexpr std::ptrdiff_t kSerialChunks = 16;

// One weight at a time (Welford), for chunks that hold NaN or Inf.
template <typename E>
WeightStats chunk_with_nonfinite(const typename E::Stored* values, std::size_t first, std::size_t count,
                                 const std::string& name, NonFinite nonfinite) {
  WeightStats local;
  for (std::size_t i = first; i < first + count; ++i) {
    const double x = E::at(values, i);
    if (!std::isfinite(x)) {
      if (nonfinite != NonFinite::Skip) throw NonFiniteWeight(name, i, x);
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

// Sums of d = x - K and d^2 in double with K = the chunk's first weight (within a few standard
// deviations of the chunk's mean, so S2 - S1^2 / n loses no digits worth having), and the extremes.
struct ShiftedSums {
  double s1 = 0.0, s2 = 0.0;
  float lo = 0.0f, hi = 0.0f;
  bool finite = true;
};

// Weights [from, to) added one at a time: the whole job without vector registers, the tail with them.
template <typename E>
void add_scalar(ShiftedSums& r, const typename E::Stored* x, std::size_t from, std::size_t to, double shift) {
  for (std::size_t i = from; i < to; ++i) {
    const float v = E::at(x, i);
    r.finite = r.finite && std::isfinite(v);
    const double d = double(v) - shift;
    r.s1 += d;
    r.s2 += d * d;
    r.lo = std::min(r.lo, v);
    r.hi = std::max(r.hi, v);
  }
}

#if defined(__AVX512F__)
template <typename E>
ShiftedSums shifted_sums(const typename E::Stored* x, std::size_t count, double shift) {
  // Four independent accumulators per sum hide the latency of the double additions.
  __m512d s1[4], s2[4];
  for (int u = 0; u < 4; ++u) s1[u] = s2[u] = _mm512_setzero_pd();
  __m512 lo = _mm512_set1_ps(E::at(x, 0)), hi = lo;
  const __m512 infinity = _mm512_set1_ps(std::numeric_limits<float>::infinity());
  const __m512d k = _mm512_set1_pd(shift);
  __mmask16 finite = 0xFFFF;
  std::size_t i = 0;
  for (; i + 32 <= count; i += 32) {
    for (int h = 0; h < 2; ++h) {
      const __m512 v = E::load16(x + i + 16 * h);
      finite &= _mm512_cmp_ps_mask(_mm512_abs_ps(v), infinity, _CMP_LT_OQ);
      lo = _mm512_min_ps(lo, v);
      hi = _mm512_max_ps(hi, v);
      const __m512d d0 = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v)), k);
      const __m512d d1 = _mm512_sub_pd(
          _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))), k);
      s1[2 * h] = _mm512_add_pd(s1[2 * h], d0);
      s1[2 * h + 1] = _mm512_add_pd(s1[2 * h + 1], d1);
      s2[2 * h] = _mm512_fmadd_pd(d0, d0, s2[2 * h]);
      s2[2 * h + 1] = _mm512_fmadd_pd(d1, d1, s2[2 * h + 1]);
    }
  }
  ShiftedSums r;
  r.s1 = _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(s1[0], s1[1]), _mm512_add_pd(s1[2], s1[3])));
  r.s2 = _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(s2[0], s2[1]), _mm512_add_pd(s2[2], s2[3])));
  r.lo = _mm512_reduce_min_ps(lo);
  r.hi = _mm512_reduce_max_ps(hi);
  r.finite = finite == 0xFFFF;
  add_scalar<E>(r, x, i, count, shift);
  return r;
}
#elif defined(__AVX__)
// The same sums eight weights at a time: four doubles a register, four accumulators per sum.
template <typename E>
ShiftedSums shifted_sums(const typename E::Stored* x, std::size_t count, double shift) {
  __m256d s1[4], s2[4];
  for (int u = 0; u < 4; ++u) s1[u] = s2[u] = _mm256_setzero_pd();
  __m256 lo = _mm256_set1_ps(E::at(x, 0)), hi = lo;
  const __m256d k = _mm256_set1_pd(shift);
  std::size_t i = 0;
  // NaN and Inf need no test of their own: they leave the double sums NaN or infinite (squares of
  // finite floats cannot overflow a double).
  for (; i + 16 <= count; i += 16) {
    for (int h = 0; h < 2; ++h) {
      const __m256 v = E::load8(x + i + 8 * h);
      lo = _mm256_min_ps(lo, v);
      hi = _mm256_max_ps(hi, v);
      const __m256d d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), k);
      const __m256d d1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), k);
      s1[2 * h] = _mm256_add_pd(s1[2 * h], d0);
      s1[2 * h + 1] = _mm256_add_pd(s1[2 * h + 1], d1);
      s2[2 * h] = _mm256_add_pd(s2[2 * h], _mm256_mul_pd(d0, d0));
      s2[2 * h + 1] = _mm256_add_pd(s2[2 * h + 1], _mm256_mul_pd(d1, d1));
    }
  }
  alignas(32) double sums[2][4];
  alignas(32) float extremes[2][8];
  _mm256_store_pd(sums[0], _mm256_add_pd(_mm256_add_pd(s1[0], s1[1]), _mm256_add_pd(s1[2], s1[3])));
  _mm256_store_pd(sums[1], _mm256_add_pd(_mm256_add_pd(s2[0], s2[1]), _mm256_add_pd(s2[2], s2[3])));
  _mm256_store_ps(extremes[0], lo);
  _mm256_store_ps(extremes[1], hi);
  ShiftedSums r;
  r.s1 = (sums[0][0] + sums[0][1]) + (sums[0][2] + sums[0][3]);
  r.s2 = (sums[1][0] + sums[1][1]) + (sums[1][2] + sums[1][3]);
  r.lo = *std::min_element(extremes[0], extremes[0] + 8);
  r.hi = *std::max_element(extremes[1], extremes[1] + 8);
  r.finite = std::isfinite(r.s1) && std::isfinite(r.s2);
  add_scalar<E>(r, x, i, count, shift);
  return r;
}
#else
template <typename E>
ShiftedSums shifted_sums(const typename E::Stored* x, std::size_t count, double shift) {
  ShiftedSums r;
  r.lo = r.hi = E::at(x, 0);
  add_scalar<E>(r, x, 0, count, shift);
  return r;
}
#endif

template <typename E>
WeightStats chunk_stats(const typename E::Stored* values, std::size_t first, std::size_t count, const std::string& name,
                        NonFinite nonfinite) {
  const typename E::Stored* x = values + first;
  const float x0 = E::at(x, 0);
  const double shift = std::isfinite(x0) ? double(x0) : 0.0;
  const ShiftedSums sums = shifted_sums<E>(x, count, shift);
  // NaN fails every comparison, so a chunk holding one may still show finite extremes: the mask decides.
  if (!sums.finite) return chunk_with_nonfinite<E>(values, first, count, name, nonfinite);
  WeightStats s;
  s.count = count;
  s.mean = shift + sums.s1 / double(count);
  s.m2 = std::max(0.0, sums.s2 - sums.s1 * sums.s1 / double(count));
  s.min = sums.lo;
  s.max = sums.hi;
  return s;
}

}  // namespace

double WeightStats::stddev() const { return std::sqrt(variance()); }

double WeightStats::rms() const { return std::sqrt(variance() + mean * mean); }

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

bool has_spread(const WeightStats& s) {
  const double sigma = s.stddev();
  return sigma > 0.0 && std::isfinite(sigma);
}

void require_finite_weights(const WeightStats& stats, const std::string& where) {
  NUQ_REQUIRE(stats.count > 0 || stats.nonfinite == 0, where, ": every one of its ", stats.nonfinite,
              " weights is NaN or infinite; there is nothing to quantize it by (skip it to keep it as it is)");
}

namespace {

template <typename E>
void accumulate_as(WeightStats& stats, const typename E::Stored* values, std::size_t count, const std::string& name,
                   NonFinite nonfinite) {
  const auto chunks = static_cast<std::ptrdiff_t>((count + kChunk - 1) / kChunk);
  // Chunks [first, last) in order on the calling thread.
  const auto run_of_chunks = [&](std::ptrdiff_t first_chunk, std::ptrdiff_t last_chunk) {
    WeightStats mine;
    for (std::ptrdiff_t chunk = first_chunk; chunk < last_chunk; ++chunk) {
      const std::size_t first = std::size_t(chunk) * kChunk;
      mine = combine(mine, chunk_stats<E>(values, first, std::min(kChunk, count - first), name, nonfinite));
    }
    return mine;
  };
  if (chunks <= kSerialChunks) {  // a row or group: one run, without a parallel region's cost
    stats = combine(stats, run_of_chunks(0, chunks));
    return;
  }
  // Runs of kSerialChunks chunks over the cores, joined in order: the same statistics for every
  // thread count (omp_threads.h).
  const auto runs = static_cast<std::size_t>((chunks + kSerialChunks - 1) / kSerialChunks);
  const WeightStats all = ordered_sum<WeightStats>(
      runs,
      [&](std::size_t run) {
        const auto first_chunk = static_cast<std::ptrdiff_t>(run) * kSerialChunks;
        return run_of_chunks(first_chunk, std::min(chunks, first_chunk + kSerialChunks));
      },
      [](const WeightStats& x, const WeightStats& y) { return combine(x, y); });
  stats = combine(stats, all);
}

}  // namespace

void accumulate(WeightStats& stats, const float* values, std::size_t count, const std::string& name,
                NonFinite nonfinite) {
  accumulate_as<loads::F32>(stats, values, count, name, nonfinite);
}

void accumulate(WeightStats& stats, const void* values, WeightType type, std::size_t count, const std::string& name,
                NonFinite nonfinite) {
  loads::with_element(values, type, [&](auto element, const auto* stored) {
    accumulate_as<decltype(element)>(stats, stored, count, name, nonfinite);
  });
}

void accumulate(WeightStats& stats, const std::vector<float>& values, const std::string& name, NonFinite nonfinite) {
  accumulate(stats, values.data(), values.size(), name, nonfinite);
}

namespace {

template <typename E>
void row_stats_as(const typename E::Stored* values, std::size_t rows, std::size_t cols, WeightStats* out,
                  const std::string& name, NonFinite nonfinite) {
  const auto row_name = [&](std::size_t r) { return name + " row " + std::to_string(r); };
  if (cols > std::size_t(kSerialChunks) * kChunk || rows <= 1) {  // each row spread over the cores
    for (std::size_t r = 0; r < rows; ++r) {
      out[r] = WeightStats{};
      accumulate_as<E>(out[r], values + r * cols, cols, row_name(r), nonfinite);
    }
    return;
  }
  // Rows spread over the cores, each on one thread: chunk by chunk as accumulate_as's serial branch
  // (a row of one chunk is that chunk's statistics), with no name built unless a row fails. As few
  // weights as accumulate_as takes in one run stay on the calling thread: a parallel region per
  // small tensor, met once per tensor per pass, kept the idle thread spinning between regions and
  // let it take the core the thread that writes the file needed (a checkpoint of 14,000 tensors of
  // 128-weight rows took 4-5 times as long per channel on two threads as on one).
  auto failed = static_cast<std::ptrdiff_t>(rows);
#pragma omp parallel for schedule(static) if (rows * cols > std::size_t(kSerialChunks) * kChunk) \
    num_threads(cpu_threads())
  for (std::ptrdiff_t r = 0; r < std::ptrdiff_t(rows); ++r) {
    const typename E::Stored* row = values + std::size_t(r) * cols;
    try {
      WeightStats mine;
      for (std::size_t first = 0; first < cols; first += kChunk)
        mine = combine(mine, chunk_stats<E>(row, first, std::min(kChunk, cols - first), std::string(), nonfinite));
      out[r] = mine;
    } catch (const Error&) {
#pragma omp critical(nuq_row_stats)
      failed = std::min(failed, r);
    }
  }
  if (failed < std::ptrdiff_t(rows)) {  // the first failing row again, for its message
    WeightStats again;
    accumulate_as<E>(again, values + std::size_t(failed) * cols, cols, row_name(std::size_t(failed)), nonfinite);
    NUQ_ASSERT(false, "row ", failed, " failed once and not again");
  }
}

}  // namespace

void row_stats(const void* values, WeightType type, std::size_t rows, std::size_t cols, WeightStats* out,
               const std::string& name, NonFinite nonfinite) {
  loads::with_element(values, type, [&](auto element, const auto* stored) {
    row_stats_as<decltype(element)>(stored, rows, cols, out, name, nonfinite);
  });
}

WeightStats stats_ref(const float* values, std::size_t count, const std::string& name, NonFinite nonfinite) {
  return chunk_with_nonfinite<loads::F32>(values, 0, count, name, nonfinite);
}

namespace {

// One block's sum of ((w - mean) / scale)^4: in float, vectorised, where the scale and every
// term are finite in float; else again in double without the non-finite weights (NaN or Inf
// inside, a deviation of 10^9 sigma, or a scale beyond FP32), a branch per weight.
// A deviation is (w - m) + correction, m the mean rounded to float and correction what that
// rounding lost: w - m is exact for weights near the mean (Sterbenz), so a tensor whose mean is
// 10^4 sigma from 0 is not measured about a point 10^-3 sigma off (which moved its kurtosis by
// 10^-4 and more).
template <typename E>
double block_fourth_moment(const typename E::Stored* values, std::size_t first, std::size_t end, double mean,
                           double inverse) {
  const float m = static_cast<float>(mean), inverse_f = static_cast<float>(inverse);
  const float correction = static_cast<float>(double(m) - mean);
  if (std::isnormal(inverse_f)) {
    float block = 0.0f;
    std::size_t i = first;
#if defined(__AVX512F__)
    // Four partial sums of sixteen lanes: one chain of additions would wait on its own latency
    // (the loop below, as the compiler vectorises it, ran at a quarter of this speed).
    const __m512 mean16 = _mm512_set1_ps(m), correction16 = _mm512_set1_ps(correction),
                 inverse16 = _mm512_set1_ps(inverse_f);
    __m512 part[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (; i + 64 <= end; i += 64)
      for (int u = 0; u < 4; ++u) {
        const __m512 deviation =
            _mm512_add_ps(_mm512_sub_ps(E::load16(values + i + 16 * std::size_t(u)), mean16), correction16);
        const __m512 d = _mm512_mul_ps(deviation, inverse16);
        const __m512 square = _mm512_mul_ps(d, d);
        part[u] = _mm512_fmadd_ps(square, square, part[u]);
      }
    block = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(part[0], part[1]), _mm512_add_ps(part[2], part[3])));
#endif
    float tail = 0.0f;
#pragma omp simd reduction(+ : tail)
    for (std::size_t j = i; j < end; ++j) {
      const float d = ((E::at(values, j) - m) + correction) * inverse_f;
      tail += (d * d) * (d * d);
    }
    block += tail;
    if (std::isfinite(block)) return block;
  }
  double exact = 0.0;
  for (std::size_t i = first; i < end; ++i) {
    const float w = E::at(values, i);
    const double d = std::isfinite(w) ? (double(w) - mean) * inverse : 0.0;
    exact += (d * d) * (d * d);
  }
  return exact;
}

// Blocks of 1024 spread over the cores in runs of 64 joined in order (omp_threads.h: the same sum
// for every thread count).
template <typename E>
double fourth_moment_as(const typename E::Stored* values, std::size_t count, double mean, double scale) {
  constexpr std::size_t kBlock = 1024, kRun = 64 * kBlock;
  const double inverse = 1.0 / scale;
  return ordered_sum<double>(
      (count + kRun - 1) / kRun,
      [=](std::size_t run) {
        double sum = 0.0;
        for (std::size_t first = run * kRun; first < std::min(count, (run + 1) * kRun); first += kBlock)
          sum += block_fourth_moment<E>(values, first, std::min(count, first + kBlock), mean, inverse);
        return sum;
      },
      [](double x, double y) { return x + y; });
}

}  // namespace

double fourth_moment(const void* values, WeightType type, std::size_t count, double mean, double scale) {
  NUQ_ASSERT(scale > 0.0 && std::isfinite(scale), "the fourth moment's scale is positive and finite");
  return loads::with_element(values, type, [&](auto element, const auto* stored) {
    return fourth_moment_as<decltype(element)>(stored, count, mean, scale);
  });
}

}  // namespace nuq
