// nuq.design, nuq.sweep, nuq.Codebook and nuq.paper: the design engine and the published numbers.
#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

#include "binding.h"
#include "nuq/codebook_record.h"
#include "nuq/design.h"
#include "nuq/error.h"
#include "nuq/io/json_parse.h"
#include "nuq/paper.h"
#include "nuq/uniform.h"
#include "nuq/support.h"

namespace nuq::python {

PyCodebook::PyCodebook(Codebook c, std::vector<double> iterates)
    : codebook(std::move(c)),
      distortion(laplace_distortion(codebook, codebook.provenance().sigma)),
      sqnr_db(nuq::sqnr_db(distortion.total(), codebook.provenance().sigma)),
      trace(std::move(iterates)) {}

namespace {

using namespace pybind11::literals;

// A read-only copy (codebooks are small): an edit of it would change nothing of the codebook, so it
// is refused rather than silently ignored.
py::array_t<double> doubles(const std::vector<double>& values) {
  py::array_t<double> copy(py::ssize_t(values.size()), values.data());
  py::detail::array_proxy(copy.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
  return copy;
}

// The text parse_support reads back for each rule of the paper's tables.
std::string support_text(const Support& s) {
  switch (s.rule) {
    case SupportRule::MinAbsWeight: return "case1";
    case SupportRule::MaxAbsWeight: return "case2";
    case SupportRule::SptqOptimum: return "3delta";
    case SupportRule::MsptqOptimum: return "3delta-mod";
    case SupportRule::Hui: return "hui";
    case SupportRule::Jayant: return "jayant";
    case SupportRule::TernaryOptimum: return "ternary";
    case SupportRule::Fixed: break;
  }
  return std::to_string(s.value);
}

py::object optional_number(const std::optional<double>& v) { return v ? py::object(py::float_(*v)) : py::none(); }

PyCodebook run_design(const TextArgument& method_given, const std::optional<IntArgument>& bits,
                      std::optional<double> xmax, double sigma, const std::optional<IntArgument>& levels,
                      const std::optional<TextArgument>& rule_given,
                      double alpha, double mu, std::optional<double> init, std::optional<double> epsilon) {
  const std::string method = text_of(method_given, "design", "method");
  const std::optional<std::string> rule =
      rule_given ? std::optional<std::string>(text_of(*rule_given, "design", "rule")) : std::nullopt;
  DesignSpec spec;
  spec.method = parse_designed_method(method);
  spec.bits = bits ? whole_number(*bits, "design", "bits") : 2;
  if (levels) {  // as `nuq design`: levels alone pick the narrowest width; with bits the two must agree
    const int count = whole_number(*levels, "design", "levels");
    NUQ_REQUIRE(count >= 0, "design: levels=", count, " is negative");
    spec.levels = std::size_t(count);
    const int needed = bits_for_levels(*spec.levels);
    NUQ_REQUIRE(!bits || spec.bits == needed, "design: levels=", count, " are coded in ", needed, " bits, not bits=",
                spec.bits, "; give one of them");
    spec.bits = needed;
  }
  spec.xmax = xmax;
  if (rule) spec.rule = parse_xmax_rule(*rule);
  spec.alpha = alpha;
  spec.mu = mu;
  spec.init = init;
  spec.sigma = sigma;
  spec.epsilon = epsilon.value_or(kPaperEpsilon);
  DesignResult result = [&] {
    py::gil_scoped_release release;
    return design(spec);
  }();
  // As `nuq design`: options of the iterative rule would be silently ignored by any other.
  const XmaxRule used = result.codebook.provenance().rule;
  NUQ_REQUIRE(used == XmaxRule::Iterative || (!init && !epsilon), init ? "init" : "epsilon",
              " belongs to the iterative rule; ", method, " here uses the ", to_string(used), " rule, which takes none");
  return PyCodebook(std::move(result.codebook), std::move(result.trace.sequence));
}

void bind_paper(py::module_& m) {
  py::module_ paper = m.def_submodule(
      "paper", "The published numbers of the main paper, and the two figures from elsewhere it is compared with "
      "(MULAW_255_SQNR, quoted by the paper from its ref. [16]; LLOYD_MAX_4_SQNR, from the literature, Jayant's "
      "table; the paper does not state it) (include/nuq/paper.h).");
  paper.attr("SPTQ_DELTA") = paper::kSptqDelta;
  paper.attr("SPTQ_XMAX") = paper::kSptqXmax;
  paper.attr("MSPTQ_DELTA") = paper::kMsptqDelta;
  paper.attr("MSPTQ_XMAX") = paper::kMsptqXmax;
  paper.attr("MSPTQ_ITERATIONS") = paper::kMsptqIterations;
  paper.attr("MNIST_MLP_RANGE") = py::make_tuple(paper::kMnistMlpRange.min, paper::kMnistMlpRange.max);
  paper.attr("MULAW_255_SQNR") = paper::kMuLaw255Sqnr;
  paper.attr("LLOYD_MAX_4_SQNR") = paper::kLloydMax4Sqnr;
  paper.def(
      "table2",
      [] {
        py::list columns;
        for (const auto& c : paper::table2())
          columns.append(py::dict("label"_a = c.label, "delta0"_a = c.delta0, "iterations"_a = c.iterations));
        return columns;
      },
      "Table 2: each column's Delta(0) and the published iteration count of the SPTQ rule.");
  paper.def(
      "tables",
      [] {
        py::list tables;
        for (const auto& t : paper::tables()) {
          py::list cases;
          for (const auto& c : t.cases)
            cases.append(py::dict("label"_a = c.label, "support"_a = support_text(c.support),
                                  "alpha"_a = c.support.alpha, "sqnr_ex"_a = optional_number(c.sqnr_ex),
                                  "sqnr_th"_a = optional_number(c.sqnr_th), "accuracy"_a = optional_number(c.accuracy),
                                  "within"_a = optional_number(c.within)));
          tables.append(py::dict("id"_a = t.id, "title"_a = t.title, "method"_a = to_string(t.method),
                                 "bits"_a = t.bits, "dataset"_a = t.dataset, "model"_a = t.model, "cases"_a = cases));
        }
        return tables;
      },
      "Tables 3-7 as printed: each case's support rule (a text nuq.support_xmax reads) and published values "
      "(None where the paper prints none).");
}

}  // namespace

void bind_design(py::module_& m) {
  py::class_<PyCodebook> codebook_class(m, "Codebook",
                         "A scalar quantizer: N-1 sorted thresholds and N sorted levels over the whole line "
                         "(x goes to level k when thresholds[k-1] <= x < thresholds[k]), stored in `bits` bits, with "
                         "its distortion on the Laplacian source it was designed for.");
  forbid_direct_new(codebook_class);
  // Pickling (copy.deepcopy, pickle, torch.save): the design as JSON and the iterates of its rule,
  // restored by a function of the module (unpickling never makes an empty instance first).
  m.def("_codebook_from_state", [](const py::tuple& state) {
    NUQ_REQUIRE(state.size() == 2, "Codebook: a pickled state of ", state.size(), " items, not 2");
    try {
      return PyCodebook(codebook_from_json(io::parse_json_bounded(state[0].cast<std::string>(), 16)),
                        state[1].cast<std::vector<double>>());
    } catch (const py::cast_error& e) {  // else a RuntimeError: wrong types are a TypeError everywhere
      throw py::type_error(std::string("Codebook: a pickled state of the wrong types (") + e.what() + ")");
    }
  });
  codebook_class
      .def_property_readonly("method", [](const PyCodebook& c) { return to_string(c.codebook.provenance().method); },
                             "The design: uniform, sptq, msptq, ternary, mulaw or lloyd-max.")
      .def_property_readonly("bits", [](const PyCodebook& c) { return c.codebook.bits(); },
                             "Bits per code: ceil(log2 N) for N levels.")
      .def_property_readonly("thresholds", [](const PyCodebook& c) { return doubles(c.codebook.thresholds()); },
                             "The N-1 decision thresholds (float64, in the source's units).")
      .def_property_readonly("levels", [](const PyCodebook& c) { return doubles(c.codebook.levels()); },
                             "The N representation levels (float64, in the source's units).")
      .def_property_readonly("xmax", [](const PyCodebook& c) { return c.codebook.xmax(); },
                             "Support threshold: the granular region is [-xmax, xmax].")
      .def_property_readonly("sigma", [](const PyCodebook& c) { return c.codebook.provenance().sigma; },
                             "The standard deviation of the Laplacian source the codebook was designed for.")
      .def_property_readonly("rule", [](const PyCodebook& c) { return to_string(c.codebook.provenance().rule); },
                             "How xmax was chosen: given, iterative, numeric or lloyd.")
      .def_property_readonly("iterations", [](const PyCodebook& c) { return c.codebook.provenance().iterations; },
                             "Updates of the fixed-point (or Lloyd) rule; 0 where none ran.")
      .def_property_readonly("mu", [](const PyCodebook& c) { return optional_number(c.codebook.provenance().mu); },
                             "The mu-law compression parameter; None for other methods.")
      .def_property_readonly("alpha",
                             [](const PyCodebook& c) { return optional_number(c.codebook.provenance().alpha); },
                             "The ternary scale factor; None for other methods.")
      .def_property_readonly("trace", [](const PyCodebook& c) { return doubles(c.trace); },
                             "Iterates of the rule (Delta for sptq/msptq, xmax otherwise); empty when none ran.")
      .def_property_readonly("distortion", [](const PyCodebook& c) { return c.distortion.total(); },
                             "Exact mean squared error D on Laplace(0, sigma^2).")
      .def_property_readonly("granular", [](const PyCodebook& c) { return c.distortion.granular; },
                             "The granular part of D (inside [-xmax, xmax]).")
      .def_property_readonly("overload", [](const PyCodebook& c) { return c.distortion.overload; },
                             "The overload part of D (beyond xmax).")
      .def_property_readonly("sqnr_db", [](const PyCodebook& c) { return c.sqnr_db; }, "SQNR_th in dB.")
      .def("quantize_values",
           [](const PyCodebook& c, const std::vector<double>& x) {
             std::vector<double> out(x.size());
             for (std::size_t i = 0; i < x.size(); ++i) out[i] = c.codebook.quantize(x[i]);
             return out;
           },
           "The reference rule on a few numbers (Codebook::quantize), for checks: a list of them, or one number "
           "for one.", py::arg("x"))
      .def("quantize_values", [](const PyCodebook& c, double x) { return c.codebook.quantize(x); }, py::arg("x"))
      .def("to_json", [](const PyCodebook& c) { return to_json(c.codebook).dump(); },
           "The codebook as JSON (what Codebook.from_json reads).")
      .def_static("from_json",
                  [](const TextArgument& given) {
                    const std::string text = text_of(given, "Codebook.from_json", "text");
                    nlohmann::json j;
                    try {  // bounded: a codebook nests three deep, and its errors print values
                      j = io::parse_json_bounded(text, 16);
                    } catch (const Error& e) {
                      throw Error(std::string("codebook JSON: ") + e.what());
                    }
                    return PyCodebook(codebook_from_record(j));
                  },
                  "A Codebook from JSON: Codebook.to_json's, or the codebook a quantized file's header records "
                  "(the 'codebook' of its __metadata__['nuq.quantized']; a uniform, mu-law or Lloyd-Max design above 256 "
                  "levels is recorded by its parameters alone and rebuilt bit for bit; xmax_rule, sigma and iterations "
                  "may be absent, as docs/format.md says).",
                  py::arg("text"))
      .def("__reduce__",
           [](const PyCodebook& c) {  // (a function of the Python package: pybind11's own do not pickle)
             return py::make_tuple(py::module_::import("nuq").attr("_restore_codebook"),
                                   py::make_tuple(py::make_tuple(to_json(c.codebook).dump(), c.trace)));
           })
      .def("__repr__", [](const PyCodebook& c) {
        return "<nuq.Codebook " + to_string(c.codebook.provenance().method) + ", " + std::to_string(c.codebook.bits()) +
               " bits, " + std::to_string(c.codebook.size()) + " levels, xmax " + std::to_string(c.codebook.xmax()) +
               ", SQNR_th " + std::to_string(c.sqnr_db) + " dB>";
      });

  m.def("design", &run_design, "method"_a, "bits"_a = py::none(), py::kw_only(), "xmax"_a = py::none(), "sigma"_a = 1.0,
        "levels"_a = py::none(), "rule"_a = py::none(), "alpha"_a = 1.0, "mu"_a = 255.0, "init"_a = py::none(),
        "epsilon"_a = py::none(),
        "Design a quantizer for the Laplacian source (what `nuq design` prints).\n\n"
        "method: uniform, sptq, msptq, ternary, mulaw or lloyd-max. xmax: the support threshold (source units); "
        "absent, `rule` ('iterative' or 'numeric', default the method's own) finds it. bits: the code width "
        "(default 2). levels: N (default 2^bits); given alone, the narrowest width that holds them (levels=9: 4 bits); "
        "given with bits, the two must agree, as `nuq design -N -b`. "
        "alpha: ternary scale factor. mu: mu-law compression. init: Delta(0) (sptq/msptq) or x_max(0) of the "
        "iterative rule. epsilon: its stop criterion (default the paper's 1e-4). init and epsilon are refused when the "
        "design uses another rule, as `nuq design` refuses them.");
  m.def(
      "sweep",
      [](const TextArgument& method, double start, double stop, double step, const IntArgument& bits, double sigma,
         double alpha, double mu) {
        DesignSpec spec;
        spec.method = parse_designed_method(text_of(method, "sweep", "method"));
        spec.bits = whole_number(bits, "sweep", "bits");
        spec.sigma = sigma;
        spec.alpha = alpha;
        spec.mu = mu;
        std::vector<SweepPoint> points;
        {
          py::gil_scoped_release release;
          points = sweep(spec, start, stop, step);
        }
        std::vector<double> parameter, xmax, distortion, granular, overload, sqnr;
        for (const SweepPoint& p : points) {
          parameter.push_back(p.parameter);
          xmax.push_back(p.xmax);
          distortion.push_back(p.distortion.total());
          granular.push_back(p.distortion.granular);
          overload.push_back(p.distortion.overload);
          sqnr.push_back(p.sqnr_db);
        }
        return py::dict("parameter"_a = doubles(parameter), "xmax"_a = doubles(xmax),
                        "distortion"_a = doubles(distortion), "granular"_a = doubles(granular),
                        "overload"_a = doubles(overload), "sqnr_db"_a = doubles(sqnr));
      },
      "method"_a, "start"_a, "stop"_a, "step"_a, py::kw_only(), "bits"_a = 2, "sigma"_a = 1.0, "alpha"_a = 1.0,
      "mu"_a = 255.0,
      "D (and its granular and overload parts) and SQNR_th against the design's parameter (Delta for sptq/msptq, "
      "xmax otherwise), both ends included: the columns of `nuq design --sweep` (Fig. 6).");
  m.def(
      "support_xmax",
      [](const TextArgument& given, std::optional<double> w_min, std::optional<double> w_max, double alpha) {
        const std::string support = text_of(given, "support_xmax", "support");
        Support s = parse_support(support);
        s.alpha = alpha;
        NUQ_REQUIRE(!depends_on_extremes(s) || (w_min && w_max), "support '", support,
                    "' comes from the weights' extremes: give w_min and w_max");
        return resolve_xmax(s, {w_min.value_or(0.0), w_max.value_or(0.0)});
      },
      "support"_a, "w_min"_a = py::none(), "w_max"_a = py::none(), "alpha"_a = 1.0,
      "x_max of a support-region rule (case1..case5, min-abs, max-abs, 3delta, 3delta-mod, hui, jayant, ternary, or a "
      "number) for normalised weights in [w_min, w_max].");
  bind_paper(m);
}

}  // namespace nuq::python
