// The CUDA backend for weights already in device memory (cuda::make_device_resident_backend): the
// statistics, row statistics and quantization kernels read the caller's device pointers where
// they lie, with no copy to the host or staging through pinned buffers; only statistics, totals
// and the packed codes (a sixteenth of FP32 weights at two bits) come back. Python's nuq.quantize
// takes a PyTorch CUDA tensor this way.
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cuda_check.cuh"
#include "device_buffer.cuh"
#include "device_scope.cuh"
#include "nuq/backend.h"
#include "nuq/cuda.h"
#include "nuq/error.h"
#include "nuq/packed.h"
#include "quantize.cuh"
#include "backend_parts.cuh"
#include "weight_stats.cuh"

namespace nuq::cuda {
namespace {

// Weights quantized per launch: bounds the codes' device buffer, each launch's index range, and
// the float scratch 16-bit weights are widened into.
constexpr std::size_t kLaunchWeights = std::size_t{1} << 26;

// FP32 values of 16-bit weights (exact: every BF16 and F16 value is a float).
__global__ void widen_kernel(const std::uint16_t* __restrict__ in, bool bf16, std::size_t count,
                             float* __restrict__ out) {
  for (std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += std::size_t(gridDim.x) * blockDim.x)
    out[i] = bf16 ? __uint_as_float(std::uint32_t(in[i]) << 16) : __half2float(__ushort_as_half(in[i]));
}

class DeviceResidentBackend final : public Backend {
 public:
  explicit DeviceResidentBackend(int device) : device_(device) {
    const cudaDeviceProp prop = device_properties(device_);
    const DeviceScope on_device(device_);  // its buffers live on that device, whichever the caller's is
    name_ = "cuda:" + std::to_string(device_) + " (" + prop.name + "), weights in device memory";
    multiprocessors_ = prop.multiProcessorCount;
    totals_ = DeviceBuffer<QuantizeTotals>(1);
    scratch_ = DeviceBuffer<std::uint8_t>(quantize_scratch_bytes(0, multiprocessors_));
  }

  ~DeviceResidentBackend() override {  // its buffers are freed with their device current
    const DeviceScope on_device(device_, DeviceScope::NoThrow{});
    tables_.release();
    codes_.buffer.reset();
    widened_.buffer.reset();
    totals_ = DeviceBuffer<QuantizeTotals>(0);
    scratch_ = DeviceBuffer<std::uint8_t>(0);
  }
  DeviceResidentBackend(const DeviceResidentBackend&) = delete;
  DeviceResidentBackend& operator=(const DeviceResidentBackend&) = delete;

  std::string name() const override { return name_; }

  // F16 and BF16 as they lie too: widened on the device a launch's worth at a time, so that a
  // 16-bit model is never held twice.
  bool reads(WeightType) const override { return true; }

  WeightStats stats_as(const void* values, WeightType type, std::size_t count, const std::string& name,
                       NonFinite nonfinite) override {
    if (type == WeightType::F32) return stats(static_cast<const float*>(values), count, name, nonfinite);
    WeightStats all;
    for (std::size_t first = 0; first < count; first += kLaunchWeights) {
      const std::size_t n = std::min(kLaunchWeights, count - first);
      const float* floats = widen(values, type, first, n);
      try {
        all = combine(all, stats(floats, n, name, nonfinite));
      } catch (const NonFiniteWeight& e) {  // its index counts from this launch's first weight
        throw NonFiniteWeight(name, first + e.index, e.value);
      }
    }
    return all;
  }

  QuantizeTotals quantize_as(const void* values, WeightType type, std::size_t rows, std::size_t cols,
                             const QuantizeTable& table, std::uint8_t* packed) override {
    if (type == WeightType::F32) return quantize(static_cast<const float*>(values), rows, cols, table, packed);
    NUQ_REQUIRE(cols <= kLaunchWeights, name_, ": rows of ", cols, " 16-bit weights exceed a launch (",
                kLaunchWeights, "); widen them first");
    return quantize_launches(rows, cols, table, packed, [&](std::size_t first, std::size_t n) {
      return widen(values, type, first * cols, n * cols);
    });
  }

  WeightStats stats(const float* d_values, std::size_t count, const std::string& name, NonFinite nonfinite) override {
    const DeviceScope on_device(device_);
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

  // A warp per row, rows a launch's worth at a time (widened first when 16-bit).
  void row_stats(const void* values, WeightType type, std::size_t rows, std::size_t cols, const std::string& name,
                 NonFinite nonfinite, WeightStats* out) override {
    const DeviceScope on_device(device_);
    if (rows == 1 || cols > kLongRow) return Backend::row_stats(values, type, rows, cols, name, nonfinite, out);
    std::fill(out, out + rows, WeightStats{});
    if (rows == 0 || cols == 0) return;
    const std::size_t per_launch = std::clamp<std::size_t>(kLaunchWeights / cols, 1, rows);
    DeviceBuffer<StatsPartial> partials(per_launch);
    std::vector<StatsPartial> host(per_launch);
    for (std::size_t first = 0; first < rows; first += per_launch) {
      const std::size_t n = std::min(per_launch, rows - first);
      const float* d_values = type == WeightType::F32 ? static_cast<const float*>(values) + first * cols
                                                      : widen(values, type, first * cols, n * cols);
      launch_row_stats(d_values, n, cols, partials.data(), multiprocessors_, nullptr);
      NUQ_CUDA_CHECK(cudaMemcpy(host.data(), partials.data(), n * sizeof(StatsPartial), cudaMemcpyDeviceToHost));
      for (std::size_t r = 0; r < n; ++r) {
        out[first + r] = stats_of(host[r]);
        if (out[first + r].nonfinite && nonfinite != NonFinite::Skip)
          require_finite(out[first + r], nonfinite, name + " row " + std::to_string(first + r), host[r].first_nonfinite,
                         value_at(d_values + r * cols, host[r].first_nonfinite));
      }
    }
  }

  QuantizeTotals quantize(const float* d_values, std::size_t rows, std::size_t cols, const QuantizeTable& table,
                          std::uint8_t* packed) override {
    return quantize_launches(rows, cols, table, packed,
                             [&](std::size_t first, std::size_t) { return d_values + first * cols; });
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
  [[noreturn]] void refuse(const char* what) const {
    throw InternalError(name_ + ": " + what + " takes host memory; use the CUDA backend of make_backend");
  }

  // Whole rows a launch (a row longer than kLaunchWeights is a launch of its own), each launch's
  // codes brought back into its rows of `packed`; rows_at(first, n) gives the floats of rows
  // [first, first + n) in device memory.
  template <typename RowsAt>
  QuantizeTotals quantize_launches(std::size_t rows, std::size_t cols, const QuantizeTable& table,
                                   std::uint8_t* packed, RowsAt rows_at) {
    QuantizeTotals totals;
    if (rows == 0 || cols == 0) return totals;
    const DeviceScope on_device(device_);
    const DeviceTable& device_table = tables_.on_device(table, rows);  // (one codebook group, or one a row)
    const std::size_t per_launch = std::clamp<std::size_t>(kLaunchWeights / cols, 1, rows);
    for (std::size_t first = 0; first < rows; first += per_launch) {
      const std::size_t n = std::min(per_launch, rows - first);
      totals = combine(totals, quantize_rows(rows_at(first, n), first, n, cols, device_table,
                                             packed + first * packed_row_bytes(cols, table.bits)));
    }
    return totals;
  }

  // Rows [first, first + rows) of a call over `table` (one group, or one per row of the call),
  // their weights at d_values, their codes into `packed` (host memory): one launch.
  QuantizeTotals quantize_rows(const float* d_values, std::size_t first, std::size_t rows, std::size_t cols,
                               const DeviceTable& table, std::uint8_t* packed) {
    const DeviceScope on_device(device_);
    const std::size_t row_bytes = packed_row_bytes(cols, table.bits);
    codes_.reserve_at_least(rows * row_bytes);
    Piece p;
    p.first_row = first;
    p.rows = rows;
    p.cols = p.total_cols = cols;
    launch_quantize(d_values, p, table, codes_.data(), totals_.data(), scratch_.data(), scratch_.size(),
                    multiprocessors_, nullptr);
    QuantizeTotals t;
    NUQ_CUDA_CHECK(cudaMemcpy(&t, totals_.data(), sizeof t, cudaMemcpyDeviceToHost));
    NUQ_CUDA_CHECK(cudaMemcpy(packed, codes_.data(), rows * row_bytes, cudaMemcpyDeviceToHost));
    return t;
  }

  // Elements [first, first + count) of 16-bit weights as floats in scratch (count <= kLaunchWeights).
  const float* widen(const void* values, WeightType type, std::size_t first, std::size_t count) {
    const DeviceScope on_device(device_);
    widened_.reserve_at_least(count);
    const auto* in = static_cast<const std::uint16_t*>(values) + first;
    const unsigned blocks = unsigned(std::min<std::size_t>((count + 255) / 256, 4096));
    if (count) widen_kernel<<<blocks, 256>>>(in, type == WeightType::BF16, count, widened_.data());
    NUQ_CUDA_CHECK_LAUNCH();
    return widened_.data();
  }

  // One weight, for an error message that names it.
  static float value_at(const float* d_values, std::size_t index) {
    float v = 0.0f;
    NUQ_CUDA_CHECK(cudaMemcpy(&v, d_values + index, sizeof v, cudaMemcpyDeviceToHost));
    return v;
  }

  // Device memory that grows to the largest request and is kept for the next.
  template <typename T>
  struct Grown {
    std::unique_ptr<DeviceBuffer<T>> buffer;
    void reserve_at_least(std::size_t count) {
      if (!buffer || buffer->size() < count) buffer = std::make_unique<DeviceBuffer<T>>(count);
    }
    T* data() const { return buffer->data(); }
    std::size_t size() const { return buffer->size() * sizeof(T); }
  };

  int device_;
  std::string name_;
  int multiprocessors_ = 0;
  TableCache tables_;
  Grown<std::uint8_t> codes_;
  Grown<float> widened_;
  DeviceBuffer<QuantizeTotals> totals_{0};
  DeviceBuffer<std::uint8_t> scratch_{0};
};

}  // namespace

std::unique_ptr<Backend> make_device_resident_backend(int device) {
  return std::make_unique<DeviceResidentBackend>(device);
}

}  // namespace nuq::cuda
