// What the parts of the Python module share (design.cpp: codebooks and the paper's numbers;
// mismatch.cpp: the companion paper's variance mismatch and bit-rate rule; tensors.cpp: quantized
// tensors and products; files.cpp: load and save; device_tensors.cpp: CUDA tensors). The module is a thin layer: every computation is a call into the nuq library, made
// with the GIL released.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "nuq/backend.h"
#include "nuq/codebook.h"
#include "nuq/io/safetensors.h"
#include "nuq/laplace.h"
#include "nuq/normalisation.h"
#include "nuq/ptq.h"
#include "nuq/quantize_in_memory.h"

namespace nuq::python {

namespace py = pybind11;

// A codebook with what the Laplacian source says of it (D and SQNR_th at its own sigma), and the
// iterates of the rule that designed it when one ran.
struct PyCodebook {
  Codebook codebook;
  Distortion distortion;
  double sqnr_db = 0.0;
  std::vector<double> trace;

  explicit PyCodebook(Codebook c, std::vector<double> iterates = {});
};

// A quantized tensor's codes and levels uploaded to a CUDA device for products there
// (device_tensors.cpp), made on the first product on that device.
struct DeviceCopy;

// A quantized tensor laid out once for the CPU's products (tensors.cpp: the look-up's interleaved
// rows, PreparedWeights or PreparedGrouped), made on its second product on the CPU.
struct CpuCopy;

// What one PyQuantized has made from its own tensor (a device copy, a CPU layout), which refers to
// that tensor: a copy or a move of the PyQuantized starts without it and makes its own.
template <typename T>
struct OwnCache {
  std::shared_ptr<T> value;
  std::size_t uses = 0;  // products that would read it so far (the CPU's layout is made on a second)
  OwnCache() = default;
  OwnCache(const OwnCache&) {}
  OwnCache(OwnCache&& moved) noexcept { moved.clear(); }  // the moved-from tensor is emptied too
  OwnCache& operator=(const OwnCache&) {
    clear();
    return *this;
  }
  OwnCache& operator=(OwnCache&& moved) noexcept {
    clear();
    moved.clear();
    return *this;
  }
  void clear() noexcept {
    value.reset();
    uses = 0;
  }
};

// One quantized tensor: the library's QuantizedTensor plus how it was made. Statistics and totals
// exist for tensors quantized in this process, not for ones loaded from a file.
struct PyQuantized {
  QuantizedTensor tensor;
  std::optional<PyCodebook> codebook;
  Normalisation normalisation = Normalisation::Global;
  std::string dtype = "F32";  // the source's dtype: F32, F16 or BF16
  std::optional<WeightStats> stats;
  // The statistics of every tensor quantized in the same call (what global normalisation uses, and
  // what a file records as its top-level mean and stddev, as `nuq quantize` records them).
  std::optional<WeightStats> run_stats;
  std::optional<QuantizeTotals> totals;
  // Made with the GIL held for products, and kept: the codes never change.
  mutable OwnCache<DeviceCopy> on_device;
  mutable OwnCache<const CpuCopy> on_cpu;
};

// How an array's elements are read, and the dtype a file or a quantized tensor records for it.
// The two differ for load's bfloat16, widened to float32 and tagged BF16 by the Python layer: read
// as F32 in place, stored as BF16 (every value still is one; the Python layer has checked).
struct ArrayDtype {
  io::DType read, stored;
};
// The dtypes of a numpy array the Python layer passes with an optional tag (what numpy cannot
// hold: BF16 as raw uint16 or load's tagged float32, 8-bit and packed floats as bytes); errors name
// `name`. And its shape.
ArrayDtype dtype_of(const py::array& a, const std::optional<std::string>& tag, const std::string& name);
std::vector<std::int64_t> shape_of(const py::array& a);

// nuq.quantize's options: normalisation (default: global, or per-channel with groups), group size
// and what to do with NaN and Inf ("error" or "saturate").
InMemoryOptions in_memory_options(const std::optional<std::string>& normalise, std::optional<long> group_size,
                                  const std::string& nonfinite);

// Every tensor with one codebook on `backend` (global normalisation takes the statistics of all
// of them together, as `nuq quantize` does for a checkpoint): the statistics of every tensor
// first, then each tensor's codes. `source_dtypes` names each tensor's dtype as the caller had it.
std::vector<PyQuantized> quantize_tensors(const std::vector<TensorInMemory>& tensors,
                                          const std::vector<std::string>& source_dtypes, const PyCodebook& codebook,
                                          const InMemoryOptions& options, Backend& backend);

// A read-only numpy view of `data` that keeps `owner` alive (no copy).
template <typename T>
py::array_t<T> view_of(const T* data, std::vector<py::ssize_t> shape, py::handle owner) {
  py::array_t<T> array(shape, data, owner);
  py::detail::array_proxy(array.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
  return array;
}

// A numpy array that takes over `values` (no copy).
template <typename T>
py::array_t<T> adopt(std::vector<T>&& values, std::vector<py::ssize_t> shape) {
  auto* owned = new std::vector<T>(std::move(values));
  py::capsule release(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>(shape, owned->data(), release);
}

// Makes `cls.__new__(cls)` and `cls()` raise TypeError. pybind11 would otherwise hand out an instance
// whose C++ value was never constructed, and a method called on it reads garbage (or crashes).
// Instances come from nuq's functions only (C++ values cast to Python are made without tp_new),
// and pickling goes through __reduce__ to a module function for the same reason.
inline void forbid_direct_new(const py::handle& cls) {
  reinterpret_cast<PyTypeObject*>(cls.ptr())->tp_new = [](PyTypeObject* type, PyObject*, PyObject*) -> PyObject* {
    PyErr_Format(PyExc_TypeError,
                 "%s objects are made by nuq's functions (nuq.design, Codebook.from_json, nuq.quantize, nuq.load), "
                 "not directly",
                 type->tp_name);
    return nullptr;
  };
}

// y[m, rows] = x W^T (+ bias) for arrays in host memory, on CUDA device `device`, through the
// tensor's copy there (device_tensors.cpp). Called with the GIL held; released while the device works.
void qgemm_host_arrays_on_device(const float* x, std::size_t m, const PyQuantized& q, const float* bias, float* y,
                                 int device);

// An integer argument as Python passed it, read by `whole_number` under the argument's name: a bool
// (an int to Python, so pybind11 would take True for 1), a float or a string is a TypeError, and a
// number beyond an int a ValueError, where pybind11 would say only "incompatible function arguments".
// Anything with __index__ is taken (numpy's integers). Signatures still show the argument as an int.
struct IntArgument {
  py::object given;
};
int whole_number(const IntArgument& argument, const char* function, const char* name);

// A string argument as Python passed it, read by `text_of` under the argument's name: another type
// is a TypeError, and a str that is not Unicode text (a lone surrogate, as os.fsdecode makes of bytes
// that are not UTF-8) a ValueError, where pybind11 would say only "incompatible function arguments".
struct TextArgument {
  py::object given;
};
std::string text_of(const TextArgument& argument, const char* function, const char* name);

void bind_design(py::module_& m);
void bind_tensors(py::module_& m);
void bind_files(py::module_& m);
void bind_device_tensors(py::module_& m);
void bind_mismatch(py::module_& m);

}  // namespace nuq::python

namespace pybind11::detail {
// Takes any object: the function that receives it converts it with whole_number or text_of, naming
// itself. Signatures show the type `name` says.
template <typename Argument, typename Name>
struct any_object_caster {
  PYBIND11_TYPE_CASTER(Argument, Name::text);
  bool load(handle source, bool) {
    value.given = reinterpret_borrow<object>(source);
    return true;
  }
  static handle cast(const Argument& argument, return_value_policy, handle) { return argument.given.inc_ref(); }
};
struct int_name {
  static constexpr auto text = const_name("int");
};
struct str_name {
  static constexpr auto text = const_name("str");
};
template <>
struct type_caster<nuq::python::IntArgument> : any_object_caster<nuq::python::IntArgument, int_name> {};
template <>
struct type_caster<nuq::python::TextArgument> : any_object_caster<nuq::python::TextArgument, str_name> {};
}  // namespace pybind11::detail
