#include <memory>

#include "nuq/backend.h"
#include "nuq/error.h"

namespace nuq {
namespace {

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  WeightStats stats(const float* values, std::size_t count, const std::string& name, NonFinite nonfinite) override {
    WeightStats s;
    accumulate(s, values, count, name, nonfinite);
    return s;
  }
  QuantizeTotals quantize(const float* values, std::size_t rows, std::size_t cols, const QuantizeTable& table,
                          std::uint8_t* packed) override {
    return quantize_fast(values, rows, cols, table, packed);
  }
  void dequantize(const std::uint8_t* packed, std::size_t rows, std::size_t cols, const QuantizeTable& table,
                  float* out) override {
    dequantize_ref(packed, rows, cols, table, out);
  }
  void qgemm(const float* x, std::size_t m, const QuantizedMatrix& w, const float* bias, float* y) override {
    nuq::qgemm(x, m, w, bias, y);
  }
};

}  // namespace

std::string to_string(Device device) {
  switch (device) {
    case Device::Cpu: return "cpu";
    case Device::Cuda: return "cuda";
    case Device::Auto: return "auto";
  }
  return "?";
}

Device parse_device(const std::string& text) {
  for (Device d : {Device::Cpu, Device::Cuda, Device::Auto})
    if (text == to_string(d)) return d;
  throw Error("unknown device '" + text + "' (cpu, cuda or auto)");
}

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

Backend& cpu_backend() {
  static CpuBackend backend;
  return backend;
}

}  // namespace nuq
