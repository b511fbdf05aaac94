// nuq.QuantizedTensor and the calls that make and use one: quantize (one tensor or a state dict),
// dequantize and qgemm (load and save are files.cpp's). Inputs arrive as numpy arrays (the Python
// layer turns PyTorch tensors into numpy views without a copy, bfloat16 as its raw bits); the
// library reads them where they lie, F32 in place and F16/BF16 widened a bounded piece at a time
// (quantize_in_memory.h).
#include <cmath>
#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <tuple>

#include "binding.h"
#include "nuq/backend.h"
#include "nuq/checkpoint.h"
#include "nuq/cuda.h"
#include "nuq/error.h"
#include "nuq/grouped.h"
#include "nuq/io/safetensors.h"
#include "nuq/io/widen.h"
#include "nuq/qgemm.h"
#include "nuq/quantize_in_memory.h"
#include "nuq/quantized_file.h"
#include "nuq/tensor_pieces.h"

namespace nuq::python {
namespace {

using namespace pybind11::literals;

// One floating input: the caller's array (kept alive while the GIL is released) and where its
// elements lie, in their own dtype: nothing is copied or widened here.
struct Input {
  py::array array;
  TensorInMemory tensor;
  io::DType stored;  // the source dtype the quantized tensor records
};

Input input_of(const std::string& name, const py::array& a, const std::optional<std::string>& tag) {
  NUQ_REQUIRE(a.flags() & py::array::c_style, name, ": the array must be C-contiguous");
  NUQ_REQUIRE(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_, name, ": the array's elements must be aligned");
  const ArrayDtype dtype = dtype_of(a, tag, name);
  Input in{a, TensorInMemory{a.data(), dtype.read, shape_of(a), name}, dtype.stored};
  NUQ_REQUIRE(io::is_floating(in.tensor.dtype), name, ": ", io::to_string(in.tensor.dtype),
              " cannot be quantized (float32, float16 or bfloat16)");
  return in;
}

NonFinite parse_nonfinite(const std::string& text) {
  if (text == "error") return NonFinite::Reject;
  if (text == "saturate") return NonFinite::Skip;
  throw Error("unknown nonfinite '" + text + "' (error or saturate)");
}

std::vector<PyQuantized> quantize_all(const std::vector<Input>& inputs, const PyCodebook& codebook,
                                      const std::optional<std::string>& normalise, std::optional<long> group_size,
                                      const std::string& device, const std::string& nonfinite) {
  const InMemoryOptions options = in_memory_options(normalise, group_size, nonfinite);
  const Device where = parse_device(device);
  std::vector<TensorInMemory> tensors;
  std::vector<std::string> dtypes;
  for (const Input& in : inputs) {
    tensors.push_back(in.tensor);
    dtypes.push_back(io::to_string(in.stored));
  }
  py::gil_scoped_release release;
  const std::unique_ptr<Backend> backend = make_backend(where);
  return quantize_tensors(tensors, dtypes, codebook, options, *backend);
}

py::object stats_dict(const PyQuantized& q) {
  if (!q.stats) return py::none();
  const WeightStats& s = *q.stats;
  return py::dict("count"_a = s.count, "nonfinite"_a = s.nonfinite, "mean"_a = s.mean, "std"_a = s.stddev(),
                  "min"_a = s.min, "max"_a = s.max);
}

}  // namespace

// Either kind of tensor prepared by the CPU: a grouped one for qgemm_grouped, another for the CPU
// backend. Each refers to the PyQuantized's tensor, which owns it.
struct CpuCopy {
  std::unique_ptr<PreparedWeights> weights;
  std::unique_ptr<PreparedGrouped> grouped;
};

namespace {

// The tensor's CPU layout, made on the second of its products that would read it (the look-up's:
// cpu_layout_used), with the GIL held, so that two threads never make it at once, and kept with it,
// so that later products skip the transpose of its rows; null before. Not on the first: on fresh
// memory, laying out a 2-bit 4096 x 4096 tensor costs about five of its products (page faults,
// measured: bench/results/cpu-qgemm-prepared-2026-12-03.md), which a tensor multiplied once would
// pay for nothing; nor for batches the look-up leaves to other paths, which would not read it.
std::shared_ptr<const CpuCopy> cpu_copy(const PyQuantized& q, std::size_t m) {
  const bool read = q.tensor.group_size ? cpu_layout_used(q.tensor, m) : cpu_layout_used(q.tensor.matrix, m);
  // 8/16-bit tables per row: their grids cost a look at each level, not a copy of the codes, and
  // are found on the first product, so that every product of the tensor computes its levels alike.
  const QuantizedMatrix& w = q.tensor.matrix;
  const unsigned uses_before_copy = !q.tensor.group_size && w.per_row() && w.codes.bits >= 8 ? 1 : 2;
  if (!q.on_cpu.value && read && ++q.on_cpu.uses >= uses_before_copy) {
    auto copy = std::make_shared<CpuCopy>();
    if (q.tensor.group_size)
      copy->grouped = std::make_unique<PreparedGrouped>(q.tensor);
    else
      copy->weights = cpu_backend().prepare(q.tensor.matrix);
    q.on_cpu.value = std::move(copy);
  }
  return q.on_cpu.value;
}

py::array qgemm(const py::array& x, const PyQuantized& q, const std::optional<py::array>& bias,
                const std::string& device) {
  const QuantizedMatrix& w = q.tensor.matrix;
  // The product is over the tensor's [shape[0], rest] view (grouped codes are held as [groups,
  // group size]); from the shape, so that a [0, n] or [n, 0] weight keeps its other dimension.
  const std::vector<std::int64_t>& s = q.tensor.shape;
  std::size_t rows = 1, cols = 1;  // a scalar is one row of one, a vector one row
  if (s.size() == 1) cols = std::size_t(s[0]);
  if (s.size() >= 2) {
    rows = std::size_t(s[0]);
    for (std::size_t d = 1; d < s.size(); ++d) cols *= std::size_t(s[d]);
  }
  NUQ_REQUIRE(q.tensor.group_size || rows * cols == 0 || (w.codes.rows == rows && w.codes.cols == cols),
              "qgemm: the codes are ", w.codes.rows, " x ", w.codes.cols, ", the tensor's view ", rows, " x ", cols);
  NUQ_REQUIRE(x.dtype().equal(py::dtype::of<float>()) && (x.flags() & py::array::c_style),
              "qgemm: x must be a C-contiguous float32 array");
  NUQ_REQUIRE(x.ndim() >= 1 && std::size_t(x.shape(x.ndim() - 1)) == cols, "qgemm: x's last dimension (",
              x.ndim() ? x.shape(x.ndim() - 1) : 0, ") must be the weights' ", cols, " input columns");
  if (bias)
    NUQ_REQUIRE(bias->dtype().equal(py::dtype::of<float>()) && (bias->flags() & py::array::c_style) &&
                    std::size_t(bias->size()) == rows,
                "qgemm: bias must be a C-contiguous float32 array of ", rows, " values");
  std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim() - 1);
  std::size_t m = 1;
  for (py::ssize_t d : shape) m *= std::size_t(d);
  shape.push_back(py::ssize_t(rows));
  py::array_t<float> y(shape);
  const float* xp = static_cast<const float*>(x.data());
  const float* bp = bias ? static_cast<const float*>(bias->data()) : nullptr;
  float* yp = y.mutable_data();
  if (m == 0 || rows == 0) return std::move(y);
  if (cols == 0) {  // an empty sum: the bias alone
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t r = 0; r < rows; ++r) yp[i * rows + r] = bp ? bp[r] : 0.0f;
    return std::move(y);
  }
  const Device where = parse_device(device);
  NUQ_REQUIRE(!q.tensor.group_size || where != Device::Cuda, "qgemm: grouped tensors (group_size ",
              q.tensor.group_size, ") are multiplied on the CPU; use device='cpu' or 'auto'");
  // "auto" without a CUDA device is the CPU; "cuda" without one is an error, below.
  const bool gpu = !q.tensor.group_size && where != Device::Cpu && !(where == Device::Auto && cuda::devices().empty());
  if (!gpu) {
    const std::shared_ptr<const CpuCopy> prepared = cpu_copy(q, m);
    py::gil_scoped_release release;
    if (prepared && prepared->grouped)
      qgemm_grouped(xp, m, *prepared->grouped, bp, yp);
    else if (prepared)
      cpu_backend().qgemm(xp, m, *prepared->weights, bp, yp);
    else if (q.tensor.group_size)
      qgemm_grouped(xp, m, q.tensor, bp, yp);
    else
      cpu_backend().qgemm(xp, m, w, bp, yp);
    return std::move(y);
  }
  NUQ_REQUIRE(!cuda::devices().empty(), "device cuda: ", cuda::unavailable_reason());
  // Device 0, as make_backend(Device::Cuda) takes; the codes go up on the first product there and
  // stay, so that later products move only x and y.
  qgemm_host_arrays_on_device(xp, m, q, bp, yp, 0);
  return std::move(y);
}

template <typename T>
py::bytes bytes_of(const std::vector<T>& v) {
  return py::bytes(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

template <typename T>
std::vector<T> vector_of(const py::handle& bytes) {
  const std::string text = bytes.cast<std::string>();
  NUQ_REQUIRE(text.size() % sizeof(T) == 0, "QuantizedTensor: a pickled array of ", text.size(), " bytes");
  std::vector<T> v(text.size() / sizeof(T));
  std::memcpy(v.data(), text.data(), text.size());
  return v;
}

// Pickling (copy.deepcopy, pickle, torch.save of a quantized state dict): every field and the
// instance's attributes (the torch device dequantize returns to); the device copy is made anew.
constexpr int kPickleVersion = 2;  // 2: the run's statistics last; the attributes as pickle's own state

py::tuple quantized_state(const PyQuantized& q) {
  const QuantizedTensor& t = q.tensor;
  const PackedCodes& c = t.matrix.codes;
  const auto stats_tuple = [](const std::optional<WeightStats>& s) -> py::object {
    if (!s) return py::none();
    return py::make_tuple(s->count, s->nonfinite, s->mean, s->m2, s->min, s->max);
  };
  py::object totals = py::none();
  if (q.totals)
    totals = py::make_tuple(q.totals->signal, q.totals->noise, q.totals->max_error, q.totals->inside, q.totals->nonfinite,
                            q.totals->first_nonfinite);
  return py::make_tuple(kPickleVersion, t.shape, c.rows, c.cols, c.bits, bytes_of(c.bytes), bytes_of(t.matrix.levels),
                        t.mean, t.stddev, t.group_size, bytes_of(t.scales), bytes_of(t.normalised_levels),
                        q.codebook ? py::cast(*q.codebook) : py::none(), to_string(q.normalisation), q.dtype, stats_tuple(q.stats),
                        totals, stats_tuple(q.run_stats));
}

PyQuantized quantized_from_state_as_given(const py::tuple& s) {
  NUQ_REQUIRE(s.size() == 18 && s[0].cast<int>() == kPickleVersion, "QuantizedTensor: not a pickled state this nuq reads");
  PyQuantized q;
  QuantizedTensor& t = q.tensor;
  t.shape = s[1].cast<std::vector<std::int64_t>>();
  t.matrix.codes = {s[2].cast<std::size_t>(), s[3].cast<std::size_t>(), s[4].cast<int>(), vector_of<std::uint8_t>(s[5])};
  t.matrix.levels = vector_of<float>(s[6]);
  t.mean = s[7].cast<double>();
  t.stddev = s[8].cast<double>();
  t.group_size = s[9].cast<std::size_t>();
  t.scales = vector_of<float>(s[10]);
  t.normalised_levels = vector_of<float>(s[11]);
  std::size_t count = 1;
  for (std::int64_t dim : t.shape) {
    NUQ_REQUIRE(dim >= 0 && (dim == 0 || count <= SIZE_MAX / std::size_t(dim)), "QuantizedTensor: a pickled shape of ", dim);
    count *= std::size_t(dim);
  }
  // No code may index past what it reads, no value past the shape it is given.
  NUQ_REQUIRE(t.matrix.codes.rows <= SIZE_MAX / 16 && t.matrix.codes.cols <= SIZE_MAX / 16,
              "QuantizedTensor: pickled codes too large to address");
  // Values as a file's are checked (quantized_file.cpp): a tampered pickle restores no infinity.
  NUQ_REQUIRE(std::isfinite(t.mean) && std::isfinite(t.stddev), "QuantizedTensor: a pickled mean ", t.mean,
              " and scale ", t.stddev, " must be finite");
  if (t.group_size) {
    check_grouped(t, "QuantizedTensor");
    check_group_levels_finite(t, "QuantizedTensor");
  } else {
    check_quantized_matrix(t.matrix, "QuantizedTensor");
    for (float level : t.matrix.levels)
      NUQ_REQUIRE(std::isfinite(level), "QuantizedTensor: a pickled level of ", level, "; every level must be finite");
  }
  const std::pair<std::size_t, std::size_t> view = {t.matrix.codes.rows, t.matrix.codes.cols};
  NUQ_REQUIRE(t.group_size ? count == view.first * view.second : view == matrix_view(t.shape, count),
              "QuantizedTensor: pickled codes of ", view.first, " x ", view.second, " do not fit its shape");
  if (!s[12].is_none()) q.codebook = s[12].cast<PyCodebook>();
  q.normalisation = parse_normalisation(s[13].cast<std::string>());
  q.dtype = s[14].cast<std::string>();
  const auto stats_of = [](const py::handle& h) -> std::optional<WeightStats> {
    if (h.is_none()) return std::nullopt;
    const auto v = h.cast<std::tuple<std::size_t, std::size_t, double, double, double, double>>();
    return WeightStats{std::get<0>(v), std::get<1>(v), std::get<2>(v), std::get<3>(v), std::get<4>(v), std::get<5>(v)};
  };
  q.stats = stats_of(s[15]);
  q.run_stats = stats_of(s[17]);
  if (!s[16].is_none()) {
    const auto v = s[16].cast<std::tuple<double, double, double, std::uint64_t, std::uint64_t, std::uint64_t>>();
    q.totals = QuantizeTotals{std::get<0>(v), std::get<1>(v), std::get<2>(v), std::get<3>(v), std::get<4>(v), std::get<5>(v)};
  }
  return q;
}

// A pickled state whose parts are of the wrong Python types is a TypeError, as any argument of
// the wrong type is (pybind11's cast_error would reach Python as a RuntimeError).
PyQuantized quantized_from_state(const py::tuple& s) {
  try {
    return quantized_from_state_as_given(s);
  } catch (const py::cast_error& e) {
    throw py::type_error(std::string("QuantizedTensor: a pickled state of the wrong types (") + e.what() + ")");
  }
}

}  // namespace

InMemoryOptions in_memory_options(const std::optional<std::string>& normalise, std::optional<long> group_size,
                                  const std::string& nonfinite) {
  InMemoryOptions options;
  options.nonfinite = parse_nonfinite(nonfinite);
  if (group_size) {
    NUQ_REQUIRE(*group_size > 0, "group_size=", *group_size, ": a group size must be a positive multiple of 8");
    options.group_size = std::size_t(*group_size);
  }
  options.normalisation = normalise ? parse_normalisation(*normalise)
                          : group_size ? Normalisation::PerChannel
                                       : Normalisation::Global;
  return options;
}

namespace {

// Called between tensors, with the GIL released: a Ctrl-C (or any signal whose Python handler
// raises) ends a state dict's quantization after the tensor in hand, not after the last one.
void stop_if_interrupted() {
  const py::gil_scoped_acquire acquire;
  if (PyErr_CheckSignals() != 0) throw py::error_already_set();
}

}  // namespace

std::vector<PyQuantized> quantize_tensors(const std::vector<TensorInMemory>& tensors,
                                          const std::vector<std::string>& source_dtypes, const PyCodebook& codebook,
                                          const InMemoryOptions& options, Backend& backend) {
  std::vector<WeightStats> own;
  for (const TensorInMemory& t : tensors) {
    own.push_back(in_memory_stats(t, codebook.codebook, options, backend));
    require_finite_weights(own.back(), t.name);
    stop_if_interrupted();
  }
  // Joined in name order, as `nuq quantize` joins a checkpoint's: the same statistics (to the last
  // bit) whatever the order of the state dict or the file's layout.
  std::vector<std::size_t> by_name(tensors.size());
  for (std::size_t i = 0; i < by_name.size(); ++i) by_name[i] = i;
  std::sort(by_name.begin(), by_name.end(), [&](std::size_t a, std::size_t b) { return tensors[a].name < tensors[b].name; });
  WeightStats global;
  for (std::size_t i : by_name) global = combine(global, own[i]);
  NUQ_REQUIRE(global.count > 0, tensors.size() == 1 ? tensors[0].name : "the tensors", ": no finite weight to quantize");
  if (options.normalisation == Normalisation::Global) {  // as `nuq quantize` warns of them
    std::vector<std::pair<std::string, WeightStats>> named;
    for (std::size_t i : by_name) named.push_back({tensors[i].name, own[i]});
    const std::string line = scale_setting_tensors(named, global);
    const py::gil_scoped_acquire acquire;  // (stacklevel 2: quantize_state_dict's caller)
    if (!line.empty() && PyErr_WarnEx(PyExc_UserWarning, ("quantize_state_dict: " + line).c_str(), 2) != 0)
      throw py::error_already_set();
  }
  std::vector<PyQuantized> out;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    PyQuantized q;
    QuantizeTotals totals;
    q.tensor = quantize_in_memory(tensors[i], codebook.codebook, global, own[i], options, backend, &totals);
    q.codebook = codebook;
    q.normalisation = options.normalisation;
    q.dtype = source_dtypes[i];
    q.stats = own[i];
    q.run_stats = global;
    q.totals = totals;
    out.push_back(std::move(q));
    stop_if_interrupted();
  }
  return out;
}

namespace {

// The [rows, cols] view of a tensor's weights ([shape[0], rest]), which its codes are packed in:
// a grouped tensor's codes are held as its [groups, group_size] view, whose bytes are the same
// (groups are whole bytes of codes).
std::pair<std::size_t, std::size_t> weight_view(const QuantizedTensor& t) {
  if (!t.group_size) return {t.matrix.codes.rows, t.matrix.codes.cols};
  return matrix_view(t.shape, io::element_count(t.shape));
}

}  // namespace

void bind_tensors(py::module_& m) {
  py::class_<PyQuantized> quantized_class(m, "QuantizedTensor", py::dynamic_attr(),
                          "A tensor as packed codes: codes of its [shape[0], rest] view (LSB-first, rows byte-aligned) "
                          "and the level of each code in the tensor's own units (one table, or one per row with "
                          "per-channel normalisation; grouped, one per group of the [groups, group_size] view, "
                          "made of `scales`).");
  forbid_direct_new(quantized_class);
  m.def("_quantized_from_state", &quantized_from_state);
  quantized_class
      .def_property_readonly("shape", [](const PyQuantized& q) { return py::tuple(py::cast(q.tensor.shape)); },
                             "The original tensor's shape.")
      .def_property_readonly("rows", [](const PyQuantized& q) { return weight_view(q.tensor).first; },
                             "Rows of the codes' matrix view: shape[0] (1 for a vector or scalar).")
      .def_property_readonly("cols", [](const PyQuantized& q) { return weight_view(q.tensor).second; },
                             "Codes per row of the matrix view: the product of the other dimensions.")
      .def_property_readonly("bits", [](const PyQuantized& q) { return q.tensor.matrix.codes.bits; },
                             "The width the codes are stored at (1, 2, 4, 8 or 16).")
      .def_property_readonly("group_size", [](const PyQuantized& q) { return q.tensor.group_size; },
                             "0, or the run of weights along a row with its own scale (files of nuq quantize "
                             "--group-size; `levels` then has a table per group)")
      .def_property_readonly("dtype", [](const PyQuantized& q) { return q.dtype; }, "The source's dtype.")
      .def_property_readonly("normalisation", [](const PyQuantized& q) { return to_string(q.normalisation); },
                             "How the weights were normalised: global, per-tensor, per-channel or none.")
      .def_property_readonly("codebook", [](const PyQuantized& q) { return q.codebook; },
                             "The codebook in normalised units (None for files that record none).")
      .def_property_readonly(
          "codes",
          [](py::object self) {
            const QuantizedTensor& t = self.cast<const PyQuantized&>().tensor;
            const auto [rows, cols] = weight_view(t);
            return view_of(t.matrix.codes.bytes.data(),
                           {py::ssize_t(rows), py::ssize_t(packed_row_bytes(cols, t.matrix.codes.bits))}, self);
          },
          "Packed codes, uint8 [rows, bytes per row] (a read-only view): the bytes of the file's <name>.codes. "
          "At 16 bits the file stores them as U16 [rows, cols], these bytes little-endian: codes.view(numpy.uint16).")
      .def_property_readonly(
          "levels",
          [](py::object self) -> py::array {
            const QuantizedTensor& t = self.cast<const PyQuantized&>().tensor;
            const py::ssize_t per_table = py::ssize_t(1) << t.matrix.codes.bits;
            if (t.group_size) {  // made on request: a table per group can outweigh the codes many times
              std::vector<float> levels;
              {
                py::gil_scoped_release release;  // (the object stays alive: `self` holds it)
                levels = group_levels(t.mean, t.scales, t.normalised_levels);
              }
              return adopt(std::move(levels), {py::ssize_t(t.scales.size()), per_table});
            }
            const std::vector<float>& levels = t.matrix.levels;
            return view_of(levels.data(), {py::ssize_t(levels.size()) / per_table, per_table}, self);
          },
          "float32 [tables, 2^bits]: the value of each code (one table, or one per row; grouped: one per group, "
          "computed from `scales` on each access).")
      .def_property_readonly(
          "grid",
          [](const PyQuantized& q) -> py::object {
            const QuantizedMatrix& w = q.tensor.matrix;
            if (q.tensor.group_size || w.per_row()) return py::none();
            if (q.codebook && q.codebook->codebook.uniform_grid()) {  // the design's, as a file's .grid holds it
              const auto [offset, scale] = grid_map(q.codebook->codebook, q.tensor.mean, q.tensor.stddev);
              bool every = true;
              for (std::size_t c = 0; c < w.levels.size() && every; ++c)
                every = float(offset + scale * double(c)) == w.levels[c];
              if (every) return py::object(py::make_tuple(offset, scale));
            }
            const auto grid = level_grid(w.levels.data(), w.levels.size());
            if (!grid) return py::object(py::none());  // (offset at code 0, in double: the grid as users write it)
            const double offset = double(grid->origin_level) - double(grid->scale) * double(grid->origin_code);
            return py::object(py::make_tuple(offset, double(grid->scale)));
          },
          "(offset, scale) of the uniform grid the levels lie on, else None: for a uniform design's levels the "
          "design's grid as a file's .grid stores it (every level is float32(offset + scale * code), the sum taken "
          "in double); for other levels on a grid to within 2^-21 of each level, the grid qgemm computes them by.")
      .def_property_readonly(
          "scales",
          [](py::object self) -> py::object {
            const QuantizedTensor& t = self.cast<const PyQuantized&>().tensor;
            if (!t.group_size) return py::none();
            const auto [rows, cols] = matrix_view(t.shape, io::element_count(t.shape));
            return view_of(t.scales.data(), {py::ssize_t(rows), py::ssize_t(cols / t.group_size)}, self);
          },
          "float32 [rows, cols / group_size]: each group's scale, the RMS of its weights about `mean` "
          "(grouped tensors; None otherwise). A group's levels are mean + scale * the codebook's normalised levels.")
      .def_property_readonly("mean", [](const PyQuantized& q) { return q.tensor.mean; },
                             "The normalisation's offset (per-channel: the tensor's own mean; rows' maps are in "
                             "their tables of levels).")
      .def_property_readonly("scale", [](const PyQuantized& q) { return q.tensor.stddev; },
                             "The normalisation's scale (weights -> (w - mean) / scale; per-channel: the tensor's "
                             "own standard deviation, each row's scale in its table of levels; grouped: `scales`).")
      .def_property_readonly("stats", &stats_dict, "count, nonfinite, mean, std, min, max of the source (or None).")
      .def_property_readonly(
          "sqnr_ex_db",
          [](const PyQuantized& q) -> py::object {
            if (!q.totals) return py::none();
            return py::float_(q.totals->noise > 0.0 ? 10.0 * std::log10(q.totals->signal / q.totals->noise)
                                                    : std::numeric_limits<double>::infinity());
          },
          "SQNR_ex in dB over the finite weights, eqs. (30)-(31) (None for loaded tensors).")
      .def_property_readonly(
          "within",
          [](const PyQuantized& q) -> py::object {
            if (!q.totals || !q.stats || q.stats->count == 0) return py::none();
            return py::float_(100.0 * double(q.totals->inside) / double(q.stats->count));
          },
          "Share (%) of the finite weights inside the support region.")
      .def_property_readonly("max_error",
                             [](const PyQuantized& q) -> py::object {
                               return q.totals ? py::object(py::float_(q.totals->max_error)) : py::none();
                             })
      .def_property_readonly("nbytes",
                             [](const PyQuantized& q) {
                               const QuantizedTensor& t = q.tensor;
                               // 16-bit codes of a uniform design are stored with an affine map
                               // (.grid, two F64) in place of their 65,536 levels, as a file has them.
                               const std::optional<Codebook> codebook =
                                   q.codebook ? std::optional<Codebook>(q.codebook->codebook) : std::nullopt;
                               if (!t.group_size && stores_grid_of(codebook, t))
                                 return t.matrix.codes.bytes.size() + 2 * sizeof(double);
                               const std::size_t tables = t.group_size ? t.scales.size() + t.normalised_levels.size()
                                                                       : t.matrix.levels.size();
                               return t.matrix.codes.bytes.size() + tables * sizeof(float);
                             },
                             "Bytes nuq.save stores for it: the codes and the tables (grouped: scales and "
                             "normalised levels; 16-bit codes of a uniform design whose codebook the tensor records: "
                             "the two numbers of its grid).")
      .def("unpacked_codes",
           [](const PyQuantized& q) {
             const auto [rows, cols] = weight_view(q.tensor);
             std::vector<std::uint32_t> codes;
             {
               py::gil_scoped_release release;
               codes = unpack_codes(q.tensor.matrix.codes);
             }
             return adopt(std::move(codes), {py::ssize_t(rows), py::ssize_t(cols)});
           },
           "The codes one per element, uint32 [rows, cols].")
      .def("_dequantize_numpy",
           [](const PyQuantized& q, const std::string& dtype) -> py::array {
             const std::vector<py::ssize_t> shape(q.tensor.shape.begin(), q.tensor.shape.end());
             const std::optional<io::DType> as = io::dtype_named(dtype);
             NUQ_REQUIRE(as && io::is_floating(*as), "dequantize: restores as F32, BF16 or F16, not ", dtype);
             if (*as == io::DType::F32) {
               std::vector<float> values;
               {
                 py::gil_scoped_release release;
                 values = dequantize(q.tensor);
               }
               return adopt(std::move(values), shape);
             }
             // The nearest value, ties to even (`nuq dequantize --dtype`'s bytes), a band of about 2^20
             // weights at a time: the whole is never held in float32 beside its 16-bit patterns.
             const std::size_t rows = q.tensor.matrix.codes.rows, cols = q.tensor.matrix.codes.cols;
             std::vector<std::uint16_t> narrowed(rows * cols);
             std::vector<float> band;
             std::size_t overflow = narrowed.size(), first_over = 0;
             {
               py::gil_scoped_release release;
               const std::size_t band_rows =
                   std::max<std::size_t>(1, (std::size_t{1} << 20) / std::max<std::size_t>(1, cols));
               band.resize(std::min(rows, band_rows) * cols);
               for (std::size_t first = 0; first < rows && overflow == narrowed.size(); first += band_rows) {
                 const std::size_t count = std::min(band_rows, rows - first), n = count * cols;
                 dequantize_rows(q.tensor, first, count, band.data());
                 const std::size_t over = io::narrow_from_f32(*as, band.data(), n, narrowed.data() + first * cols);
                 if (over != n) overflow = first * cols + (first_over = over);
               }
             }
             NUQ_REQUIRE(overflow == narrowed.size(), "restored weight ", element_place(q.tensor.shape, overflow), " (",
                         band[first_over], ") lies beyond ", dtype, "'s range; restore it as float32");
             return adopt(std::move(narrowed), shape);  // the 16-bit patterns; Python gives them their dtype
           },
           "dtype"_a = "F32")
      .def("__reduce__",
           [](const py::object& self) {  // (a function of the Python package: pybind11's own do not pickle)
             // The instance's attributes as pickle's separate state, set once the tensor exists (so
             // an attribute that refers back to it is restored too).
             return py::make_tuple(py::module_::import("nuq").attr("_restore_quantized"),
                                   py::make_tuple(quantized_state(self.cast<const PyQuantized&>())),
                                   py::dict(self.attr("__dict__")));
           })
      .def("__repr__", [](const PyQuantized& q) {
        std::string shape;
        for (auto d : q.tensor.shape) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
        return "<nuq.QuantizedTensor shape (" + shape + "), " + std::to_string(q.tensor.matrix.codes.bits) +
               "-bit codes, " + to_string(q.normalisation) +
               (q.tensor.group_size ? ", groups of " + std::to_string(q.tensor.group_size) : std::string()) + ">";
      });

  m.def(
      "_quantize",
      [](const std::vector<std::tuple<std::string, py::array, std::optional<std::string>>>& tensors,
         const PyCodebook& codebook, const std::optional<std::string>& normalise, std::optional<long> group_size,
         const std::string& device, const std::string& nonfinite) {
        std::vector<Input> inputs;
        for (const auto& [name, array, tag] : tensors) inputs.push_back(input_of(name, array, tag));
        return quantize_all(inputs, codebook, normalise, group_size, device, nonfinite);
      },
      "tensors"_a, "codebook"_a, "normalise"_a, "group_size"_a, "device"_a, "nonfinite"_a);
  m.def("_qgemm", &qgemm, "x"_a, "q"_a, "bias"_a, "device"_a);
  m.def("devices", [] {
    py::list names;
    for (Device d : {Device::Cpu, Device::Cuda}) try {
        names.append(make_backend(d)->name());
      } catch (const Error&) {
      }
    return names;
  }, "The backends this build can use (\"cpu\", and \"cuda:0 (...)\" with a visible GPU).");
}

}  // namespace nuq::python
