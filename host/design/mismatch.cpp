#include "nuq/mismatch.h"

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

// The rates and the range checked, and the work of its curves for rates min_bits..max_bits
// (2^bits levels each).
void check_rule(double from_db, double to_db, double step_db, int min_bits, int max_bits) {
  NUQ_REQUIRE(1 <= min_bits && min_bits <= max_bits && max_bits <= 16, "bitrate: bits must satisfy 1 <= min <= max <= 16");
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

}  // namespace

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
