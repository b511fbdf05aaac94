// The _nuq extension module: nuq::Error becomes ValueError (a user's mistake, with nuq's
// message); nuq::InternalError stays a RuntimeError (a bug of nuq).
#include <climits>
#include <string>

#include "binding.h"
#include "nuq/cpu_threads.h"
#include "nuq/error.h"

namespace nuq::python {

int whole_number(const IntArgument& argument, const char* function, const char* name) {
  PyObject* given = argument.given.ptr();
  const std::string type = Py_TYPE(given)->tp_name;
  // (numpy's booleans are no Python bools, but have __index__: refused by their type's name)
  if (PyBool_Check(given) || type == "numpy.bool_" || type == "numpy.bool" || !PyIndex_Check(given))
    throw py::type_error(std::string(function) + ": " + name + " must be an int, not " + type);
  const py::int_ number = py::reinterpret_steal<py::int_>(PyNumber_Index(given));
  if (!number) throw py::error_already_set();
  int overflow = 0;
  const long long value = PyLong_AsLongLongAndOverflow(number.ptr(), &overflow);
  if (overflow || value < INT_MIN || value > INT_MAX)
    throw py::value_error(std::string(function) + ": " + name + "=" + py::repr(number).cast<std::string>() +
                          " is out of range");
  return int(value);
}

std::string text_of(const TextArgument& argument, const char* function, const char* name) {
  PyObject* given = argument.given.ptr();
  if (!PyUnicode_Check(given))
    throw py::type_error(std::string(function) + ": " + name + " must be a string, not " + Py_TYPE(given)->tp_name);
  Py_ssize_t size = 0;
  const char* utf8 = PyUnicode_AsUTF8AndSize(given, &size);
  if (!utf8) {  // a lone surrogate: UnicodeEncodeError, told as the caller's mistake
    PyErr_Clear();
    throw py::value_error(std::string(function) + ": " + name + "=" + py::repr(argument.given).cast<std::string>() +
                          " is not Unicode text (it holds a lone surrogate, as os.fsdecode makes of bytes that are "
                          "not UTF-8)");
  }
  return std::string(utf8, std::size_t(size));
}

}  // namespace nuq::python

PYBIND11_MODULE(_nuq, m) {
  m.doc() = "nuq: post-training quantization of neural-network weights (the C++ library's binding)";
  pybind11::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const nuq::Error& e) {
      // A message quotes paths and header bytes as they are, which need not be UTF-8: those bytes
      // are shown escaped, never lost with the rest of the message.
      const std::string what = e.what();
      PyObject* text = PyUnicode_DecodeUTF8(what.data(), Py_ssize_t(what.size()), "backslashreplace");
      if (!text) return;  // (the decoder's own error stands)
      PyErr_SetObject(PyExc_ValueError, text);
      Py_DECREF(text);
    }
  });
  // The pybind11 this module was built with: 2.12 or later reads numpy 2's dtypes (an older one takes
  // every itemsize for 0 under numpy 2, and hands back arrays of garbage); python/tests check it.
  m.attr("__version__") = NUQ_VERSION;  // project()'s, as `nuq --version` gives it
  m.attr("_pybind11_version") = pybind11::make_tuple(PYBIND11_VERSION_MAJOR, PYBIND11_VERSION_MINOR);
  m.def(
      "set_num_threads",
      [](const nuq::python::IntArgument& threads) {
        nuq::set_cpu_threads(nuq::python::whole_number(threads, "set_num_threads", "threads"));
      },
      pybind11::arg("threads"),
        "Sets how many threads nuq's CPU work (products, statistics, quantization) runs on, for the whole "
        "process: 1 to 1024, or 0 to follow OpenMP's count again (OMP_NUM_THREADS, and torch.set_num_threads "
        "where PyTorch shares nuq's OpenMP runtime, as Debian's does). Codes and statistics do not depend on "
        "it; products of more than 16 rows, summed by OpenBLAS over panels sized by it, may differ in the last bits.");
  m.def("get_num_threads", &nuq::cpu_threads,
        "The threads nuq's CPU work runs on: set_num_threads's count, else OpenMP's for the calling thread.");
  nuq::python::bind_design(m);
  nuq::python::bind_tensors(m);
  nuq::python::bind_files(m);
  nuq::python::bind_device_tensors(m);
  nuq::python::bind_mismatch(m);
}
