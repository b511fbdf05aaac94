#include "nuq/lloyd_max.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <vector>

#include "nuq/error.h"
#include "nuq/laplace.h"
#include "nuq/uniform.h"  // bits_for_levels

namespace nuq {
namespace {

constexpr double kInfinity = std::numeric_limits<double>::infinity();

// One pass of Lloyd's map at the levels y: the centroid of each cell between the midpoints, and
// for Newton's method its derivatives by the cell's lower and upper edge (p(edge)·|edge - c| / P;
// zero at an infinite edge).
struct LloydPass {
  std::vector<double> centroid, by_lower, by_upper;
  double largest_move = 0.0;  // max |centroid - y|: how far y is from a fixed point (inf: a centroid is not finite)
};

LloydPass lloyd_pass(const std::vector<double>& y) {
  const std::size_t n = y.size();
  LloydPass pass{std::vector<double>(n), std::vector<double>(n), std::vector<double>(n), 0.0};
  for (std::size_t k = 0; k < n; ++k) {
    const double lo = k == 0 ? -kInfinity : 0.5 * (y[k - 1] + y[k]);
    const double hi = k + 1 == n ? kInfinity : 0.5 * (y[k] + y[k + 1]);
    const IntervalMoments m = laplace_moments(lo, hi, 1.0);
    const double c = m.first_moment / m.probability;
    pass.centroid[k] = c;
    pass.by_lower[k] = k == 0 ? 0.0 : laplace_pdf(lo) * (c - lo) / m.probability;
    pass.by_upper[k] = k + 1 == n ? 0.0 : laplace_pdf(hi) * (hi - c) / m.probability;
    const double move = std::abs(c - y[k]);  // NaN where a cell's probability underflows to 0
    pass.largest_move = std::isfinite(move) ? std::max(pass.largest_move, move) : kInfinity;
  }
  return pass;
}

// Newton's step for centroid(y) = y. Cell k's centroid depends on y[k-1], y[k], y[k+1] through
// its edges, halfway between levels, so the Jacobian is tridiagonal (Thomas' algorithm). Made
// exactly symmetric, as the source is. Empty when the step does not keep the levels in order.
std::vector<double> newton_step(const std::vector<double>& y, const LloydPass& pass) {
  const std::size_t n = y.size();
  std::vector<double> sub(n), diag(n), super(n), rhs(n);
  for (std::size_t k = 0; k < n; ++k) {
    sub[k] = 0.5 * pass.by_lower[k];
    super[k] = 0.5 * pass.by_upper[k];
    diag[k] = sub[k] + super[k] - 1.0;
    rhs[k] = y[k] - pass.centroid[k];
  }
  for (std::size_t k = 1; k < n; ++k) {  // elimination below the diagonal
    const double factor = sub[k] / diag[k - 1];
    diag[k] -= factor * super[k - 1];
    rhs[k] -= factor * rhs[k - 1];
  }
  std::vector<double> next(n);
  double step = rhs[n - 1] / diag[n - 1];
  next[n - 1] = y[n - 1] + step;
  for (std::size_t k = n - 1; k-- > 0;) {
    step = (rhs[k] - super[k] * step) / diag[k];
    next[k] = y[k] + step;
  }
  for (std::size_t i = 0, j = n - 1; i < j; ++i, --j) next[j] = -(next[i] = 0.5 * (next[i] - next[j]));
  if (n % 2) next[n / 2] = 0.0;
  for (std::size_t k = 0; k < n; ++k)
    if (!std::isfinite(next[k]) || (k > 0 && !(next[k] > next[k - 1]))) return {};
  return next;
}

}  // namespace

Codebook lloyd_max_codebook(std::size_t levels, double tolerance, int max_iterations) {
  NUQ_REQUIRE(levels >= 2 && levels <= kMaxLloydMaxLevels, "Lloyd-Max: the number of levels must "
              "be in 2..", kMaxLloydMaxLevels, ", got ", levels);
  NUQ_REQUIRE(tolerance > 0.0, "Lloyd-Max: tolerance must be positive");
  // Start from the compander of high-resolution theory (Panter-Dite): the optimal density of levels
  // is proportional to p^(1/3), for the Laplacian again a Laplacian, of three times the scale, so
  // level k sits at that Laplacian's quantile (k + 1/2) / N. Newton's method converges from there
  // in a handful of steps at every N up to 2^16; from a uniform start of support 1 + ln N its first
  // steps broke the levels' order beyond a few thousand levels, and at 65,536 Lloyd's slow passes
  // took over (1,218 iterations, 13 s, against 5 iterations and 0.04 s).
  std::vector<double> y(levels);
  const double compander_rate = std::sqrt(2.0) / 3.0;  // lambda / 3 for the unit-variance Laplacian
  for (std::size_t k = 0; k < levels / 2; ++k) {
    const double u = (double(k) + 0.5) / double(levels);  // below 1/2: the negative half
    y[k] = std::log(2.0 * u) / compander_rate;
    y[levels - 1 - k] = -y[k];
  }
  if (levels % 2) y[levels / 2] = 0.0;
  // Lloyd's map alone converges linearly, ever more slowly as N grows (130,000 passes at 256
  // levels, minutes at 1024). Newton's method on its fixed point converges quadratically near it;
  // a step is taken only when it brings y closer to the fixed point, else Lloyd's pass is.
  LloydPass pass = lloyd_pass(y);
  const auto require_finite = [&](const LloydPass& p) {
    NUQ_REQUIRE(std::isfinite(p.largest_move), "Lloyd-Max: a cell's centroid is not finite at ", levels, " levels");
  };
  require_finite(pass);
  for (int iteration = 1; iteration <= max_iterations; ++iteration) {
    if (pass.largest_move < tolerance) {
      y = pass.centroid;  // the last pass's levels, as Lloyd's own iteration ends
      std::vector<double> t(levels - 1);
      for (std::size_t k = 0; k + 1 < levels; ++k) t[k] = 0.5 * (y[k] + y[k + 1]);
      Provenance provenance;
      provenance.method = Method::LloydMax;
      provenance.rule = XmaxRule::Lloyd;
      provenance.iterations = iteration;
      provenance.xmax = levels == 2 ? 2.0 * y.back() : 2.0 * y.back() - t.back();
      return Codebook(bits_for_levels(levels), t, y, provenance);
    }
    std::vector<double> next = newton_step(y, pass);
    LloydPass next_pass;
    if (!next.empty()) next_pass = lloyd_pass(next);
    if (next.empty() || !(next_pass.largest_move < pass.largest_move)) {  // inf never is
      next = pass.centroid;
      next_pass = lloyd_pass(next);
      require_finite(next_pass);
    }
    y = std::move(next);
    pass = std::move(next_pass);
  }
  std::ostringstream message;
  message << "Lloyd-Max: no convergence to " << tolerance << " within " << max_iterations << " iterations for " << levels
          << " levels";
  throw Error(message.str());
}

}  // namespace nuq
