// Where the weight pipeline runs: the CPU or a CUDA device, behind one interface (after ggml's
// backends and faiss's CPU/GPU indexes). Every operation takes and returns host memory; the CUDA
// backend streams statistics, quantization and dequantization through the device in chunks, so
// weight sets larger than the GPU's memory work too. qgemm is not streamed: its weights are on the
// device (prepared) or uploaded whole, and X and Y go up and down whole (m·k and m·n floats; a
// batch beyond the device's memory is a clear out-of-memory error). Callers pick a backend with make_backend(Device): `auto` takes a CUDA device when one
// is visible and falls back to the CPU otherwise.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "nuq/prepared_weights.h"
#include "nuq/qgemm.h"
#include "nuq/quantize_table.h"
#include "nuq/stats.h"

namespace nuq {

enum class Device { Cpu, Cuda, Auto };
std::string to_string(Device device);
Device parse_device(const std::string& text);  // "cpu", "cuda" or "auto"; throws naming the choices

class Backend {
 public:
  virtual ~Backend() = default;
  // "cpu", or "cuda:0 (NVIDIA H100 80GB HBM3)".
  virtual std::string name() const = 0;
  // Whether stats() and quantize() may be called from several threads at once, on disjoint data
  // (the CPU backend's are pure functions; a device backend's share its streams and buffers).
  virtual bool concurrent_calls() const { return false; }

  // Count, mean, standard deviation and extremes of `count` weights named `name` in errors. NaN or
  // Inf is an error naming the index, or counted and left out with NonFinite::Skip.
  virtual WeightStats stats(const float* values, std::size_t count, const std::string& name, NonFinite nonfinite) = 0;

  // The one fused pass over a [rows, cols] matrix: codes by the table's rule, packed into
  // `packed` (rows * packed_row_bytes(cols, table.bits) bytes), and the totals of the error.
  virtual QuantizeTotals quantize(const float* values, std::size_t rows, std::size_t cols, const QuantizeTable& table,
                                  std::uint8_t* packed) = 0;

  // Whether stats_as() and quantize_as() take weights of `type` as they lie (the CPU reads BF16
  // and F16 widening each weight in registers); otherwise callers widen them to float first.
  virtual bool reads(WeightType type) const { return type == WeightType::F32; }
  // stats() and quantize() over weights of `type` as they lie: the same results, bit for bit, as
  // over their floats. Where reads(type) is false, only F32 is taken.
  virtual WeightStats stats_as(const void* values, WeightType type, std::size_t count, const std::string& name,
                               NonFinite nonfinite);
  virtual QuantizeTotals quantize_as(const void* values, WeightType type, std::size_t rows, std::size_t cols,
                                     const QuantizeTable& table, std::uint8_t* packed);
  // The statistics of each of `rows` rows of `cols` weights of `type` as they lie (per-channel
  // maps, groups): out[r] those of row r alone, as stats_as() would give them (the CPU's bit for
  // bit); one call for all rows, so that a device sees one batch rather than a call per row. An
  // error names the row, as "<name> row <r>". The default calls stats_as() row by row.
  virtual void row_stats(const void* values, WeightType type, std::size_t rows, std::size_t cols,
                         const std::string& name, NonFinite nonfinite, WeightStats* out);
  // out[r * cols + c] = the level of code (r, c).
  virtual void dequantize(const std::uint8_t* packed, std::size_t rows, std::size_t cols, const QuantizeTable& table,
                          float* out) = 0;

  // y[m, rows] = x[m, cols] * W^T (+ bias) straight from the packed codes.
  virtual void qgemm(const float* x, std::size_t m, const QuantizedMatrix& w, const float* bias, float* y) = 0;

  // `w` made ready for many products on this backend (checked here, once); it keeps a reference
  // to `w`, which must outlive it unchanged.
  virtual std::unique_ptr<PreparedWeights> prepare(const QuantizedMatrix& w) = 0;
  // The same product from weights this backend prepared (others are an error saying so).
  virtual void qgemm(const float* x, std::size_t m, const PreparedWeights& w, const float* bias, float* y) = 0;

  // The same product with dense FP32 weights w[rows, cols]: the baseline the quantized network is
  // measured against (OpenBLAS sgemm on the CPU, cuBLAS SGEMM with TF32 off on CUDA).
  virtual void gemm(const float* x, std::size_t m, const float* w, std::size_t rows, std::size_t cols,
                    const float* bias, float* y) = 0;
};

// The CPU backend: a shared one (it holds no state), or one of your own.
Backend& cpu_backend();
std::unique_ptr<Backend> make_cpu_backend();

// Device::Cpu: the CPU. Device::Cuda: the first CUDA device, or nuq::Error saying why there is
// none. Device::Auto: CUDA when a device is visible, otherwise the CPU.
std::unique_ptr<Backend> make_backend(Device device);

}  // namespace nuq
