#include "nuq/mismatch.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "nuq/design.h"
#include "nuq/error.h"
#include "nuq/laplace.h"

namespace nuq {
namespace {

constexpr std::size_t kMaxCurvePoints = 100000;

// `what` names the caller ("mismatch" or "bitrate"): the two commands share these checks, and an
// error should name the one the user ran.
void check_range(const char* what, double from_db, double to_db, double step_db) {
  NUQ_REQUIRE(std::isfinite(from_db) && std::isfinite(to_db) && from_db <= to_db, what,
              ": the range must be finite with from <= to, got ", from_db, ":", to_db);
  NUQ_REQUIRE(std::isfinite(step_db) && step_db > 0.0, what, ": the step must be positive, got ", step_db);
  NUQ_REQUIRE((to_db - from_db) / step_db < double(kMaxCurvePoints), what, ": more than ", kMaxCurvePoints,
              " points asked for");
  NUQ_REQUIRE(std::abs(from_db) <= 200.0 && std::abs(to_db) <= 200.0, what,
              ": |20 log10(sigma/sigma_ref)| above 200 dB is outside double precision's reach");
}

// How many points for_each_db (below) visits.
double point_count(double from_db, double to_db, double step_db) {
  const double count = std::floor((to_db - from_db) / step_db + 1e-9) + 1.0;
  return count + (from_db + step_db * (count - 1.0) < to_db - 1e-9 * step_db ? 1.0 : 0.0);
}

void check_rates(int min_bits, int max_bits) {
  NUQ_REQUIRE(1 <= min_bits && min_bits <= max_bits && max_bits <= 16,
              "bitrate: bits must satisfy 1 <= min <= max <= 16");
}

// The rates and the range checked, and the work of its curves for rates min_bits..max_bits
// (2^bits levels each).
void check_rule(double from_db, double to_db, double step_db, int min_bits, int max_bits) {
  check_rates(min_bits, max_bits);
  check_range("bitrate", from_db, to_db, step_db);
  double levels = 0.0;
  for (int bits = min_bits; bits <= max_bits; ++bits) levels += std::ldexp(1.0, bits);
  require_affordable(point_count(from_db, to_db, step_db), levels, "bitrate: the range");
}

// from, from + step, ... and `to` itself when the steps miss it: the worst SQNR over a range lies
// at one of its ends (SQNR falls both ways from the design's sigma), so a grid that stopped short
// of `to` would judge a rate on less than the range asked for.
template <typename F>
void for_each_db(double from_db, double to_db, double step_db, F&& f) {
  const auto count = static_cast<long>(std::floor((to_db - from_db) / step_db + 1e-9)) + 1;
  for (long i = 0; i < count; ++i) f(from_db + step_db * double(i));
  if (from_db + step_db * double(count - 1) < to_db - 1e-9 * step_db) f(to_db);
}

// 1 + r + ... + r^(count - 1) for r = exp(log_r) < 1, without the cancellation of 1 - r near 1.
double geometric_sum(double count, double log_r) { return std::expm1(count * log_r) / std::expm1(log_r); }

}  // namespace

double offset_laplace_distortion(const Codebook& codebook, double mean, double sigma) {
  NUQ_REQUIRE(codebook.uniform_grid().has_value(), "mismatch: an offset source is modelled for uniform codebooks");
  NUQ_REQUIRE(std::isfinite(mean), "mismatch: the mean must be finite, got ", mean);
  const double lambda = checked_laplace_rate(sigma);
  constexpr double kInfinity = std::numeric_limits<double>::infinity();
  const std::vector<double>& t = codebook.thresholds();
  const std::vector<double>& y = codebook.levels();
  const std::size_t n = y.size();
  // Cell k is [t[k-1], t[k]) (unbounded at the ends); Laplace(mean) over it is Laplace(0) over it moved by -mean.
  const auto cell = [&](std::size_t k) {
    const double lo = k == 0 ? -kInfinity : t[k - 1] - mean, hi = k + 1 == n ? kInfinity : t[k] - mean;
    const closed_form::CellDistortion d = closed_form::cell_distortion(lo, hi, y[k] - mean, kInfinity, lambda);
    return d.granular + d.overload;
  };
  const std::size_t holding = codebook.index_of(mean);
  double d = cell(0) + (n > 1 ? cell(n - 1) : 0.0) + (holding != 0 && holding + 1 != n ? cell(holding) : 0.0);
  if (n <= 3) return n == 3 && holding != 1 ? d + cell(1) : d;
  // An interior cell wholly on one side of the mean, its level at its centre, holds (level - x)^2
  // weighted by the density falling as exp(-lambda * distance) from its nearest edge: that of the
  // cell [0, step) times exp(-lambda * the edge's distance from the mean).
  const double step = codebook.uniform_grid()->step, log_r = -lambda * step;
  const double nearest_cell = closed_form::interval_moments(0.0, step, 0.5 * step, lambda).squared_error;
  const std::size_t right_first = std::max<std::size_t>(1, holding + 1);  // interior cells right of it: to n - 2
  if (right_first <= n - 2)
    d += nearest_cell * std::exp(-lambda * (t[right_first - 1] - mean)) *
         geometric_sum(double(n - 1 - right_first), log_r);
  if (holding >= 2) {  // interior cells left of it: 1 to left_last
    const std::size_t left_last = std::min(n - 2, holding - 1);
    d += nearest_cell * std::exp(-lambda * (mean - t[left_last])) * geometric_sum(double(left_last), log_r);
  }
  return d;
}

double offset_laplace_sqnr_db(const Codebook& codebook, double mean, double sigma) {
  return 10.0 * std::log10((sigma * sigma + mean * mean) / offset_laplace_distortion(codebook, mean, sigma));
}

namespace {

// The distortion of a scale's weights, each, at `design` (see WeightScale).
double distortion_of(const Codebook& design, const WeightScale& s) {
  if (s.sigma > 0.0) return offset_laplace_distortion(design, s.mean, s.sigma);
  const double error = s.mean - design.quantize(s.mean);
  return error * error;
}

double signal_of(const WeightScale& s) { return s.sigma * s.sigma + s.mean * s.mean; }

// Each R's design in [min_bits, max_bits], judged by `judge(design)` -> (SQNR dB, at dB).
template <typename Judge>
std::vector<BitRateChoice> rates_judged(int min_bits, int max_bits, const Judge& judge) {
  check_rates(min_bits, max_bits);
  std::vector<BitRateChoice> rates;
  for (int bits = min_bits; bits <= max_bits; ++bits) {
    const auto [sqnr_db, at_db] = judge(mismatch_design(bits));
    rates.push_back({bits, sqnr_db, at_db});
  }
  return rates;
}

}  // namespace

std::vector<BitRateChoice> worst_cases_of(const std::vector<WeightScale>& scales, int min_bits, int max_bits) {
  NUQ_REQUIRE(!scales.empty(), "bitrate: no weights to judge");
  for (const WeightScale& s : scales) NUQ_REQUIRE(signal_of(s) > 0.0, "bitrate: weights of no signal have no SQNR");
  return rates_judged(min_bits, max_bits, [&](const Codebook& design) {
    // (+inf for a constant that sits on a level: the worst is then the first scale's, at +inf)
    std::pair<double, double> worst{std::numeric_limits<double>::infinity(), 10.0 * std::log10(signal_of(scales[0]))};
    for (const WeightScale& s : scales) {
      const double sqnr = 10.0 * std::log10(signal_of(s) / distortion_of(design, s));
      if (sqnr < worst.first) worst = {sqnr, 10.0 * std::log10(signal_of(s))};
    }
    return worst;
  });
}

std::vector<BitRateChoice> pooled_cases(const std::vector<WeightScale>& scales, int min_bits, int max_bits) {
  double signal = 0.0, weights = 0.0;
  for (const WeightScale& s : scales) signal += double(s.count) * signal_of(s), weights += double(s.count);
  NUQ_REQUIRE(signal > 0.0, "bitrate: weights of no signal have no SQNR");
  return rates_judged(min_bits, max_bits, [&](const Codebook& design) {
    double distortion = 0.0;
    for (const WeightScale& s : scales) distortion += double(s.count) * distortion_of(design, s);
    return std::pair<double, double>{10.0 * std::log10(signal / distortion), 10.0 * std::log10(signal / weights)};
  });
}

Codebook mismatch_design(int bits, double sigma_ref) {
  NUQ_REQUIRE(bits >= 1 && bits <= 16, "mismatch: bits must be 1..16, got ", bits);
  DesignSpec spec;
  spec.method = Method::Uniform;
  spec.bits = bits;
  spec.rule = XmaxRule::Iterative;
  spec.sigma = sigma_ref;
  return design(spec).codebook;
}

double approximate_uniform_distortion(const Codebook& codebook, double sigma) {
  NUQ_REQUIRE(codebook.uniform_grid().has_value(), "mismatch: the high-rate approximation needs a uniform codebook");
  NUQ_REQUIRE(std::isfinite(sigma) && sigma > 0.0, "mismatch: sigma must be positive and finite, got ", sigma);
  const double step = codebook.uniform_grid()->step, xmax = codebook.xmax();
  const double b = sigma / std::sqrt(2.0);  // Laplacian scale: p(x) = exp(-|x|/b) / (2b)
  const double tail = std::exp(-xmax / b);  // P(|x| > x_max)
  const double half = 0.5 * step;           // x_max minus the outermost level
  const double granular = step * step / 12.0 * (1.0 - tail);
  const double overload = tail * (2.0 * b * b + 2.0 * half * b + half * half);
  return granular + overload;
}

std::vector<MismatchPoint> mismatch_curve(const Codebook& codebook, double from_db, double to_db, double step_db) {
  check_range("mismatch", from_db, to_db, step_db);
  require_affordable(point_count(from_db, to_db, step_db), double(codebook.size()), "mismatch: the curve");
  const double sigma_ref = codebook.provenance().sigma;
  std::vector<MismatchPoint> points;
  for_each_db(from_db, to_db, step_db, [&](double db) {
    const double sigma = sigma_ref * std::pow(10.0, db / 20.0);
    const Distortion exact = laplace_distortion(codebook, sigma);
    MismatchPoint p;
    p.mismatch_db = db;
    p.sigma = sigma;
    p.sqnr_db = sqnr_db(exact.total(), sigma);
    p.approx_sqnr_db = sqnr_db(approximate_uniform_distortion(codebook, sigma), sigma);
    p.overload_share = exact.total() > 0.0 ? exact.overload / exact.total() : 0.0;
    points.push_back(p);
  });
  return points;
}

BitRateChoice worst_case(int bits, double from_db, double to_db, double step_db, const char* what) {
  check_range(what, from_db, to_db, step_db);  // (before the curve's own check, which names mismatch)
  BitRateChoice worst{bits, std::numeric_limits<double>::infinity(), 0.0};
  for (const MismatchPoint& p : mismatch_curve(mismatch_design(bits), from_db, to_db, step_db))
    if (p.sqnr_db < worst.worst_sqnr_db) worst.worst_sqnr_db = p.sqnr_db, worst.worst_at_db = p.mismatch_db;
  return worst;
}

std::optional<BitRateChoice> choose_bit_rate(double sqnr_min_db, double from_db, double to_db, double step_db,
                                             int min_bits, int max_bits) {
  NUQ_REQUIRE(std::isfinite(sqnr_min_db), "bitrate: the SQNR floor must be a finite number, got ", sqnr_min_db);
  check_rule(from_db, to_db, step_db, min_bits, max_bits);
  for (int bits = min_bits; bits <= max_bits; ++bits) {
    const BitRateChoice c = worst_case(bits, from_db, to_db, step_db);
    if (c.worst_sqnr_db >= sqnr_min_db) return c;
  }
  return std::nullopt;
}

std::vector<BitRateChoice> worst_cases(double from_db, double to_db, double step_db, int min_bits, int max_bits) {
  check_rule(from_db, to_db, step_db, min_bits, max_bits);
  std::vector<BitRateChoice> rates;
  for (int bits = min_bits; bits <= max_bits; ++bits) rates.push_back(worst_case(bits, from_db, to_db, step_db));
  return rates;
}

}  // namespace nuq
