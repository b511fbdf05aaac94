// Timings for bench/: the device-resident weight pipeline, the quantized GEMM, their peers (the
// device copy and read, cuBLAS), each the median of `runs` event-timed runs, each run from a cold
// L2, after a warm-up long enough for the clocks to rise. Every timed product is then checked
// against a host reference on sampled outputs, and the pipeline's codes against quantize_ref: a
// kernel that is wrong at a benchmark's shape throws (its row is skipped with the error), never
// reported as fast.
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <sstream>
#include <tuple>
#include <vector>

#include "cuda_check.cuh"
#include "device_buffer.cuh"
#include "device_weights.cuh"
#include "device_scope.cuh"
#include "nuq/cuda.h"
#include "nuq/error.h"
#include "nuq/packed.h"
#include "nuq/quantize_table.h"
#include "cublas_check.cuh"
#include "nuq/mma_fragment.h"
#include "nuq/mma_prepack.h"
#include "qgemm.cuh"
#include "qgemm_dequant.cuh"
#include "qgemm_gemv.cuh"
#include "qgemm_mma.cuh"
#include "quantize.cuh"
#include "weight_stats.cuh"

namespace nuq::cuda {
namespace {

// Reads `words` 16-byte words and keeps nothing (the xor is stored only in a case that does not
// arise, so that the loads stay): the L2 flush, and the read whose bandwidth bounds the kernels
// that stream their codes.
// Four independent loads a thread at a time, so that each warp keeps 2 KiB in flight: one load a
// turn (the xor waiting on it) would leave HBM3e's bandwidth-delay product unfilled and understate
// the ceiling.
__global__ void read_words_kernel(const uint4* words, std::size_t count, unsigned* sink) {
  unsigned x = 0;
  const std::size_t stride = std::size_t(gridDim.x) * blockDim.x;
  std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  for (; i + 3 * stride < count; i += 4 * stride) {
    const uint4 a = words[i], b = words[i + stride], c = words[i + 2 * stride], d = words[i + 3 * stride];
    x ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w;
  }
  for (; i < count; i += stride) {
    const uint4 v = words[i];
    x ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (x == 0x9E3779B9u) *sink = x;
}

void read_words(const void* bytes, std::size_t count, unsigned* sink, int multiprocessors) {
  const unsigned blocks = unsigned(std::min<std::size_t>((count + 255) / 256, std::size_t(8) * multiprocessors));
  if (blocks) read_words_kernel<<<blocks, 256>>>(static_cast<const uint4*>(bytes), count, sink);
  NUQ_CUDA_CHECK_LAUNCH();
}

// Keeps the device busy for `nanoseconds` (its global timer): queued between the flush and the
// start event, it gives the host time to enqueue the timed run before the start event is reached,
// so that a run of a few microseconds is not charged the host's launch latency (microseconds, and
// more under a sandboxed runtime, or where a run launches several kernels or takes pool memory).
__global__ void wait_kernel(long long nanoseconds) {
  long long start = 0, now = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (now - start < nanoseconds);
}

int multiprocessors_of(int device) {
  int sms = 0;
  NUQ_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms;
}

// Every timed run starts with a cold L2: the flush reads twice the L2's size, which evicts what
// the previous run (or the upload) left there. nuq and every peer are timed so, so that small
// packed weights are never read from the cache while their larger FP32 peers stream from memory.
// Read, not written: a written flush would leave the L2 full of dirty lines, written back to
// memory during the timed run and charged to it (most to the runs that move the fewest bytes).
class L2Flush {
 public:
  explicit L2Flush(int device) : multiprocessors_(multiprocessors_of(device)) {
    int l2 = 0;
    NUQ_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
    scratch_ = DeviceBuffer<uint4>(std::max<std::size_t>(2 * std::size_t(l2) / sizeof(uint4), 1));
    NUQ_CUDA_CHECK(cudaMemset(scratch_.data(), 0, scratch_.size() * sizeof(uint4)));
    NUQ_CUDA_CHECK(cudaDeviceSynchronize());  // (the first warm-up's flush evicts the memset's lines)
  }
  void operator()() { read_words(scratch_.data(), scratch_.size(), sink_.data(), multiprocessors_); }

 private:
  int multiprocessors_;
  DeviceBuffer<uint4> scratch_{0};
  DeviceBuffer<unsigned> sink_{1};
};

// The median of `runs` timed runs (CUDA events around each; the L2 flushed before each and 200 us
// of waiting on the device after it, both out of the timing), after untimed warm-up runs for at least kWarmUp: the first loads the module, finds
// cuBLAS's heuristics and touches the memory; the rest keep the device busy until its clocks have
// risen from idle (the host spent up to seconds preparing the case while the device waited).
class EventTimer {
 public:
  explicit EventTimer(int device) : flush_(device) {
    // Freed pool memory stays with the pool across the synchronised runs, as it does in a loop of
    // calls: kernels that take scratch from the stream's pool (split-K slices, DequantCublas's
    // bands) are not charged the driver's remapping on every run.
    cudaMemPool_t pool = nullptr;
    NUQ_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    std::uint64_t keep = UINT64_MAX;
    NUQ_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    NUQ_CUDA_CHECK(cudaEventCreate(&start_));
    NUQ_CUDA_CHECK(cudaEventCreate(&stop_));
  }
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;
  ~EventTimer() {
    NUQ_CUDA_CHECK_NOTHROW(cudaEventDestroy(start_));
    NUQ_CUDA_CHECK_NOTHROW(cudaEventDestroy(stop_));
  }
  static constexpr std::chrono::milliseconds kWarmUp{100};
  static constexpr std::chrono::nanoseconds kHostHeadStart{200'000};  // (wait_kernel)
  template <typename Run>
  double median_ms(int runs, const Run& run) {
    const auto warm_up_start = std::chrono::steady_clock::now();
    do {
      flush_();
      run();
      NUQ_CUDA_CHECK(cudaDeviceSynchronize());
    } while (std::chrono::steady_clock::now() - warm_up_start < kWarmUp);
    std::vector<double> times;
    for (int i = 0; i < runs; ++i) {
      flush_();
      wait_kernel<<<1, 1>>>(kHostHeadStart.count());
      NUQ_CUDA_CHECK_LAUNCH();
      NUQ_CUDA_CHECK(cudaEventRecord(start_));
      run();
      NUQ_CUDA_CHECK(cudaEventRecord(stop_));
      NUQ_CUDA_CHECK(cudaEventSynchronize(stop_));
      float ms = 0.0f;
      NUQ_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
      times.push_back(ms);
    }
    std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
    return times[times.size() / 2];
  }

 private:
  L2Flush flush_;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

// Host operands, each the prefix of one stream per (kind, seed), drawn once and grown as larger
// cases ask: the cases of a family (every m at one shape, every width) share one draw, where each
// used to draw its own (up to a second on the host per case while the device idled). A returned
// pointer holds until the next call for the same stream.
enum class Draw { Laplace, Uniform, Bytes };

class Streams {
 public:
  // `count` floats: Laplacian of sigma 0.05 (the activations), or uniform in [-1, 1) (the dense
  // peers' operands).
  const float* floats(Draw kind, std::uint64_t seed, std::size_t count) {
    NUQ_ASSERT(kind != Draw::Bytes, "Streams::floats of bytes");
    return reinterpret_cast<const float*>(grow(kind, seed, count * sizeof(float), sizeof(float)));
  }
  // `count` random bytes: any byte is a row's worth of valid codes.
  const std::uint8_t* bytes(std::uint64_t seed, std::size_t count) { return grow(Draw::Bytes, seed, count, 1); }

 private:
  struct Stream {
    std::uint64_t state = 0;
    std::vector<std::uint8_t> data;
  };
  const std::uint8_t* grow(Draw kind, std::uint64_t seed, std::size_t bytes, std::size_t size) {
    Stream& s = streams_[{kind, seed}];
    if (s.data.empty()) s.state = seed * 0x9E3779B97F4A7C15ull + 1;
    if (bytes > s.data.capacity()) s.data.reserve(bytes);
    for (std::size_t at = s.data.size(); at < bytes; at += size) {
      s.state ^= s.state << 13, s.state ^= s.state >> 7, s.state ^= s.state << 17;  // xorshift64
      if (kind == Draw::Bytes) {
        s.data.push_back(std::uint8_t(s.state >> 56));
        continue;
      }
      const float unit = float(s.state >> 40) * 0x1p-24f;  // [0, 1)
      const float v = kind == Draw::Uniform ? 2.0f * unit - 1.0f
                                            : (s.state & 1 ? 1.0f : -1.0f) * (0.05f / std::sqrt(2.0f)) * -std::log1p(-unit);
      s.data.resize(at + sizeof v);
      std::memcpy(s.data.data() + at, &v, sizeof v);
    }
    return s.data.data();
  }
  std::map<std::pair<Draw, std::uint64_t>, Stream> streams_;
};

Streams& streams() {
  static Streams s;
  return s;
}

template <typename T>
DeviceBuffer<T> upload(const T* values, std::size_t count) {
  DeviceBuffer<T> d(count);
  if (count) NUQ_CUDA_CHECK(cudaMemcpy(d.data(), values, count * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

std::vector<__nv_bfloat16> to_bf16(const float* values, std::size_t count) {
  std::vector<__nv_bfloat16> out(count);
  for (std::size_t i = 0; i < count; ++i) out[i] = __float2bfloat16(values[i]);
  return out;
}

float bf16_rounded(float v) { return __bfloat162float(__float2bfloat16(v)); }

// Up to `most` distinct indices spread over [0, count), the first and the last among them.
std::vector<std::size_t> spread(std::size_t count, std::size_t most) {
  std::vector<std::size_t> at;
  for (std::size_t j = 0; j < most && count; ++j) at.push_back(most == 1 ? 0 : j * (count - 1) / (most - 1));
  at.erase(std::unique(at.begin(), at.end()), at.end());
  return at;
}

// Sampled outputs of a timed product Y[m, n] = X[m, k] W^T (y_device, row-major) against a sum in
// double of w_at(r, c) * x_at(i, c), the operands as the kernel reads them (X rounded to BF16 where
// it reads BF16; the levels are BF16 values): 8 rows of the batch by 64 rows of W. An output is
// right within 1e-2 of its products' root sum of squares plus 1e-6 of their absolute sum: FP32
// accumulation stays below a quarter of that even summing 28672 terms in order, TF32's rounding of
// both operands below 0.4 of it at its worst (simulated: truncation, k = 784), while a slice of k
// left out (even 8 columns of 8192: 3e-2), a row misplaced or an output never written is more.
// Throws naming the first output that is off: the benchmark's row is then an error, not a time.
template <typename WeightAt, typename XAt>
void check_product(const char* what, std::size_t m, std::size_t n, std::size_t k, const float* y_device,
                   const WeightAt& w_at, const XAt& x_at) {
  std::vector<float> row(n);
  for (std::size_t i : spread(m, 8)) {
    NUQ_CUDA_CHECK(cudaMemcpy(row.data(), y_device + i * n, n * sizeof(float), cudaMemcpyDeviceToHost));
    for (std::size_t r : spread(n, 64)) {
      double sum = 0.0, squares = 0.0, absolute = 0.0;
      for (std::size_t c = 0; c < k; ++c) {
        const double t = double(w_at(r, c)) * double(x_at(i, c));
        sum += t;
        squares += t * t;
        absolute += std::abs(t);
      }
      const double error = std::abs(double(row[r]) - sum);
      if (!(error <= 1e-2 * std::sqrt(squares) + 1e-6 * absolute)) {
        std::ostringstream said;
        said << what << " at m = " << m << ", n = " << n << ", k = " << k << ": y[" << i << ", " << r << "] = " << row[r]
             << " where the host reference gives " << sum << " (root sum of squares of its products " << std::sqrt(squares)
             << "): the result is wrong at this shape, so it is not timed";
        throw Error(said.str());
      }
    }
  }
}

}  // namespace

double time_copy(std::size_t bytes, int runs, int device) {
  NUQ_REQUIRE(bytes > 0 && runs > 0, "time_copy: nothing to time");
  const DeviceScope on_device(device);
  DeviceBuffer<std::uint8_t> from(bytes), to(bytes);
  NUQ_CUDA_CHECK(cudaMemset(from.data(), 0x5A, bytes));
  EventTimer timer(device);
  return timer.median_ms(runs, [&] {
    NUQ_CUDA_CHECK(cudaMemcpyAsync(to.data(), from.data(), bytes, cudaMemcpyDeviceToDevice));
  });
}

double time_read(std::size_t bytes, int runs, int device) {
  NUQ_REQUIRE(bytes > 0 && runs > 0, "time_read: nothing to time");
  const DeviceScope on_device(device);
  const std::size_t words = (bytes + sizeof(uint4) - 1) / sizeof(uint4);
  DeviceBuffer<uint4> from(words);
  DeviceBuffer<unsigned> sink(1);
  NUQ_CUDA_CHECK(cudaMemset(from.data(), 0x5A, words * sizeof(uint4)));
  const int sms = multiprocessors_of(device);
  EventTimer timer(device);
  return timer.median_ms(runs, [&] { read_words(from.data(), words, sink.data(), sms); });
}

PipelineTimes time_pipeline(std::size_t count, const Codebook& codebook, int bits, int runs, int device) {
  NUQ_REQUIRE(count > 0 && runs > 0, "time_pipeline: nothing to time");
  const DeviceScope on_device(device);
  const int sms = multiprocessors_of(device);
  // One random block uploaded, repeated over the input on the device (uploading 4 GiB from the
  // host would dominate the benchmark's own run time). Whole bytes of codes a block.
  const std::size_t block = std::min<std::size_t>(count, std::size_t{1} << 24);
  DeviceBuffer<float> input(count);
  NUQ_CUDA_CHECK(cudaMemcpy(input.data(), streams().floats(Draw::Laplace, 1, block), block * sizeof(float),
                            cudaMemcpyHostToDevice));
  for (std::size_t at = block; at < count; at += block)
    NUQ_CUDA_CHECK(cudaMemcpy(input.data() + at, input.data(), std::min(block, count - at) * sizeof(float),
                              cudaMemcpyDeviceToDevice));
  DeviceBuffer<std::uint8_t> packed(packed_row_bytes(count, bits));
  DeviceBuffer<std::uint8_t> scratch(std::max(stats_scratch_bytes(count, sms), quantize_scratch_bytes(packed.size(), sms)));
  DeviceBuffer<StatsPartial> stats(1);
  DeviceBuffer<QuantizeTotals> totals(1);
  // The table's device buffers are sized once (one group: the sizes depend on the bits alone), so
  // that no allocation sits in the timed region; each run uploads its table into them.
  QuantizeTable table = make_quantize_table(codebook, bits, {Affine{0.0, 1.0}});
  DeviceBuffer<float> thresholds(table.thresholds.size()), levels(table.levels.size());
  DeviceBuffer<GroupParams> params(table.params.size());
  const DeviceTable view{thresholds.data(), levels.data(), params.data(), table.levels_count, false, bits};
  StatsPartial* host_stats = nullptr;
  NUQ_CUDA_CHECK(cudaMallocHost(&host_stats, sizeof(StatsPartial)));
  const Piece piece{0, 1, 0, count, count};
  PipelineTimes times;
  try {
    EventTimer timer(device);
    // What a user of the backend pays per tensor: statistics on the device, their few bytes read
    // back, the table built on the host from them and uploaded (a few hundred bytes), the pass.
    times.pipeline_ms = timer.median_ms(runs, [&] {
      launch_stats(input.data(), count, 0, stats.data(), scratch.data(), scratch.size(), sms, nullptr);
      NUQ_CUDA_CHECK(cudaMemcpy(host_stats, stats.data(), sizeof(StatsPartial), cudaMemcpyDeviceToHost));
      const double sd = host_stats->count ? std::sqrt(host_stats->m2 / double(host_stats->count)) : 1.0;
      table = make_quantize_table(codebook, bits, {Affine{host_stats->mean, sd > 0 ? sd : 1.0}});
      NUQ_REQUIRE(table.thresholds.size() == thresholds.size() && table.levels.size() == levels.size(),
                  "time_pipeline: the table changed size");
      NUQ_CUDA_CHECK(cudaMemcpyAsync(thresholds.data(), table.thresholds.data(), table.thresholds.size() * sizeof(float),
                                     cudaMemcpyHostToDevice));
      NUQ_CUDA_CHECK(cudaMemcpyAsync(levels.data(), table.levels.data(), table.levels.size() * sizeof(float),
                                     cudaMemcpyHostToDevice));
      NUQ_CUDA_CHECK(cudaMemcpyAsync(params.data(), table.params.data(), table.params.size() * sizeof(GroupParams),
                                     cudaMemcpyHostToDevice));
      launch_quantize(input.data(), piece, view, packed.data(), totals.data(), scratch.data(), scratch.size(), sms,
                      nullptr);
    });
  } catch (...) {
    cudaFreeHost(host_stats);
    throw;
  }
  NUQ_CUDA_CHECK(cudaFreeHost(host_stats));
  // The last run's codes of the first block and of the last, bit for bit those of the reference
  // pass with the table that run built (the blocks repeat the first, whole bytes each where there
  // are several: the last, past 2^31 weights at the largest size, catches an index that overflows).
  const std::size_t checked = packed_row_bytes(block, bits) - (block * std::size_t(bits) % 8 ? 1 : 0);
  std::vector<std::uint8_t> expected(packed_row_bytes(block, bits));
  quantize_ref(streams().floats(Draw::Laplace, 1, block), 1, block, table, expected.data());
  const std::size_t last = (count - 1) / block * block;  // the last block's first weight
  for (const std::size_t first : {std::size_t{0}, last}) {
    const std::size_t bytes = first == 0 ? checked : (count - first) * std::size_t(bits) / 8;  // whole bytes
    std::vector<std::uint8_t> got(bytes);
    NUQ_CUDA_CHECK(cudaMemcpy(got.data(), packed.data() + first * std::size_t(bits) / 8, bytes, cudaMemcpyDeviceToHost));
    const auto differ = std::mismatch(got.begin(), got.end(), expected.begin());
    NUQ_REQUIRE(differ.first == got.end(), "time_pipeline: ", count, " weights at ", bits, " bits: code byte ",
                first * std::size_t(bits) / 8 + std::size_t(differ.first - got.begin()),
                " differs from the reference pass's; the result is wrong, so it is not timed");
  }
  times.copy_ms = time_copy(count * sizeof(float), runs, device);
  return times;
}

namespace {

// 2^bits levels of a table that is not a uniform grid (the 8- and 16-bit ones would otherwise take
// the grid's arithmetic path, which a non-uniform codebook never does), in (-0.5, 0.5), each a
// BF16 value: the kernels that read levels in BF16 then read them exactly, and the host reference
// is the same for every kernel (distinct up to 8 bits; at 16 some coincide, which costs nothing).
std::vector<float> table_levels(int bits) {
  std::vector<float> levels(std::size_t{1} << bits);
  for (std::size_t i = 0; i < levels.size(); ++i) {
    const float t = (float(i) + 0.5f) / float(levels.size()) - 0.5f;  // (-0.5, 0.5), symmetric
    levels[i] = bf16_rounded(t * (0.5f + std::abs(t)));              // denser near 0, as a Laplacian's
  }
  return levels;
}

// Random codes of an [n, k] matrix and a table of levels, as a model's layer would be quantized.
QuantizedMatrix random_weights(std::size_t n, std::size_t k, int bits) {
  QuantizedMatrix w;
  w.codes.rows = n;
  w.codes.cols = k;
  w.codes.bits = bits;
  const std::size_t bytes = n * packed_row_bytes(k, bits);
  const std::uint8_t* random = streams().bytes(3, bytes);
  w.codes.bytes.assign(random, random + bytes);
  w.levels = table_levels(bits);
  return w;
}

// Fragment order (nuq/mma_prepack.h) of random_weights(n, k, bits), made once per shape and width
// (a permutation of up to a quarter of a GB on the host, for four batch sizes each).
const FragmentCodes& fragment_order(const QuantizedMatrix& w) {
  static std::map<std::tuple<std::size_t, std::size_t, int>, FragmentCodes> made;
  const auto key = std::make_tuple(w.codes.rows, w.codes.cols, w.codes.bits);
  auto found = made.find(key);
  if (found == made.end()) found = made.emplace(key, to_fragment_order(w.codes)).first;
  return found->second;
}

}  // namespace

double time_qgemm(std::size_t m, std::size_t n, std::size_t k, int bits, int runs, int device, Precision precision,
                  QgemmKernel kernel) {
  const DeviceScope on_device(device);
  NUQ_REQUIRE(kernel != QgemmKernel::Mma || (mma_kernel_bits(bits) && m >= 1 && m <= kMmaMaxBatch && k > 0),
              "time_qgemm: the mma kernel takes m = 1..", kMmaMaxBatch, " and 2, 4 or 8 bits, not m = ", m, " at ",
              bits, " bits");
  NUQ_REQUIRE(kernel != QgemmKernel::Gemv || precision == Precision::Fp32, "time_qgemm: the GEMV reads X in FP32");
  NUQ_REQUIRE(kernel != QgemmKernel::Gemv || gemv::takes(m, k, bits), "time_qgemm: the GEMV takes m = 1..",
              gemv::kMaxBatch, " and k of at least ", gemv::slice_columns(bits), " at ", bits, " bits, not m = ", m,
              ", k = ", k);
  const QuantizedMatrix w = random_weights(n, k, bits);
  DeviceWeights weights = upload_weights(w, "time_qgemm");  // rows padded to the kernels' stride
  DeviceFragmentCodes fragments{};
  if (kernel == QgemmKernel::Mma) {
    const FragmentCodes& order = fragment_order(w);
    weights.fragments = upload(order.bytes.data(), order.bytes.size());
    fragments = {weights.fragments.data(), order.row_blocks, order.k_units};
  }
  // X in BF16 where the kernel reads it so (Precision::Bf16, the mma kernel, DequantCublas), as the
  // cuBLAS BF16 peer does: at large batches X's bytes outweigh the packed weights'.
  const float* values = streams().floats(Draw::Laplace, 2, m * k);
  const bool bf16_x = precision == Precision::Bf16 || kernel == QgemmKernel::Mma || kernel == QgemmKernel::DequantCublas;
  const DeviceBuffer<float> x = upload(values, bf16_x ? 0 : m * k);
  const std::vector<__nv_bfloat16> rounded = bf16_x ? to_bf16(values, m * k) : std::vector<__nv_bfloat16>{};
  const DeviceBuffer<__nv_bfloat16> x_bf16 = upload(rounded.data(), rounded.size());
  DeviceBuffer<float> y(m * n);
  const DeviceQuantizedMatrix& view = weights.view;
  cublasHandle_t handle = nullptr;  // DequantCublas's, created outside the timed runs
  if (kernel == QgemmKernel::DequantCublas) NUQ_CUBLAS_CHECK(cublas().create(&handle));
  const auto destroy = [&] {
    if (handle) cublas().destroy(handle);
  };
  double ms = 0.0;
  try {
    EventTimer timer(device);
    ms = timer.median_ms(runs, [&] {
      if (kernel == QgemmKernel::DequantCublas)
        launch_qgemm_dequant_cublas(x_bf16.data(), m, view, nullptr, false, y.data(), handle, nullptr);
      else if (kernel == QgemmKernel::Mma)
        launch_qgemm_mma(x_bf16.data(), m, view, fragments, nullptr, false, y.data(), nullptr);
      else if (kernel == QgemmKernel::Gemv)
        launch_qgemm_gemv(x.data(), m, view, nullptr, false, y.data(), nullptr);
      else if (precision == Precision::Bf16)
        launch_qgemm(x_bf16.data(), m, view, nullptr, false, y.data(), nullptr);
      else
        launch_qgemm(x.data(), m, view, nullptr, false, y.data(), nullptr, precision);
    });
    destroy();
  } catch (...) {
    destroy();
    throw;
  }
  check_product(
      "time_qgemm", m, n, k, y.data(), [&](std::size_t r, std::size_t c) { return w.levels[w.codes.at(r, c)]; },
      [&](std::size_t i, std::size_t c) { return bf16_x ? bf16_rounded(values[i * k + c]) : values[i * k + c]; });
  return ms;
}

double time_cublas(std::size_t m, std::size_t n, std::size_t k, DensePeer peer, int runs, int device) {
  const DeviceScope on_device(device);
  const bool bf16 = peer == DensePeer::Bf16;
  // Random weights and activations (a product of zeros or constants can run faster than real data).
  const auto to_device = [&](const float* values, std::size_t count) {
    const std::vector<__nv_bfloat16> rounded = bf16 ? to_bf16(values, count) : std::vector<__nv_bfloat16>{};
    DeviceBuffer<std::uint8_t> device_copy(count * (bf16 ? sizeof(__nv_bfloat16) : sizeof(float)));
    const void* from = bf16 ? static_cast<const void*>(rounded.data()) : static_cast<const void*>(values);
    if (count > 0) NUQ_CUDA_CHECK(cudaMemcpy(device_copy.data(), from, device_copy.size(), cudaMemcpyHostToDevice));
    return device_copy;
  };
  const float* w_host = streams().floats(Draw::Uniform, 4, n * k);  // (two streams: neither moves the other)
  const float* x_host = streams().floats(Draw::Uniform, 5, m * k);
  const DeviceBuffer<std::uint8_t> weights = to_device(w_host, n * k), x = to_device(x_host, m * k);
  DeviceBuffer<float> y(m * n);
  const float one = 1.0f, zero = 0.0f;
  const cublasComputeType_t compute = peer == DensePeer::Tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const cudaDataType_t type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  cublasHandle_t handle = nullptr;
  NUQ_CUBLAS_CHECK(cublas().create(&handle));
  double ms = 0.0;
  try {
    // Pedantic math, as the FP32 MLP peer sets it (device_mlp.cu, docs/backends.md): FP32 with no
    // reduced-precision shortcut cuBLAS may otherwise take (it may run slower than the default
    // mode; FP32 peer times from before this are not comparable). TF32 and BF16 ask for their own
    // compute types.
    if (peer == DensePeer::Fp32) NUQ_CUBLAS_CHECK(cublas().set_math_mode(handle, CUBLAS_PEDANTIC_MATH));
    EventTimer timer(device);
    // Row-major Y[m, n] = X[m, k] W[n, k]^T is column-major Y^T[n, m] = W[k, n]^T X^T[k, m].
    ms = timer.median_ms(runs, [&] {
      NUQ_CUBLAS_CHECK(cublas().gemm_ex(handle, CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(m), int(k), &one, weights.data(), type,
                                    int(k), x.data(), type, int(k), &zero, y.data(), CUDA_R_32F, int(n), compute,
                                    CUBLAS_GEMM_DEFAULT));
    });
  } catch (...) {
    cublas().destroy(handle);
    throw;
  }
  NUQ_CUBLAS_CHECK(cublas().destroy(handle));
  // The peer is checked as nuq is: the same reference on its own operands (as rounded for it).
  const auto as_read = [&](float v) { return bf16 ? bf16_rounded(v) : v; };
  check_product(
      "time_cublas", m, n, k, y.data(), [&](std::size_t r, std::size_t c) { return as_read(w_host[r * k + c]); },
      [&](std::size_t i, std::size_t c) { return as_read(x_host[i * k + c]); });
  return ms;
}

}  // namespace nuq::cuda
