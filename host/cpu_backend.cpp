#include <cblas.h>

#include <climits>
#include <memory>

#include "nuq/backend.h"
#include "nuq/error.h"
#include "qgemm_lut.h"

namespace nuq {
namespace {

// On the CPU, preparing interleaves the rows for the look-up path (1/2/4-bit codes, one codebook)
// and finds the level grid of 8/16-bit codes, once; the codes themselves are used as stored.
class CpuPreparedWeights final : public PreparedWeights {
 public:
  explicit CpuPreparedWeights(const QuantizedMatrix& w) : PreparedWeights(w), prepared_(detail::prepare_cpu(w)) {}
  const detail::CpuPrepared& prepared() const { return prepared_; }

 private:
  detail::CpuPrepared prepared_;
};

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  bool concurrent_calls() const override { return true; }
  WeightStats stats(const float* values, std::size_t count, const std::string& name, NonFinite nonfinite) override {
    WeightStats s;
    accumulate(s, values, count, name, nonfinite);
    return s;
  }
  QuantizeTotals quantize(const float* values, std::size_t rows, std::size_t cols, const QuantizeTable& table,
                          std::uint8_t* packed) override {
    return quantize_fast(values, rows, cols, table, packed);
  }
  bool reads(WeightType) const override { return true; }
  WeightStats stats_as(const void* values, WeightType type, std::size_t count, const std::string& name,
                       NonFinite nonfinite) override {
    WeightStats s;
    accumulate(s, values, type, count, name, nonfinite);
    return s;
  }
  void row_stats(const void* values, WeightType type, std::size_t rows, std::size_t cols, const std::string& name,
                 NonFinite nonfinite, WeightStats* out) override {
    nuq::row_stats(values, type, rows, cols, out, name, nonfinite);
  }
  QuantizeTotals quantize_as(const void* values, WeightType type, std::size_t rows, std::size_t cols,
                             const QuantizeTable& table, std::uint8_t* packed) override {
    return quantize_fast(values, type, rows, cols, table, packed);
  }
  void dequantize(const std::uint8_t* packed, std::size_t rows, std::size_t cols, const QuantizeTable& table,
                  float* out) override {
    dequantize_ref(packed, rows, cols, table, out);
  }
  void qgemm(const float* x, std::size_t m, const QuantizedMatrix& w, const float* bias, float* y) override {
    nuq::qgemm(x, m, w, bias, y);
  }
  std::unique_ptr<PreparedWeights> prepare(const QuantizedMatrix& w) override {
    return std::make_unique<CpuPreparedWeights>(w);
  }
  void qgemm(const float* x, std::size_t m, const PreparedWeights& w, const float* bias, float* y) override {
    const auto* prepared = dynamic_cast<const CpuPreparedWeights*>(&w);
    NUQ_REQUIRE(prepared, "qgemm on the cpu: the weights were prepared by another backend");
    detail::qgemm_prepared(x, m, w.matrix(), &prepared->prepared(), bias, y);
  }
  void gemm(const float* x, std::size_t m, const float* w, std::size_t rows, std::size_t cols, const float* bias,
            float* y) override {
    if (m == 0 || rows == 0) return;
    NUQ_REQUIRE(m <= std::size_t(INT_MAX) && rows <= std::size_t(INT_MAX) && cols <= std::size_t(INT_MAX), "gemm: ",
                m, " x ", rows, " x ", cols, " exceeds the 32-bit dimensions of the BLAS interface");
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(rows), int(cols), 1.0f, x, int(cols), w,
                int(cols), 0.0f, y, int(rows));
    add_bias(bias, m, rows, y);
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

WeightStats Backend::stats_as(const void* values, WeightType type, std::size_t count, const std::string& where,
                              NonFinite nonfinite) {
  NUQ_REQUIRE(type == WeightType::F32, name(), " takes weights as float only; widen them first");
  return stats(static_cast<const float*>(values), count, where, nonfinite);
}

void Backend::row_stats(const void* values, WeightType type, std::size_t rows, std::size_t cols,
                        const std::string& name, NonFinite nonfinite, WeightStats* out) {
  const auto* bytes = static_cast<const std::uint8_t*>(values);
  for (std::size_t r = 0; r < rows; ++r)
    out[r] = stats_as(bytes + r * cols * element_bytes(type), type, cols, name + " row " + std::to_string(r), nonfinite);
}

QuantizeTotals Backend::quantize_as(const void* values, WeightType type, std::size_t rows, std::size_t cols,
                                    const QuantizeTable& table, std::uint8_t* packed) {
  NUQ_REQUIRE(type == WeightType::F32, name(), " takes weights as float only; widen them first");
  return quantize(static_cast<const float*>(values), rows, cols, table, packed);
}

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

Backend& cpu_backend() {
  static CpuBackend backend;
  return backend;
}

}  // namespace nuq
