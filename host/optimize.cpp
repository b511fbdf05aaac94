#include "nuq/optimize.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <limits>
#include <sstream>

#include <boost/math/tools/minima.hpp>

#include "nuq/error.h"

namespace nuq {

FixedPointTrace iterate_until_stable(const std::function<double(double)>& step, double x0,
                                     double epsilon, int max_iterations, const std::string& what) {
  NUQ_REQUIRE(std::isfinite(x0), what, ": the initial value must be finite, got ", x0);
  NUQ_REQUIRE(epsilon > 0.0 && std::isfinite(epsilon), what,
              ": the stop criterion epsilon must be positive, got ", epsilon);
  NUQ_REQUIRE(max_iterations > 0, what, ": max_iterations must be positive");
  FixedPointTrace trace;
  trace.sequence.push_back(x0);
  std::ostringstream message;  // epsilon as given (1e-300 is not "0.000000")
  message << what << ": no convergence to " << epsilon;
  // An iterate equal to an earlier one starts a cycle that repeats for ever (the step is a function
  // of the iterate alone), and one whose changes were all below epsilon would have stopped: an
  // epsilon below double's resolution at the fixed point. Said at once, where the loop would run
  // out its iterations (100,000 steps of a 65,536-level design: minutes).
  constexpr std::size_t kCycleWindow = 256;
  for (int i = 0; i < max_iterations; ++i) {
    const double current = trace.sequence.back();
    const double next = step(current);
    NUQ_REQUIRE(std::isfinite(next), what, ": iterate ", i + 1, " is not finite (from ", current, ")");
    trace.sequence.push_back(next);
    if (std::abs(next - current) < epsilon) return trace;
    const std::size_t n = trace.sequence.size() - 1;  // next's index
    for (std::size_t j = n - 1; j-- > (n > kCycleWindow ? n - kCycleWindow : 0);)
      if (trace.sequence[j] == next) {
        double smallest = std::abs(next - current);
        for (std::size_t t = j + 1; t <= n; ++t)
          smallest = std::min(smallest, std::abs(trace.sequence[t] - trace.sequence[t - 1]));
        message << std::setprecision(17) << ": iterate " << n << " repeats iterate " << j << " (" << next
                << "), so the iterates cycle for ever, no change in the cycle smaller than " << std::setprecision(3)
                << smallest << "; epsilon is below the precision this rule reaches in double";
        throw Error(message.str());
      }
  }
  message << " within " << max_iterations << " iterations";
  throw Error(message.str());
}

ScalarMinimum minimize_scalar(const std::function<double(double)>& f, double lo, double hi, double limit,
                              const std::string& what, int grid_points) {
  NUQ_REQUIRE(lo > 0.0 && hi > lo && limit >= hi && std::isfinite(limit), "minimize_scalar: bad interval [", lo,
              ", ", hi, "] up to ", limit);
  NUQ_REQUIRE(grid_points >= 3, "minimize_scalar: needs at least 3 grid points");
  const double ratio = std::pow(hi / lo, 1.0 / (grid_points - 1));
  const auto at = [&](int i) { return lo * std::pow(ratio, i); };
  int best = 0;
  double best_value = std::numeric_limits<double>::infinity();
  for (int i = 0; i < grid_points; ++i) {
    const double value = f(at(i));
    if (value < best_value) best_value = value, best = i;
  }
  NUQ_REQUIRE(std::isfinite(best_value), what, ": the function is not finite anywhere on [", lo, ", ", hi, "]");
  const double first_value = f(lo);
  // A minimum at the grid's end is not bracketed: the grid goes on, in the same steps, while f still
  // falls (a mu-law design with a large mu has its optimum far beyond 64 sigma).
  int last = grid_points - 1;
  while (best == last) {
    NUQ_REQUIRE(at(last + 1) <= limit, what, ": the minimum lies beyond ", limit,
                " (the function still falls there); no usable optimum");
    const double value = f(at(++last));
    if (value < best_value) best_value = value, best = last;
  }
  NUQ_REQUIRE(best > 0, what, ": the minimum lies at or below ", lo, "; no usable optimum");
  // A function flat to rounding (a mu-law design whose mu is so large that no x_max in reach
  // quantizes anything) has no minimum to speak of: its grid's best is noise.
  NUQ_REQUIRE(best_value < first_value * (1.0 - 1e-12), what, ": the function is flat to rounding from ", lo,
              " to ", at(last), " (", first_value, "); no usable optimum");
  std::uintmax_t max_iterations = 500;
  const auto [argmin, value] = boost::math::tools::brent_find_minima(
      f, at(best - 1), at(best + 1), std::numeric_limits<double>::digits / 2, max_iterations);
  return {argmin, value};
}

}  // namespace nuq
