// nuq.mismatch and nuq.bit_rate: the companion paper's variance mismatch (a uniform quantizer
// designed for sigma_ref = 1 met by a Laplacian of another sigma) and its bit-rate rule, the
// library's functions behind `nuq mismatch` and `nuq bitrate --range`; and the rule for given
// weights, predicted and measured (`nuq bitrate --model [--measure]`).
#include <cmath>
#include <optional>
#include <tuple>

#include "binding.h"
#include "nuq/error.h"
#include "nuq/io/widen.h"
#include "nuq/measured_rate.h"
#include "nuq/mismatch.h"
#include "nuq/weights_rule.h"

namespace nuq::python {
namespace {

using namespace pybind11::literals;

py::dict choice_dict(const BitRateChoice& c) {
  return py::dict("bits"_a = c.bits, "worst_sqnr_db"_a = c.worst_sqnr_db, "worst_at_db"_a = c.worst_at_db);
}

py::object number_or_none(double x) { return std::isnan(x) ? py::object(py::none()) : py::object(py::float_(x)); }

// nuq.bit_rate_of's work, on the tensors the Python layer chose (name, C-contiguous array, tag):
// their statistics, the rule's table and answer, and with `measure` the measured search, as
// `nuq bitrate --model --json` gives them.
py::dict bit_rate_of(const std::vector<std::tuple<std::string, py::array, std::optional<std::string>>>& tensors,
                     double sqnr_min_db, bool per_tensor, bool measure, const IntArgument& min_bits_given,
                     const IntArgument& max_bits_given, const std::string& nonfinite_text) {
  const int min_bits = whole_number(min_bits_given, "bit_rate_of", "min_bits");
  const int max_bits = whole_number(max_bits_given, "bit_rate_of", "max_bits");
  NUQ_REQUIRE(std::isfinite(sqnr_min_db), "bit_rate_of: sqnr_min_db must be a finite number of dB, got ", sqnr_min_db);
  NUQ_REQUIRE(1 <= min_bits && max_bits <= 16, "bit_rate_of: min_bits and max_bits lie in 1..16, got ", min_bits,
              " and ", max_bits);
  NUQ_REQUIRE(min_bits <= max_bits, "bit_rate_of: min_bits ", min_bits, " is above max_bits ", max_bits);
  const NonFinite nonfinite = in_memory_options(std::nullopt, std::nullopt, nonfinite_text).nonfinite;
  std::vector<WeightsInMemory> weights;
  CheckpointStats stats;
  for (const auto& [name, array, tag] : tensors) {
    NUQ_REQUIRE(array.flags() & py::array::c_style, name, ": the array must be C-contiguous");
    const io::DType dtype = dtype_of(array, tag, name).read;
    NUQ_REQUIRE(io::is_floating(dtype), name, ": ", io::to_string(dtype), " has no bit rate (float32, float16 or "
                "bfloat16)");
    weights.push_back({array.data(), io::weight_type(dtype), std::size_t(array.size())});
    stats.tensors.push_back({name, WeightStats{}});
  }
  std::optional<BitRateChoice> choice;
  std::vector<BitRateChoice> rates;
  WeightsRange range;
  std::string reason;  // why the rule has no answer
  std::optional<WeightsMeasured> measured;
  {
    py::gil_scoped_release release;
    for (std::size_t i = 0; i < weights.size(); ++i) {
      const std::string where = "tensor '" + stats.tensors[i].name + "'";
      accumulate(stats.tensors[i].stats, weights[i].data, weights[i].type, weights[i].count, where, nonfinite);
      require_finite_weights(stats.tensors[i].stats, where);
      stats.all = combine(stats.all, stats.tensors[i].stats);
    }
    range = weights_range(stats, per_tensor, "bit_rate_of");
    rates = weights_rates(range, per_tensor, min_bits, max_bits);
    choice = first_keeping(rates, sqnr_min_db);
    if (!choice) {
      const auto worst_at = [&](int bits) { return weights_rates(range, per_tensor, bits, bits)[0]; };
      reason = rule_no_rate_reason(rates, worst_at, sqnr_min_db, max_bits, true);
    }
    if (measure)
      measured = measure_weights_rate(sqnr_min_db, choice ? choice->bits : max_bits, min_bits, max_bits, per_tensor,
                                      stats.tensors, [&](const QuantizeTable& table, std::vector<double>* fourth) {
                                        return in_memory_totals(weights, stats.tensors, table, fourth);
                                      });
  }
  py::list table;
  for (const BitRateChoice& r : rates) table.append(choice_dict(r));
  const WeightStats& all = stats.all;
  py::list constant;  // judged as the one value each holds, which no Laplacian describes
  for (const TensorStats& t : stats.tensors)
    if (t.stats.rms() > 0.0 && t.stats.stddev() == 0.0) constant.append(t.name);
  py::dict out("bits"_a = choice ? py::object(py::int_(choice->bits)) : py::object(py::none()),
               "worst_sqnr_db"_a = choice ? py::object(py::float_(choice->worst_sqnr_db)) : py::object(py::none()),
               "reason"_a = choice ? py::object(py::none()) : py::object(py::str(reason)),
               "from_db"_a = range.from_db, "to_db"_a = range.to_db, "rates"_a = table,
               "weights"_a = py::dict("rms"_a = all.rms(), "mean"_a = all.mean, "sigma"_a = all.stddev(),
                                      "count"_a = all.count, "tensors"_a = stats.tensors.size(),
                                      "zero_tensors"_a = range.zero_tensors, "constant_tensors"_a = constant,
                                      "smallest_rms"_a = stats.tensors[range.smallest].name,
                                      "largest_rms"_a = stats.tensors[range.largest].name));
  if (measured) {
    py::list measured_rates;
    for (const MeasuredRate& r : measured->search.rates)
      measured_rates.append(py::dict("bits"_a = r.bits, "sqnr_ex_db"_a = r.together_db,
                                     "lowest_tensor"_a = stats.tensors[r.lowest].name,
                                     "lowest_sqnr_ex_db"_a = r.lowest_db));
    py::dict kurtosis;
    for (std::size_t i = 0; i < stats.tensors.size(); ++i)
      kurtosis[py::str(stats.tensors[i].name)] = number_or_none(measured->excess_kurtosis[i]);
    const std::optional<int> bits = measured->search.bits;
    const py::object why = bits ? py::object(py::none())
                                : py::object(py::str(measured_no_rate_reason(measured->search, sqnr_min_db, max_bits,
                                                                             per_tensor, stats.tensors)));
    out["measured"] = py::dict("bits"_a = bits ? py::object(py::int_(*bits)) : py::object(py::none()), "reason"_a = why,
                               "rates"_a = measured_rates, "excess_kurtosis"_a = kurtosis);
  }
  return out;
}

}  // namespace

void bind_mismatch(py::module_& m) {
  m.def(
      "mismatch",
      [](const IntArgument& bits_given, double start_db, double stop_db, double step_db) {
        const int bits = whole_number(bits_given, "mismatch", "bits");
        std::vector<MismatchPoint> points;
        {
          py::gil_scoped_release release;
          points = mismatch_curve(mismatch_design(bits), start_db, stop_db, step_db);
        }
        const std::size_t n = points.size();
        std::vector<double> db(n), sigma(n), exact(n), approx(n), overload(n);
        for (std::size_t i = 0; i < n; ++i) {
          db[i] = points[i].mismatch_db, sigma[i] = points[i].sigma, exact[i] = points[i].sqnr_db;
          approx[i] = points[i].approx_sqnr_db, overload[i] = points[i].overload_share;
        }
        const std::vector<py::ssize_t> shape{py::ssize_t(n)};
        return py::dict("mismatch_db"_a = adopt(std::move(db), shape), "sigma"_a = adopt(std::move(sigma), shape),
                        "sqnr_db"_a = adopt(std::move(exact), shape), "approx_sqnr_db"_a = adopt(std::move(approx), shape),
                        "overload_share"_a = adopt(std::move(overload), shape));
      },
      "bits"_a, "start_db"_a, "stop_db"_a, "step_db"_a = 1.0,
      "SQNR of the uniform quantizer of 2^bits levels designed for a unit-variance Laplacian (iterative support "
      "rule) when it meets Laplace(0, sigma^2), over 20 log10(sigma) from start_db to stop_db in steps of step_db, "
      "both ends included (`nuq mismatch --json`): a dict of arrays mismatch_db, sigma, sqnr_db (exact), "
      "approx_sqnr_db (high-rate approximation) and overload_share (of the exact distortion).");
  m.def(
      "bit_rate",
      [](double sqnr_min_db, double from_db, std::optional<double> to_db, double step_db,
         const IntArgument& min_bits_given, const IntArgument& max_bits_given) -> py::object {
        const int min_bits = whole_number(min_bits_given, "bit_rate", "min_bits");
        const int max_bits = whole_number(max_bits_given, "bit_rate", "max_bits");
        std::optional<BitRateChoice> choice;
        {
          py::gil_scoped_release release;
          choice = choose_bit_rate(sqnr_min_db, from_db, to_db.value_or(from_db), step_db, min_bits, max_bits);
        }
        return choice ? py::object(choice_dict(*choice)) : py::object(py::none());
      },
      "sqnr_min_db"_a, "from_db"_a, "to_db"_a = py::none(), py::kw_only(), "step_db"_a = 1.0, "min_bits"_a = 1,
      "max_bits"_a = 16,
      "The bit-rate rule nuq derives from the companion paper (`nuq bitrate --range`; docs/variance-mismatch.md): "
      "the smallest R in [min_bits, max_bits] whose unit-variance uniform design keeps the exact SQNR >= "
      "sqnr_min_db at every mismatch from from_db to to_db (both ends included; to_db absent: the one point from_db). A dict bits, worst_sqnr_db, worst_at_db, or None when no rate "
      "does. Unnormalised centred weights meet the design at 20 log10 of their rms, sqrt(mean(w**2)); weights "
      "with a mean of their own are judged as the Laplacian of their mean and sigma by `nuq bitrate --model`.");
  m.def("_bit_rate_of", &bit_rate_of, "tensors"_a, "sqnr_min_db"_a, "per_tensor"_a, "measure"_a, "min_bits"_a,
        "max_bits"_a, "nonfinite"_a);
  m.def(
      "worst_sqnr",
      [](const IntArgument& bits_given, double from_db, std::optional<double> to_db, double step_db) {
        const int bits = whole_number(bits_given, "worst_sqnr", "bits");
        BitRateChoice worst;
        {
          py::gil_scoped_release release;
          worst = worst_case(bits, from_db, to_db.value_or(from_db), step_db, "worst_sqnr");
        }
        return choice_dict(worst);
      },
      "bits"_a, "from_db"_a, "to_db"_a = py::none(), py::kw_only(), "step_db"_a = 1.0,
      "The worst exact SQNR of the R = bits unit-variance uniform design over the mismatch range (what bit_rate "
      "compares with its floor): a dict bits, worst_sqnr_db, worst_at_db.");
}

}  // namespace nuq::python
