// PyTorch CUDA tensors where they lie (#20): nuq.quantize reads a CUDA tensor's weights in device
// memory (cuda::make_device_resident_backend; only statistics, totals and the packed codes come
// back), and nuq.qgemm multiplies a CUDA x by a quantized tensor whose codes and levels it keeps
// on that device, writing y into a CUDA tensor, on the caller's current stream. The Python layer
// hands over raw device pointers (tensor.data_ptr()) of contiguous tensors (float32, float16 or
// bfloat16 to quantize; float32 to multiply) that it keeps alive across the call.
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

// The tensor's weights prepared by the CUDA backend of one device.
struct DeviceCopy {
  int device = 0;
  Backend* backend = nullptr;  // device_backend(device)
  std::unique_ptr<PreparedWeights> weights;
};

namespace {

using namespace pybind11::literals;

// (name, device pointer of a contiguous tensor, shape, its dtype: F32, F16 or BF16).
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
    // 16-bit weights as they lie: the backend widens a launch's worth at a time on the device.
    const io::DType type = dtype == "F32" ? io::DType::F32 : dtype == "F16" ? io::DType::F16 : io::DType::BF16;
    tensors.push_back(TensorInMemory{reinterpret_cast<const void*>(pointer), type, shape, name});
    dtypes.push_back(dtype);
  }
  py::gil_scoped_release release;
  const std::unique_ptr<Backend> backend = cuda::make_device_resident_backend(device);
  return quantize_tensors(tensors, dtypes, codebook, options, *backend);
}

// One CUDA backend per device for every tensor's products (its streams and handles made once),
// kept for the life of the process: released at exit it would call into a CUDA runtime that may
// already be unloading. Called with the GIL held.
Backend& device_backend(int device) {
  static auto* backends = new std::map<int, std::unique_ptr<Backend>>();
  std::unique_ptr<Backend>& backend = (*backends)[device];
  if (!backend) backend = cuda::make_backend(device);
  return *backend;
}

// The tensor's codes and levels on `device`, uploaded by its first product there and kept (made
// with the GIL held: one copy per tensor).
std::shared_ptr<DeviceCopy> device_copy(const PyQuantized& q, int device) {
  if (!q.on_device.value || q.on_device.value->device != device) {
    check_quantized_matrix(q.tensor.matrix, "qgemm");
    auto copy = std::make_shared<DeviceCopy>();
    copy->device = device;
    copy->backend = &device_backend(device);
    copy->weights = copy->backend->prepare(q.tensor.matrix);
    q.on_device.value = std::move(copy);
  }
  return q.on_device.value;
}

// y[m, rows] = x[m, cols] W^T (+ bias), every pointer in memory of `device`, on `stream`.
void qgemm_on_device(std::uintptr_t x, std::size_t m, std::size_t k, const PyQuantized& q, std::uintptr_t bias,
                     std::uintptr_t y, int device, std::uintptr_t stream) {
  const QuantizedMatrix& w = q.tensor.matrix;
  NUQ_REQUIRE(!q.tensor.group_size, "qgemm: grouped tensors (group_size ", q.tensor.group_size,
              ") are multiplied on the CPU");
  NUQ_REQUIRE(k == w.codes.cols, "qgemm: x's last dimension (", k, ") must be the weights' ", w.codes.cols,
              " input columns");
  const std::shared_ptr<DeviceCopy> copy = device_copy(q, device);
  py::gil_scoped_release release;
  cuda::qgemm_on_device(*copy->backend, reinterpret_cast<const float*>(x), m, *copy->weights,
                        reinterpret_cast<const float*>(bias), reinterpret_cast<float*>(y), stream);
}

}  // namespace

void qgemm_host_arrays_on_device(const float* x, std::size_t m, const PyQuantized& q, const float* bias, float* y,
                                 int device) {
  const std::shared_ptr<DeviceCopy> copy = device_copy(q, device);
  py::gil_scoped_release release;
  copy->backend->qgemm(x, m, *copy->weights, bias, y);
}

void bind_device_tensors(py::module_& m) {
  m.def("_quantize_device", &quantize_on_device, "tensors"_a, "codebook"_a, "normalise"_a, "group_size"_a, "device"_a,
        "nonfinite"_a);
  m.def("_qgemm_device", &qgemm_on_device, "x"_a, "m"_a, "k"_a, "q"_a, "bias"_a, "y"_a, "device"_a, "stream"_a);
}

}  // namespace nuq::python
