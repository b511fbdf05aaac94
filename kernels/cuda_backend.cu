// The CUDA backend: host data streamed through the device in chunks (stream_pipeline.cuh), the
// kernels of weight_stats, quantize and qgemm, and every result brought back to host memory.
#include <cuda_bf16.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <array>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "cublas_check.cuh"
#include "cuda_check.cuh"
#include "device_buffer.cuh"
#include "device_scope.cuh"
#include "device_weights.cuh"
#include "nuq/backend.h"
#include "nuq/cuda.h"
#include "nuq/error.h"
#include "nuq/packed.h"
#include "qgemm.cuh"
#include "qgemm_dequant.cuh"
#include "qgemm_gemv.cuh"
#include "quantize.cuh"
#include "stream_pipeline.cuh"
#include "backend_parts.cuh"
#include "weight_stats.cuh"

namespace nuq::cuda {
namespace {

// Input bytes per chunk at first: large enough that copies run at full PCIe speed, small enough
// that two chunks in flight fit beside anything else on the device. Halved on out-of-memory.
constexpr std::size_t kFirstChunkBytes = std::size_t{256} << 20;
// Where a chunk's totals sit in its pinned output, ahead of the codes.
constexpr std::size_t kHeaderBytes = 256;
static_assert(sizeof(QuantizeTotals) <= kHeaderBytes, "a chunk's totals must fit ahead of its codes");

// Codes and levels resident on one device, so that a network's products move only activations.
// With the mma kernel chosen, widths it takes also get their codes in fragment order.
struct CudaPreparedWeights final : PreparedWeights {
  CudaPreparedWeights(const QuantizedMatrix& w, int device_index, bool fragment_order)
      : PreparedWeights(w), device(device_index), weights(upload_weights(w, "prepare")) {
    if (fragment_order && mma_kernel_bits(w.codes.bits) && w.codes.cols > 0) upload_fragment_order(w, weights);
    // The uploads (a memset, copies from pageable memory) may still be in flight on the legacy
    // stream, which a caller's non-blocking stream (PyTorch's side streams) does not wait for.
    NUQ_CUDA_CHECK(cudaStreamSynchronize(cudaStreamLegacy));
  }
  // A product enqueued on a caller's stream (qgemm_on_device, nuq.qgemm on CUDA tensors) returns
  // before it runs and may still read these codes: after such a product the device's work finishes
  // before they are freed (cudaFree's own synchronisation is not promised). The host path's
  // products have finished when they return. The codes are freed with their device current.
  ~CudaPreparedWeights() override {
    const DeviceScope on_device(device, DeviceScope::NoThrow{});
    if (enqueued_on_caller_stream.load()) NUQ_CUDA_CHECK_NOTHROW(cudaDeviceSynchronize());
    const DeviceWeights released = std::move(weights);
  }
  CudaPreparedWeights(const CudaPreparedWeights&) = delete;
  CudaPreparedWeights& operator=(const CudaPreparedWeights&) = delete;
  int device;
  DeviceWeights weights;
  mutable std::atomic<bool> enqueued_on_caller_stream{false};
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, std::size_t chunk_bytes, Precision precision, QgemmKernel kernel)
      : device_(device), chunk_bytes_(chunk_bytes ? chunk_bytes : kFirstChunkBytes), precision_(precision) {
    NUQ_REQUIRE(chunk_bytes == 0 || chunk_bytes >= kMinTestChunkBytes, "cuda:", device, ": chunks of ", chunk_bytes,
                " bytes; at least ", kMinTestChunkBytes, " (or 0, the default)");
    const cudaDeviceProp prop = device_properties(device_);
    const DeviceScope on_device(device_);  // the slots' streams and buffers belong to it
    name_ = "cuda:" + std::to_string(device_) + " (" + prop.name + ")";
    multiprocessors_ = prop.multiProcessorCount;
    fragment_order_ = kernel == QgemmKernel::Mma && prop.major >= 8;  // below 8.0: the default kernels
    gemv_ = kernel == QgemmKernel::Gemv;
    dequant_cublas_ = kernel == QgemmKernel::DequantCublas;
    slots_ = std::make_unique<std::array<Slot, 2>>();
  }

  std::string name() const override { return name_; }
  int device() const { return device_; }

  WeightStats stats(const float* values, std::size_t count, const std::string& name, NonFinite nonfinite) override {
    const DeviceScope on_device(device_);
    WeightStats result;
    if (count == 0) return result;
    std::size_t chunk = 0;
    reserve([&](std::size_t bytes) {
      chunk = std::min(count, bytes / sizeof(float));
      return Need{chunk * sizeof(float), kHeaderBytes, stats_scratch_bytes(chunk, multiprocessors_)};
    });
    const std::size_t chunks = (count + chunk - 1) / chunk;
    std::vector<StatsPartial> partials(chunks);
    run_pipelined(
        *slots_, chunks,
        [&](std::size_t i, Slot& slot) {
          std::memcpy(slot.host_in.as<float>(), values + i * chunk, size(i, chunk, count) * sizeof(float));
        },
        [&](std::size_t i, Slot& slot) {
          const std::size_t n = size(i, chunk, count);
          cudaStream_t s = slot.stream.get();
          NUQ_CUDA_CHECK(cudaMemcpyAsync(slot.device_in.as<float>(), slot.host_in.as<float>(), n * sizeof(float),
                                         cudaMemcpyHostToDevice, s));
          launch_stats(slot.device_in.as<float>(), n, i * chunk, slot.device_out.as<StatsPartial>(),
                       slot.scratch.as<void>(), scratch_bytes_, multiprocessors_, s);
          NUQ_CUDA_CHECK(cudaMemcpyAsync(slot.host_out.as<void>(), slot.device_out.as<void>(), sizeof(StatsPartial),
                                         cudaMemcpyDeviceToHost, s));
        },
        [&](std::size_t i, Slot& slot) { partials[i] = *slot.host_out.as<StatsPartial>(); });
    std::size_t first_nonfinite = SIZE_MAX;
    for (const StatsPartial& p : partials) {
      result = combine(result, stats_of(p));
      first_nonfinite = std::min<std::size_t>(first_nonfinite, p.first_nonfinite);
    }
    if (result.nonfinite) require_finite(result, nonfinite, name, first_nonfinite, values[first_nonfinite]);
    return result;
  }

  // Every row in one pipeline of chunks of whole rows, a warp per row on the device: a call per
  // row (the base class's) would cost a launch and two copies for every group of 128 weights.
  void row_stats(const void* values, WeightType type, std::size_t rows, std::size_t cols, const std::string& name,
                 NonFinite nonfinite, WeightStats* out) override {
    NUQ_REQUIRE(type == WeightType::F32, name_, " takes weights as float only; widen them first");
    const DeviceScope on_device(device_);
    // One row, or rows so long that a warp each would leave most of the device idle while it
    // streams them (or that one would outgrow a chunk): each row gets the whole grid, a call each.
    if (rows == 1 || cols > kLongRow)
      return Backend::row_stats(values, type, rows, cols, name, nonfinite, out);
    std::fill(out, out + rows, WeightStats{});
    if (cols == 0) return;
    const auto* floats = static_cast<const float*>(values);
    std::size_t per = 0;  // rows a chunk, counting each row's result beside its weights
    reserve([&](std::size_t bytes) {
      per = std::clamp<std::size_t>(bytes / (cols * sizeof(float) + sizeof(StatsPartial)), 1, rows);
      return Need{per * cols * sizeof(float), per * sizeof(StatsPartial), 0};
    });
    const std::size_t chunks = (rows + per - 1) / per;
    std::vector<StatsPartial> partials(rows);
    run_pipelined(
        *slots_, chunks,
        [&](std::size_t i, Slot& slot) {
          std::memcpy(slot.host_in.as<float>(), floats + i * per * cols, size(i, per, rows) * cols * sizeof(float));
        },
        [&](std::size_t i, Slot& slot) {
          const std::size_t n = size(i, per, rows);
          cudaStream_t s = slot.stream.get();
          NUQ_CUDA_CHECK(cudaMemcpyAsync(slot.device_in.as<float>(), slot.host_in.as<float>(), n * cols * sizeof(float),
                                         cudaMemcpyHostToDevice, s));
          launch_row_stats(slot.device_in.as<float>(), n, cols, slot.device_out.as<StatsPartial>(), multiprocessors_, s);
          NUQ_CUDA_CHECK(cudaMemcpyAsync(slot.host_out.as<void>(), slot.device_out.as<void>(), n * sizeof(StatsPartial),
                                         cudaMemcpyDeviceToHost, s));
        },
        [&](std::size_t i, Slot& slot) {
          std::memcpy(partials.data() + i * per, slot.host_out.as<StatsPartial>(),
                      size(i, per, rows) * sizeof(StatsPartial));
        });
    for (std::size_t r = 0; r < rows; ++r) {
      out[r] = stats_of(partials[r]);
      if (out[r].nonfinite && nonfinite != NonFinite::Skip)
        require_finite(out[r], nonfinite, name + " row " + std::to_string(r), partials[r].first_nonfinite,
                       floats[r * cols + partials[r].first_nonfinite]);
    }
  }

  QuantizeTotals quantize(const float* values, std::size_t rows, std::size_t cols, const QuantizeTable& table,
                          std::uint8_t* packed) override {
    const DeviceScope on_device(device_);
    QuantizeTotals totals;
    if (rows == 0 || cols == 0) return totals;
    const DeviceTable& device_table = tables_.on_device(table, rows);  // (one codebook group, or one a row)
    const std::size_t row_bytes = packed_row_bytes(cols, table.bits);
    std::vector<Piece> pieces;
    reserve([&](std::size_t bytes) {
      pieces = cut(rows, cols, bytes / sizeof(float));
      const Piece& big = pieces.front();
      return Need{big.rows * big.cols * sizeof(float), kHeaderBytes + big.rows * packed_row_bytes(big.cols, table.bits),
                  quantize_scratch_bytes(quantize_units(big, table.bits), multiprocessors_)};
    });
    std::vector<QuantizeTotals> parts(pieces.size());
    run_pipelined(
        *slots_, pieces.size(),
        [&](std::size_t i, Slot& slot) { gather(values, cols, pieces[i], slot.host_in.as<float>()); },
        [&](std::size_t i, Slot& slot) {
          const Piece& p = pieces[i];
          cudaStream_t s = slot.stream.get();
          const std::size_t code_bytes = p.rows * packed_row_bytes(p.cols, table.bits);
          NUQ_CUDA_CHECK(cudaMemcpyAsync(slot.device_in.as<float>(), slot.host_in.as<float>(),
                                         p.rows * p.cols * sizeof(float), cudaMemcpyHostToDevice, s));
          auto* out = slot.device_out.as<std::uint8_t>();
          launch_quantize(slot.device_in.as<float>(), p, device_table, out + kHeaderBytes,
                          reinterpret_cast<QuantizeTotals*>(out), slot.scratch.as<void>(), scratch_bytes_,
                          multiprocessors_, s);
          // The totals and the codes, not the header's unwritten rest (compute-sanitizer's initcheck).
          NUQ_CUDA_CHECK(cudaMemcpyAsync(slot.host_out.as<void>(), out, sizeof(QuantizeTotals), cudaMemcpyDeviceToHost, s));
          NUQ_CUDA_CHECK(cudaMemcpyAsync(slot.host_out.as<std::uint8_t>() + kHeaderBytes, out + kHeaderBytes, code_bytes,
                                         cudaMemcpyDeviceToHost, s));
        },
        [&](std::size_t i, Slot& slot) {
          const Piece& p = pieces[i];
          const auto* out = slot.host_out.as<std::uint8_t>();
          std::memcpy(&parts[i], out, sizeof(QuantizeTotals));
          const std::size_t piece_row_bytes = packed_row_bytes(p.cols, table.bits);
          for (std::size_t r = 0; r < p.rows; ++r)
            std::memcpy(packed + (p.first_row + r) * row_bytes + p.first_col * std::size_t(table.bits) / 8,
                        out + kHeaderBytes + r * piece_row_bytes, piece_row_bytes);
        });
    for (const QuantizeTotals& part : parts) totals = combine(totals, part);
    return totals;
  }

  void dequantize(const std::uint8_t* packed, std::size_t rows, std::size_t cols, const QuantizeTable& table,
                  float* out) override {
    const DeviceScope on_device(device_);
    if (rows == 0 || cols == 0) return;
    const DeviceTable& device_table = tables_.on_device(table, rows);
    const std::size_t row_bytes = packed_row_bytes(cols, table.bits);
    std::vector<Piece> pieces;
    reserve([&](std::size_t bytes) {
      pieces = cut(rows, cols, bytes / sizeof(float));
      const Piece& big = pieces.front();
      return Need{big.rows * packed_row_bytes(big.cols, table.bits), big.rows * big.cols * sizeof(float), 0};
    });
    run_pipelined(
        *slots_, pieces.size(),
        [&](std::size_t i, Slot& slot) {
          const Piece& p = pieces[i];
          const std::size_t piece_row_bytes = packed_row_bytes(p.cols, table.bits);
          for (std::size_t r = 0; r < p.rows; ++r)
            std::memcpy(slot.host_in.as<std::uint8_t>() + r * piece_row_bytes,
                        packed + (p.first_row + r) * row_bytes + p.first_col * std::size_t(table.bits) / 8,
                        piece_row_bytes);
        },
        [&](std::size_t i, Slot& slot) {
          const Piece& p = pieces[i];
          cudaStream_t s = slot.stream.get();
          NUQ_CUDA_CHECK(cudaMemcpyAsync(slot.device_in.as<void>(), slot.host_in.as<void>(),
                                         p.rows * packed_row_bytes(p.cols, table.bits), cudaMemcpyHostToDevice, s));
          launch_dequantize(slot.device_in.as<std::uint8_t>(), p, device_table, slot.device_out.as<float>(),
                            multiprocessors_, s);
          NUQ_CUDA_CHECK(cudaMemcpyAsync(slot.host_out.as<void>(), slot.device_out.as<void>(),
                                         p.rows * p.cols * sizeof(float), cudaMemcpyDeviceToHost, s));
        },
        [&](std::size_t i, Slot& slot) {
          const Piece& p = pieces[i];
          for (std::size_t r = 0; r < p.rows; ++r)
            std::memcpy(out + (p.first_row + r) * cols + p.first_col, slot.host_out.as<float>() + r * p.cols,
                        p.cols * sizeof(float));
        });
  }

  void qgemm(const float* x, std::size_t m, const QuantizedMatrix& w, const float* bias, float* y) override {
    check_quantized_matrix(w, "qgemm");
    if (m == 0 || w.codes.rows == 0) return;
    qgemm(x, m, *prepare(w), bias, y);
  }

  std::unique_ptr<PreparedWeights> prepare(const QuantizedMatrix& w) override {
    const DeviceScope on_device(device_);
    return std::make_unique<CudaPreparedWeights>(w, device_, fragment_order_);
  }

  void qgemm(const float* x, std::size_t m, const PreparedWeights& w, const float* bias, float* y) override {
    const auto* prepared = dynamic_cast<const CudaPreparedWeights*>(&w);
    NUQ_REQUIRE(prepared && prepared->device == device_, name_,
                ": qgemm with weights that were not prepared by this backend");
    const DeviceScope on_device(device_);
    const std::size_t n = w.matrix().codes.rows, k = w.matrix().codes.cols;
    if (m == 0 || n == 0) return;
    DeviceBuffer<float> dx(m * k), dy(m * n), db(bias ? n : 0);
    if (m * k) NUQ_CUDA_CHECK(cudaMemcpy(dx.data(), x, m * k * sizeof(float), cudaMemcpyHostToDevice));
    if (bias) NUQ_CUDA_CHECK(cudaMemcpy(db.data(), bias, n * sizeof(float), cudaMemcpyHostToDevice));
    enqueue_qgemm(dx.data(), m, *prepared, bias ? db.data() : nullptr, dy.data(), nullptr);
    NUQ_CUDA_CHECK(cudaMemcpy(y, dy.data(), m * n * sizeof(float), cudaMemcpyDeviceToHost));
  }

  // Y = X W^T + b in device memory on `stream`, through the kernel this backend was made with.
  void enqueue_qgemm(const float* d_x, std::size_t m, const CudaPreparedWeights& w, const float* d_bias, float* d_y,
                     cudaStream_t stream) {
    const DeviceQuantizedMatrix& view = w.weights.view;
    if (dequant_cublas_ && m > kSmallBatch)
      launch_qgemm_dequant_cublas(d_x, m, view, d_bias, false, d_y, bf16_cublas(stream), stream);
    else if (gemv_ && gemv_takes(m, view))
      launch_qgemm_gemv(d_x, m, view, d_bias, false, d_y, stream);
    else if (w.weights.fragment_view.bytes && mma_takes(m, view, w.weights.fragment_view, multiprocessors_))
      launch_qgemm_mma(d_x, m, view, w.weights.fragment_view, d_bias, false, d_y, stream);
    else
      launch_qgemm(d_x, m, view, d_bias, false, d_y, stream, precision_);
  }

  void gemm(const float* x, std::size_t m, const float* w, std::size_t rows, std::size_t cols, const float* bias,
            float* y) override {
    const DeviceScope on_device(device_);
    if (m == 0 || rows == 0) return;
    NUQ_REQUIRE(m <= std::size_t(INT_MAX) && rows <= std::size_t(INT_MAX) && cols <= std::size_t(INT_MAX), "gemm: ",
                m, " x ", rows, " x ", cols, " exceeds cuBLAS's 32-bit dimensions");
    if (!cublas_) {
      NUQ_CUBLAS_CHECK(cublas().create(&cublas_));
      // FP32 in FP32: no TF32 tensor cores, so the baseline is the true single-precision product.
      NUQ_CUBLAS_CHECK(cublas().set_math_mode(cublas_, CUBLAS_PEDANTIC_MATH));
    }
    DeviceBuffer<float> dw(rows * cols), dx(m * cols), dy(m * rows);
    if (rows * cols) NUQ_CUDA_CHECK(cudaMemcpy(dw.data(), w, rows * cols * sizeof(float), cudaMemcpyHostToDevice));
    if (m * cols) NUQ_CUDA_CHECK(cudaMemcpy(dx.data(), x, m * cols * sizeof(float), cudaMemcpyHostToDevice));
    // Row-major Y[m, rows] is column-major Y^T[rows, m] = W (row-major [rows, cols], so op T) * X^T.
    const float one = 1.0f, zero = 0.0f;
    NUQ_CUBLAS_CHECK(cublas().sgemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), int(m), int(cols), &one, dw.data(),
                                 int(cols), dx.data(), int(cols), &zero, dy.data(), int(rows)));
    NUQ_CUDA_CHECK(cudaMemcpy(y, dy.data(), m * rows * sizeof(float), cudaMemcpyDeviceToHost));
    add_bias(bias, m, rows, y);
  }

  ~CudaBackend() override {  // a destructor does not throw: failures are reported, not raised
    // The handles, streams and buffers belong to this backend's device: released with it current,
    // the slots' streams drained first (Stream's destructor), the caller's device given back after.
    const DeviceScope on_device(device_, DeviceScope::NoThrow{});
    slots_.reset();
    tables_.release();
    if (cublas_) NUQ_CUBLAS_CHECK_NOTHROW(cublas().destroy(cublas_));
    for (const auto& [stream, handle] : bf16_cublas_)
      if (handle) NUQ_CUBLAS_CHECK_NOTHROW(cublas().destroy(handle));
  }

 private:
  struct Need {
    std::size_t in, out, scratch;
  };

  static std::size_t size(std::size_t i, std::size_t chunk, std::size_t count) {
    return std::min(chunk, count - i * chunk);
  }

  // Whole rows per piece when a row fits the chunk, otherwise each row in 16-column-aligned parts.
  static std::vector<Piece> cut(std::size_t rows, std::size_t cols, std::size_t elements) {
    std::vector<Piece> pieces;
    if (cols <= elements) {
      const std::size_t per = std::max<std::size_t>(1, elements / cols);
      for (std::size_t r = 0; r < rows; r += per) pieces.push_back({r, std::min(per, rows - r), 0, cols, cols});
      return pieces;
    }
    const std::size_t width = std::max<std::size_t>(16, elements / 16 * 16);
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t c = 0; c < cols; c += width) pieces.push_back({r, 1, c, std::min(width, cols - c), cols});
    return pieces;
  }

  static void gather(const float* values, std::size_t cols, const Piece& p, float* into) {
    if (p.cols == cols) {
      std::memcpy(into, values + p.first_row * cols, p.rows * cols * sizeof(float));
      return;
    }
    for (std::size_t r = 0; r < p.rows; ++r)
      std::memcpy(into + r * p.cols, values + (p.first_row + r) * cols + p.first_col, p.cols * sizeof(float));
  }

  // Sizes the two slots for the plan `plan(chunk_bytes)` returns, halving the chunk while the
  // device is out of memory; below kMinChunkBytes that is an error that says so.
  template <typename Plan>
  void reserve(const Plan& plan) {
    for (;;) {
      const Need need = plan(chunk_bytes_);
      bool fits = true;
      for (Slot& slot : *slots_) {
        fits = fits && slot.device_in.try_reserve(need.in) && slot.device_out.try_reserve(need.out) &&
               slot.scratch.try_reserve(std::max<std::size_t>(need.scratch, 1));
        if (!fits) break;
        slot.host_in.reserve(need.in);
        slot.host_out.reserve(need.out);
      }
      if (fits) {
        scratch_bytes_ = need.scratch;
        return;
      }
      std::size_t free_bytes = 0, total_bytes = 0;
      NUQ_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
      NUQ_REQUIRE(chunk_bytes_ / 2 >= kMinChunkBytes, name_, ": out of device memory: two chunks of ",
                  need.in >> 20, " MiB do not fit (", free_bytes >> 20, " MiB free of ", total_bytes >> 20,
                  "); free the device or use the CPU (--device cpu, device='cpu' in Python)");
      chunk_bytes_ /= 2;
      slots_ = std::make_unique<std::array<Slot, 2>>();  // give back what the larger chunk took
    }
  }

  int device_ = 0;
  std::size_t chunk_bytes_;
  Precision precision_;
  bool fragment_order_ = false;  // QgemmKernel::Mma on a device that has it
  bool gemv_ = false;            // QgemmKernel::Gemv
  bool dequant_cublas_ = false;  // QgemmKernel::DequantCublas
  // cuBLAS with its default math for the BF16 products of DequantCublas (the FP32 gemm's handle is
  // pedantic): a handle per stream, made by the first product on it. Python's threads multiply
  // through one backend per device at once, each on its own stream (the GIL released); one handle
  // retargeted by cublasSetStream would send a thread's product to another thread's stream, and
  // products running at once on two streams would share its workspace.
  std::mutex bf16_cublas_mutex_;
  std::map<cudaStream_t, cublasHandle_t> bf16_cublas_;
  cublasHandle_t bf16_cublas(cudaStream_t stream) {
    const std::lock_guard<std::mutex> lock(bf16_cublas_mutex_);
    cublasHandle_t& handle = bf16_cublas_[stream];  // (launch_qgemm_dequant_cublas sets its stream)
    if (!handle) NUQ_CUBLAS_CHECK(cublas().create(&handle));
    return handle;
  }
  std::string name_;
  int multiprocessors_ = 0;
  std::unique_ptr<std::array<Slot, 2>> slots_;
  TableCache tables_;  // the last quantize or dequantize call's
  std::size_t scratch_bytes_ = 0;
  cublasHandle_t cublas_ = nullptr;  // created by the first gemm
};

}  // namespace

std::unique_ptr<Backend> make_backend(int device, std::size_t chunk_bytes, Precision precision, QgemmKernel kernel) {
  return std::make_unique<CudaBackend>(device, chunk_bytes, precision, kernel);
}

void qgemm_on_device(Backend& backend, const float* d_x, std::size_t m, const PreparedWeights& w, const float* d_bias,
                     float* d_y, std::uintptr_t stream) {
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  const auto* prepared = dynamic_cast<const CudaPreparedWeights*>(&w);
  NUQ_REQUIRE(cuda && prepared && prepared->device == cuda->device(), backend.name(),
              ": qgemm_on_device takes weights this CUDA backend prepared");
  const DeviceScope on_device(prepared->device);
  if (m == 0 || prepared->weights.view.n == 0) return;
  prepared->enqueued_on_caller_stream.store(true);
  cuda->enqueue_qgemm(d_x, m, *prepared, d_bias, d_y, reinterpret_cast<cudaStream_t>(stream));
}

void qgemm_bf16_activations(const std::uint16_t* x, std::size_t m, const QuantizedMatrix& w, const float* bias,
                            float* y, int device) {
  const DeviceScope on_device(device);
  const DeviceWeights weights = upload_weights(w, "qgemm_bf16_activations");
  const std::size_t n = w.codes.rows, k = w.codes.cols;
  if (m == 0 || n == 0) return;
  static_assert(sizeof(__nv_bfloat16) == sizeof(std::uint16_t), "BF16 is 16 bits");
  DeviceBuffer<__nv_bfloat16> dx(m * k);
  DeviceBuffer<float> dy(m * n), db(bias ? n : 0);
  if (m * k) NUQ_CUDA_CHECK(cudaMemcpy(dx.data(), x, m * k * sizeof(std::uint16_t), cudaMemcpyHostToDevice));
  if (bias) NUQ_CUDA_CHECK(cudaMemcpy(db.data(), bias, n * sizeof(float), cudaMemcpyHostToDevice));
  launch_qgemm(dx.data(), m, weights.view, bias ? db.data() : nullptr, false, dy.data(), nullptr);
  NUQ_CUDA_CHECK(cudaMemcpy(y, dy.data(), m * n * sizeof(float), cudaMemcpyDeviceToHost));
}

}  // namespace nuq::cuda
