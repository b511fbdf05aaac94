// The CUDA backend for weights already in device memory (cuda::make_device_resident_backend): the
// statistics, row statistics and quantization kernels read the caller's device pointers where
// they lie, with no copy to the host or staging through pinned buffers; only statistics, totals
// and the packed codes (a sixteenth of FP32 weights at two bits) come back. Python's nuq.quantize
// takes a PyTorch CUDA tensor this way.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "cuda_check.cuh"
#include "device_buffer.cuh"
#include "nuq/backend.h"
#include "nuq/cuda.h"
#include "nuq/error.h"
#include "nuq/packed.h"
#include "quantize.cuh"
#include "backend_parts.cuh"
#include "weight_stats.cuh"

namespace nuq::cuda {
namespace {

// Weights quantized per launch: bounds the codes' device buffer and each launch's index range.
constexpr std::size_t kLaunchWeights = std::size_t{1} << 26;

class DeviceResidentBackend final : public Backend {
 public:
  explicit DeviceResidentBackend(int device) : device_(device) {
    const cudaDeviceProp prop = select_device(device_);
    name_ = "cuda:" + std::to_string(device_) + " (" + prop.name + "), weights in device memory";
    multiprocessors_ = prop.multiProcessorCount;
  }

  std::string name() const override { return name_; }

  WeightStats stats(const float* d_values, std::size_t count, const std::string& name, NonFinite nonfinite) override {
    NUQ_CUDA_CHECK(cudaSetDevice(device_));
    if (count == 0) return {};
    DeviceBuffer<StatsPartial> partial(1);
    DeviceBuffer<std::uint8_t> scratch(stats_scratch_bytes(count, multiprocessors_));
    launch_stats(d_values, count, 0, partial.data(), scratch.data(), scratch.size(), multiprocessors_, nullptr);
    StatsPartial p{};
    NUQ_CUDA_CHECK(cudaMemcpy(&p, partial.data(), sizeof p, cudaMemcpyDeviceToHost));
    const WeightStats result = stats_of(p);
    if (result.nonfinite) require_finite(result, nonfinite, name, p.first_nonfinite, value_at(d_values, p.first_nonfinite));
    return result;
  }

  void row_stats(const void* values, WeightType type, std::size_t rows, std::size_t cols, const std::string& name,
                 NonFinite nonfinite, WeightStats* out) override {
    NUQ_REQUIRE(type == WeightType::F32, name_, " takes weights as float only");
    NUQ_CUDA_CHECK(cudaSetDevice(device_));
    if (rows == 1 || cols > kLongRow) return Backend::row_stats(values, type, rows, cols, name, nonfinite, out);
    std::fill(out, out + rows, WeightStats{});
    if (rows == 0 || cols == 0) return;
    const auto* d_values = static_cast<const float*>(values);
    DeviceBuffer<StatsPartial> partials(rows);
    launch_row_stats(d_values, rows, cols, partials.data(), multiprocessors_, nullptr);
    std::vector<StatsPartial> host(rows);
    NUQ_CUDA_CHECK(cudaMemcpy(host.data(), partials.data(), rows * sizeof(StatsPartial), cudaMemcpyDeviceToHost));
    for (std::size_t r = 0; r < rows; ++r) {
      out[r] = stats_of(host[r]);
      if (out[r].nonfinite && nonfinite != NonFinite::Skip)
        require_finite(out[r], nonfinite, name + " row " + std::to_string(r), host[r].first_nonfinite,
                       value_at(d_values + r * cols, host[r].first_nonfinite));
    }
  }

  // Whole rows a launch (a row longer than kLaunchWeights is a launch of its own), each launch's
  // codes brought back into its rows of `packed`.
  QuantizeTotals quantize(const float* d_values, std::size_t rows, std::size_t cols, const QuantizeTable& table,
                          std::uint8_t* packed) override {
    NUQ_CUDA_CHECK(cudaSetDevice(device_));
    QuantizeTotals totals;
    if (rows == 0 || cols == 0) return totals;
    const UploadedTable device_table(table, rows);  // (one codebook group, or one a row)
    const std::size_t row_bytes = packed_row_bytes(cols, table.bits);
    const std::size_t per_launch = std::clamp<std::size_t>(kLaunchWeights / cols, 1, rows);
    DeviceBuffer<std::uint8_t> codes(per_launch * row_bytes);
    DeviceBuffer<QuantizeTotals> part(1);
    DeviceBuffer<std::uint8_t> scratch(quantize_scratch_bytes(0, multiprocessors_));
    for (std::size_t first = 0; first < rows; first += per_launch) {
      Piece p;
      p.first_row = first;
      p.rows = std::min(per_launch, rows - first);
      p.cols = p.total_cols = cols;
      launch_quantize(d_values + first * cols, p, device_table.view, codes.data(), part.data(), scratch.data(),
                      scratch.size(), multiprocessors_, nullptr);
      QuantizeTotals t;
      NUQ_CUDA_CHECK(cudaMemcpy(&t, part.data(), sizeof t, cudaMemcpyDeviceToHost));
      NUQ_CUDA_CHECK(cudaMemcpy(packed + first * row_bytes, codes.data(), p.rows * row_bytes, cudaMemcpyDeviceToHost));
      totals = combine(totals, t);
    }
    return totals;
  }

  // What the quantizer does not ask of it: the streaming CUDA backend takes host memory for these.
  void dequantize(const std::uint8_t*, std::size_t, std::size_t, const QuantizeTable&, float*) override { refuse("dequantize"); }
  void qgemm(const float*, std::size_t, const QuantizedMatrix&, const float*, float*) override { refuse("qgemm"); }
  std::unique_ptr<PreparedWeights> prepare(const QuantizedMatrix&) override { refuse("prepare"); }
  void qgemm(const float*, std::size_t, const PreparedWeights&, const float*, float*) override { refuse("qgemm"); }
  void gemm(const float*, std::size_t, const float*, std::size_t, std::size_t, const float*, float*) override {
    refuse("gemm");
  }

 private:
  // Rows longer than this take the whole device each (a warp per row would leave it idle).
  static constexpr std::size_t kLongRow = 16 * 4096;

  [[noreturn]] void refuse(const char* what) const {
    throw InternalError(name_ + ": " + what + " takes host memory; use the CUDA backend of make_backend");
  }

  // One weight, for an error message that names it.
  static float value_at(const float* d_values, std::size_t index) {
    float v = 0.0f;
    NUQ_CUDA_CHECK(cudaMemcpy(&v, d_values + index, sizeof v, cudaMemcpyDeviceToHost));
    return v;
  }

  int device_;
  std::string name_;
  int multiprocessors_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_device_resident_backend(int device) {
  return std::make_unique<DeviceResidentBackend>(device);
}

}  // namespace nuq::cuda
