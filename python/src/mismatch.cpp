// nuq.mismatch and nuq.bit_rate: the companion paper's variance mismatch (a uniform quantizer
// designed for sigma_ref = 1 met by a Laplacian of another sigma) and its bit-rate rule, the
// library's functions behind `nuq mismatch` and `nuq bitrate --range`.
#include <optional>

#include "binding.h"
#include "nuq/error.h"
#include "nuq/mismatch.h"

namespace nuq::python {
namespace {

using namespace pybind11::literals;

py::dict choice_dict(const BitRateChoice& c) {
  return py::dict("bits"_a = c.bits, "worst_sqnr_db"_a = c.worst_sqnr_db, "worst_at_db"_a = c.worst_at_db);
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
