// What the CUDA backend offers the rest of nuq, without any CUDA header: the library is built
// with kernels/ when nvcc is present (NUQ_CUDA), and with a stand-in that reports "not built"
// otherwise, so callers never need #ifdefs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nuq/backend.h"
#include "nuq/codebook.h"
#include "nuq/laplace.h"

namespace nuq::cuda {

// Whether this build contains the CUDA backend.
bool compiled();

// The arithmetic of the quantized GEMM's large-batch path: FP32 on CUDA cores (the CPU's results
// to rounding), or BF16 tensor cores (X and the levels rounded to BF16, FP32 accumulation).
enum class Precision { Fp32, Bf16 };

// The kernel of qgemm's small batches. Default: the streaming kernels (FP32 arithmetic, and the
// BF16 tensor-core tiles above 16 rows with Precision::Bf16). Mma: batches up to 64 rows of 2-, 4-
// and 8-bit codes on the tensor-core kernel that reads codes in fragment order (prepare lays them
// out once, nuq/mma_prepack.h; X and the levels rounded to BF16, FP32 accumulation); other widths
// and larger batches stay on the default kernels. Gemv: batches of 1 to 4 rows on the CUDA-core
// GEMV (FP32 arithmetic as Default; X staged once per block, each read of it serving four rows of
// W) where rows hold at least 512 bytes of codes; others stay on the default kernels.
// DequantCublas: batches above 16 rows through W decoded to BF16 a band of rows at a time and
// cuBLAS's BF16 GEMM (X and the levels rounded to BF16, FP32 accumulation); smaller ones on the
// default kernels. All three are opt-in until a GPU run has measured them against the default.
enum class QgemmKernel { Default, Mma, Gemv, DequantCublas };

struct DeviceInfo {
  int index = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  std::size_t global_memory_bytes = 0;
  int multiprocessors = 0;
  std::size_t shared_memory_per_block_optin = 0;
  std::size_t l2_bytes = 0;
  int memory_clock_khz = 0, memory_bus_bits = 0, sm_clock_khz = 0;  // peak clocks, as the device reports them
};

// The device memory's peak bandwidth from its clock and bus width (two transfers a clock), GB/s:
// the datasheet's figure without a datasheet (H100 SXM 3.35 TB/s, H200 4.8 TB/s).
double peak_bandwidth_gbs(const DeviceInfo& device);

// The devices the runtime can see. Never throws: no driver, no device or a build without CUDA
// all give an empty list, and `unavailable_reason()` says which.
std::vector<DeviceInfo> devices();
std::string unavailable_reason();

// The cuBLAS this build opens on first use (it is not linked; kernels/cublas_library.cuh): its
// version and the file the loader found, e.g. "13.0.2 (/usr/local/cuda/lib64/libcublas.so.13)".
// Opens it if no call has yet. Throws nuq::Error saying why it cannot be loaded, or that the CUDA
// backend is not built.
std::string cublas_library();

// The exact Laplacian distortion of many codebooks at once (sweeps over x_max, searches over
// designs), one thread block per codebook, double precision. Throws nuq::Error when CUDA is
// unavailable or a CUDA call fails (with file:line and the CUDA message).
std::vector<Distortion> laplace_distortion_batch(const std::vector<Codebook>& codebooks,
                                                 double sigma, int device = 0);

// The CUDA backend on device `device`: statistics, the fused quantization pass, dequantization
// and the quantized GEMM, streaming host data through pinned buffers on two streams. Throws
// nuq::Error naming the reason when CUDA or the device is unavailable. `chunk_bytes` (0: 256 MiB)
// is the input streamed per chunk; tests make it small to cut small inputs into many chunks (at
// least kMinTestChunkBytes: a chunk of fewer bytes than a float would hold no weight).
// `precision` is the arithmetic of qgemm's large batches (FP32 unless asked), `kernel` that of its
// small ones.
constexpr std::size_t kMinTestChunkBytes = 256;
std::unique_ptr<Backend> make_backend(int device = 0, std::size_t chunk_bytes = 0,
                                      Precision precision = Precision::Fp32,
                                      QgemmKernel kernel = QgemmKernel::Default);

// A backend for weights already in memory of `device` (a PyTorch CUDA tensor's data, say): its
// stats, row_stats and quantize take device pointers to FP32 weights and read them where they
// lie; statistics, totals and the packed codes come back to host memory. Everything else
// (dequantize, qgemm, gemm, prepare) throws: the backend of make_backend takes host memory for it.
std::unique_ptr<Backend> make_device_resident_backend(int device = 0);

// Y[m, n] = X[m, k] W^T (+ bias) with X, Y and the bias in device memory of the device whose
// make_backend `backend` prepared `w`, enqueued on `stream` (a cudaStream_t as an integer, e.g.
// torch.cuda.current_stream().cuda_stream; 0: the legacy default stream), not waited for.
void qgemm_on_device(Backend& backend, const float* d_x, std::size_t m, const PreparedWeights& w, const float* d_bias,
                     float* d_y, std::uintptr_t stream);

// y[m, rows] = x[m, cols] * W^T (+ bias) on `device` with X in BF16, given as its raw 16-bit
// patterns (row-major, as torch.bfloat16 stores them), and Y in FP32: batches up to 16 on the
// streaming kernels (each element widened to FP32 exactly), larger ones on BF16 tensor cores
// (compute capability 8.0 or newer; the levels rounded to BF16). Host memory in and out.
void qgemm_bf16_activations(const std::uint16_t* x, std::size_t m, const QuantizedMatrix& w, const float* bias,
                            float* y, int device = 0);

}  // namespace nuq::cuda

namespace nuq::cuda {

// Device-resident timings for bench/ (CUDA events, milliseconds per run, the median of `runs`
// after a warm-up of at least 100 ms). Twice the L2's size is read before every timed run, so each
// starts from a cold cache: small packed weights are not timed from the L2 while their FP32 peers
// come from HBM. The products are checked against a host reference on sampled outputs and the
// pipeline's codes against quantize_ref afterwards: a wrong result throws nuq::Error, never a time.

// A device-to-device copy of `bytes`: the bandwidth the memory-bound kernels are measured against
// (count the bytes read and written: 2 * bytes per run).
double time_copy(std::size_t bytes, int runs, int device = 0);
// A kernel that reads `bytes` and writes nothing: the ceiling of a kernel that streams as many
// bytes of codes, launch and tail included (count the bytes read: bytes per run).
double time_read(std::size_t bytes, int runs, int device = 0);

// The whole weight pipeline on `count` weights already on the device: statistics, the table built
// from them on the host, the fused quantize-pack-error pass; and a device-to-device copy of the
// same FP32 bytes, the bandwidth it is measured against.
struct PipelineTimes {
  double pipeline_ms = 0.0, copy_ms = 0.0;
};
PipelineTimes time_pipeline(std::size_t count, const Codebook& codebook, int bits, int runs, int device = 0);

// Y[m, n] = X[m, k] W^T from `bits`-bit codes (X in BF16 with Precision::Bf16 or QgemmKernel::Mma,
// as the cuBLAS BF16 peer reads it), and the cuBLAS peers on dense weights. QgemmKernel::Mma times
// the fragment-order tensor-core kernel itself (m <= 64, 2/4/8 bits; others throw), Gemv the GEMV
// itself (m <= 4, k of at least 4096 / bits; others throw), DequantCublas the decode and cuBLAS
// products at any m (X in BF16).
enum class DensePeer { Fp32, Tf32, Bf16 };
double time_qgemm(std::size_t m, std::size_t n, std::size_t k, int bits, int runs, int device = 0,
                  Precision precision = Precision::Fp32, QgemmKernel kernel = QgemmKernel::Default);
double time_cublas(std::size_t m, std::size_t n, std::size_t k, DensePeer peer, int runs, int device = 0);

}  // namespace nuq::cuda

namespace nuq {
struct Model;
struct QuantizedModel;
namespace io {
struct Dataset;
}
}  // namespace nuq

namespace nuq::cuda {

// The MNIST MLP (784 -> 512 -> 512 -> 10) resident on the device: the images are uploaded once and
// the three dense layers run back to back on one stream without touching the host, in batches of
// `batch` images. `quantized` null: the FP32 weights on cuBLAS SGEMM (TF32 off) with a bias + ReLU
// kernel, the baseline; otherwise its packed codes through the qgemm kernels (bias and ReLU fused)
// with the quantized model's own (dequantized) biases, so that it is the network the CPU runs.
// The time covers every batch's forward pass and argmax (CUDA events, after one warm-up pass),
// not the upload of images and weights.
struct DeviceInference {
  std::vector<std::uint8_t> predictions;  // one class per image
  double milliseconds = 0.0;
};
// `precision` applies to the quantized layers (FP32 or BF16 tensor cores above kSmallBatch images).
// Quantized batches of up to 4 images run the whole MLP in one kernel (kernels/fused_mlp.cu): on
// one multiprocessor (OneBlockPerBatch), or spread over a cluster of 8 sharing the activations in
// distributed shared memory (ClusterPerBatch, compute capability 9.0; below, one block). The
// cluster is opt-in until a GPU run has measured the two.
enum class MlpLayout { OneBlockPerBatch, ClusterPerBatch };
DeviceInference infer_mlp(const Model& model, const QuantizedModel* quantized, const io::Dataset& data,
                          std::size_t batch, int device = 0, Precision precision = Precision::Fp32,
                          MlpLayout layout = MlpLayout::OneBlockPerBatch);

}  // namespace nuq::cuda
