// The _nuq extension module: nuq::Error becomes ValueError (a user's mistake, with nuq's
// message); nuq::InternalError stays a RuntimeError (a bug of nuq).
#include "binding.h"
#include "nuq/error.h"

PYBIND11_MODULE(_nuq, m) {
  m.doc() = "nuq: post-training quantization of neural-network weights (the C++ library's binding)";
  pybind11::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const nuq::Error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  nuq::python::bind_design(m);
  nuq::python::bind_tensors(m);
  nuq::python::bind_files(m);
  nuq::python::bind_device_tensors(m);
}
