// PyTorch CUDA tensors where they lie (#20): nuq.quantize reads a CUDA tensor's weights in device
// memory (cuda::make_device_resident_backend; only statistics, totals and the packed codes come
// back), and nuq.qgemm multiplies a CUDA x by a quantized tensor whose codes and levels it keeps
// on that device, writing y into a CUDA tensor, on the caller's current stream. The Python layer
// hands over raw device pointers (tensor.data_ptr()) of float32, contiguous tensors it keeps alive
// across the call.
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "binding.h"
#include "nuq/backend.h"
#include "nuq/cuda.h"
#include "nuq/error.h"
#include "nuq/prepared_weights.h"
#include "nuq/qgemm.h"

namespace nuq::python {

// The CUDA backend of one device and the tensor's weights prepared by it.
struct DeviceCopy {
  int device = 0;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<PreparedWeights> weights;
};

namespace {

using namespace pybind11::literals;

// (name, device pointer of contiguous float32, shape, the caller's dtype: F32, F16 or BF16).
using DeviceInput = std::tuple<std::string, std::uintptr_t, std::vector<std::int64_t>, std::string>;

std::vector<PyQuantized> quantize_on_device(const std::vector<DeviceInput>& inputs, const PyCodebook& codebook,
                                            const std::optional<std::string>& normalise,
                                            std::optional<long> group_size, int device, const std::string& nonfinite) {
  const InMemoryOptions options = in_memory_options(normalise, group_size, nonfinite);
  std::vector<TensorInMemory> tensors;
  std::vector<std::string> dtypes;
  for (const auto& [name, pointer, shape, dtype] : inputs) {
    NUQ_REQUIRE(dtype == "F32" || dtype == "F16" || dtype == "BF16", name, ": ", dtype,
                " cannot be quantized (float32, float16 or bfloat16)");
    tensors.push_back(TensorInMemory{reinterpret_cast<const void*>(pointer), io::DType::F32, shape, name});
    dtypes.push_back(dtype);
  }
  py::gil_scoped_release release;
  const std::unique_ptr<Backend> backend = cuda::make_device_resident_backend(device);
  return quantize_tensors(tensors, dtypes, codebook, options, *backend);
}

// y[m, rows] = x[m, cols] W^T (+ bias), every pointer in memory of `device`, on `stream`.
void qgemm_on_device(std::uintptr_t x, std::size_t m, std::size_t k, const PyQuantized& q, std::uintptr_t bias,
                     std::uintptr_t y, int device, std::uintptr_t stream) {
  const QuantizedMatrix& w = q.tensor.matrix;
  NUQ_REQUIRE(!q.tensor.group_size, "qgemm: grouped tensors (group_size ", q.tensor.group_size,
              ") are multiplied on the CPU");
  NUQ_REQUIRE(k == w.codes.cols, "qgemm: x's last dimension (", k, ") must be the weights' ", w.codes.cols,
              " input columns");
  if (!q.on_device || q.on_device->device != device) {  // made with the GIL held: one cache per tensor
    check_quantized_matrix(w, "qgemm");
    auto copy = std::make_shared<DeviceCopy>();
    copy->device = device;
    copy->backend = cuda::make_backend(device);
    copy->weights = copy->backend->prepare(w);
    q.on_device = std::move(copy);
  }
  const std::shared_ptr<DeviceCopy> copy = q.on_device;
  py::gil_scoped_release release;
  cuda::qgemm_on_device(*copy->backend, reinterpret_cast<const float*>(x), m, *copy->weights,
                        reinterpret_cast<const float*>(bias), reinterpret_cast<float*>(y), stream);
}

}  // namespace

void bind_device_tensors(py::module_& m) {
  m.def("_quantize_device", &quantize_on_device, "tensors"_a, "codebook"_a, "normalise"_a, "group_size"_a, "device"_a,
        "nonfinite"_a);
  m.def("_qgemm_device", &qgemm_on_device, "x"_a, "m"_a, "k"_a, "q"_a, "bias"_a, "y"_a, "device"_a, "stream"_a);
}

}  // namespace nuq::python
