// The fused CPU quantized GEMM (codes + codebook straight into the multiply), from the stored codes
// and from weights prepared once, against its FP32 peer, OpenBLAS sgemm (sgemv at m = 1) on the dequantized weights, timed in the same run.
// Y[m, n] = X[m, k] * W^T. Counters: weight bytes read per second (GB/s) and TFLOP/s.
//   build/bench/bench_qgemm --benchmark_out=qgemm.json --benchmark_out_format=json
// scripts/plots.py draws peer time / nuq time per m from such a file (bench-speedup figure).
// Where a CUDA device is visible, the GPU kernels and their cuBLAS peers (FP32 with TF32 off, TF32,
// BF16 on dense BF16 weights) are registered too, on the shapes of #5, timed with CUDA events
// (UseManualTime), each run from a cold L2, each product checked against a host reference (a wrong
// one is an error row), beside a device copy and reads of the code bytes whose bandwidths the
// report uses as the memory's ceiling; bench/qgemm_report.py tabulates them.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <cmath>
#include <random>
#include <vector>

#include "nuq/backend.h"
#include "nuq/cuda.h"
#include "nuq/grouped.h"
#include "nuq/ptq.h"
#include "nuq/qgemm.h"
#include "gpu_context.h"

namespace {

nuq::QuantizedMatrix random_matrix(std::size_t n, std::size_t k, int bits) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::uint32_t> code(0, (1u << bits) - 1);
  std::vector<std::uint32_t> codes(n * k);
  for (auto& c : codes) c = code(rng);
  std::vector<float> levels(std::size_t{1} << bits);
  for (std::size_t i = 0; i < levels.size(); ++i) levels[i] = 0.01f * (float(i) - float(levels.size()) / 2.0f);
  return {nuq::pack_codes(codes, n, k, bits), levels};
}

std::vector<float> random_input(std::size_t m, std::size_t k) {
  std::mt19937 rng(3);
  std::normal_distribution<float> x(0.0f, 1.0f);
  std::vector<float> values(m * k);
  for (auto& v : values) v = x(rng);
  return values;
}

void counters(benchmark::State& state, std::size_t m, std::size_t n, std::size_t k, double weight_bytes) {
  const double iterations = double(state.iterations());
  state.counters["GB/s"] = benchmark::Counter(iterations * weight_bytes / 1e9, benchmark::Counter::kIsRate);
  state.counters["TFLOP/s"] = benchmark::Counter(iterations * 2.0 * double(m * n * k) / 1e12, benchmark::Counter::kIsRate);
}

void BM_QuantizedGemm(benchmark::State& state) {
  const auto m = std::size_t(state.range(0)), n = std::size_t(state.range(1)), k = std::size_t(state.range(2));
  const int bits = int(state.range(3));
  const nuq::QuantizedMatrix w = random_matrix(n, k, bits);
  const std::vector<float> x = random_input(m, k);
  std::vector<float> y(m * n);
  for (auto _ : state) {
    nuq::qgemm(x.data(), m, w, nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  counters(state, m, n, k, double(w.codes.bytes.size()));
}

// Products of m rows of X by `w` prepared once (cpu_backend().prepare), as a network uses them.
void time_prepared(benchmark::State& state, const nuq::QuantizedMatrix& w, std::size_t m, double weight_bytes) {
  const auto prepared = nuq::cpu_backend().prepare(w);
  const std::vector<float> x = random_input(m, w.codes.cols);
  std::vector<float> y(m * w.codes.rows);
  for (auto _ : state) {
    nuq::cpu_backend().qgemm(x.data(), m, *prepared, nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  counters(state, m, w.codes.rows, w.codes.cols, weight_bytes);
}

// The same product from weights prepared once (for 1/2/4-bit codes the rows interleaved for the
// look-up path; 8/16-bit codes' level grids found).
void BM_QuantizedGemmPrepared(benchmark::State& state) {
  const auto m = std::size_t(state.range(0)), n = std::size_t(state.range(1)), k = std::size_t(state.range(2));
  const nuq::QuantizedMatrix w = random_matrix(n, k, int(state.range(3)));
  time_prepared(state, w, m, double(w.codes.bytes.size()));
}

// Per-channel normalisation: each row its own table, the design's levels through the row's own map
// (mean + sigma * level). A uniform design's rows are each on a grid, which prepared weights find
// and compute levels from; a non-uniform design's (levels denser near zero, as Lloyd-Max's or
// MSPTQ's) are gathered from the row's table.
template <bool kUniform>
void BM_QuantizedGemmPerChannel(benchmark::State& state) {
  const auto m = std::size_t(state.range(0)), n = std::size_t(state.range(1)), k = std::size_t(state.range(2));
  const int bits = int(state.range(3));
  nuq::QuantizedMatrix w = random_matrix(n, k, bits);
  const std::size_t per_table = w.levels.size();
  std::vector<float> levels(n * per_table);
  for (std::size_t r = 0; r < n; ++r)
    for (std::size_t c = 0; c < per_table; ++c) {
      const double t = (double(c) + 0.5) / double(per_table) * 2.0 - 1.0;
      const double level = kUniform ? 3.0 * t : 3.0 * t * std::abs(t);
      levels[r * per_table + c] = float(1e-4 * double(r % 7) + 0.02 * (1.0 + double(r % 5) / 10.0) * level);
    }
  w.levels = std::move(levels);
  time_prepared(state, w, m, double(w.codes.bytes.size() + 4 * w.levels.size()));
}

// One table off any grid for the whole matrix (global normalisation with a non-uniform design, an
// 8-bit mu-law or Lloyd-Max): its levels looked up, not computed.
void BM_QuantizedGemmTableOffGrid(benchmark::State& state) {
  const auto m = std::size_t(state.range(0)), n = std::size_t(state.range(1)), k = std::size_t(state.range(2));
  nuq::QuantizedMatrix w = random_matrix(n, k, int(state.range(3)));
  for (std::size_t c = 0; c < w.levels.size(); ++c) {
    const double t = (double(c) + 0.5) / double(w.levels.size()) * 2.0 - 1.0;
    w.levels[c] = float(0.06 * t * std::abs(t));
  }
  time_prepared(state, w, m, double(w.codes.bytes.size()));
}

// What preparing costs (what Python's nuq.qgemm pays once, on a tensor's second CPU product), to
// set beside one product from the stored codes. Each iteration frees what the last one made, so
// the allocator hands back memory already mapped: a layout in fresh memory also pays a page fault
// per 4 KiB (several times this on a VM).
void BM_Prepare(benchmark::State& state) {
  const auto n = std::size_t(state.range(1)), k = std::size_t(state.range(2));
  const nuq::QuantizedMatrix w = random_matrix(n, k, int(state.range(3)));
  for (auto _ : state) {
    auto prepared = nuq::cpu_backend().prepare(w);
    benchmark::DoNotOptimize(prepared.get());
  }
  state.counters["GB/s"] = benchmark::Counter(double(w.codes.bytes.size()) * double(state.iterations()) / 1e9,
                                                     benchmark::Counter::kIsRate);
}

// A tensor quantized in groups of 128 along its rows (each group its own scale, one normalised
// table: `nuq quantize --group-size 128`, Python's nuq.quantize(group_size=128)), as qgemm_grouped
// multiplies it.
nuq::QuantizedTensor random_grouped(std::size_t n, std::size_t k, int bits) {
  constexpr std::size_t kGroup = 128;
  nuq::QuantizedTensor w;
  w.shape = {std::int64_t(n), std::int64_t(k)};
  w.group_size = kGroup;
  w.mean = 0.001;
  const nuq::QuantizedMatrix codes = random_matrix(n * k / kGroup, kGroup, bits);
  w.matrix.codes = codes.codes;
  // Levels denser near zero, as a non-uniform design's (MSPTQ's) are: no uniform grid to compute
  // 8-bit levels from, so they are looked up as a real codebook's would be.
  for (std::size_t c = 0; c < codes.levels.size(); ++c) {
    const float t = (float(c) + 0.5f) / float(codes.levels.size()) * 2.0f - 1.0f;
    w.normalised_levels.push_back(3.0f * t * std::abs(t));
  }
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> scale(0.5f, 2.0f);
  for (std::size_t g = 0; g < n * k / kGroup; ++g) w.scales.push_back(scale(rng));
  return w;
}

void BM_GroupedQgemm(benchmark::State& state) {
  const auto m = std::size_t(state.range(0)), n = std::size_t(state.range(1)), k = std::size_t(state.range(2));
  const nuq::QuantizedTensor w = random_grouped(n, k, int(state.range(3)));
  const std::vector<float> x = random_input(m, k);
  std::vector<float> y(m * n);
  for (auto _ : state) {
    nuq::qgemm_grouped(x.data(), m, w, nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  counters(state, m, n, k, double(w.matrix.codes.bytes.size() + 4 * w.scales.size()));
}

// The same tensor prepared once (PreparedGrouped: 1-4-bit codes laid out for the look-up), as
// Python's nuq.qgemm keeps it from a tensor's second product on.
void BM_GroupedQgemmPrepared(benchmark::State& state) {
  const auto m = std::size_t(state.range(0)), n = std::size_t(state.range(1)), k = std::size_t(state.range(2));
  const nuq::QuantizedTensor w = random_grouped(n, k, int(state.range(3)));
  const nuq::PreparedGrouped prepared(w);
  const std::vector<float> x = random_input(m, k);
  std::vector<float> y(m * n);
  for (auto _ : state) {
    nuq::qgemm_grouped(x.data(), m, prepared, nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  counters(state, m, n, k, double(w.matrix.codes.bytes.size() + 4 * w.scales.size()));
}

void BM_OpenBlasSgemm(benchmark::State& state) {
  const auto m = std::size_t(state.range(0)), n = std::size_t(state.range(1)), k = std::size_t(state.range(2));
  const std::vector<float> w = nuq::dequantize(random_matrix(n, k, 2));
  const std::vector<float> x = random_input(m, k);
  std::vector<float> y(m * n);
  for (auto _ : state) {
    if (m == 1)
      cblas_sgemv(CblasRowMajor, CblasNoTrans, int(n), int(k), 1.0f, w.data(), int(k), x.data(), 1, 0.0f, y.data(), 1);
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(n), int(k), 1.0f, x.data(), int(k), w.data(),
                  int(k), 0.0f, y.data(), int(n));
    benchmark::DoNotOptimize(y.data());
  }
  counters(state, m, n, k, double(w.size() * sizeof(float)));
}

void shapes(benchmark::internal::Benchmark* b, bool with_bits) {
  b->ArgNames(with_bits ? std::vector<std::string>{"m", "n", "k", "bits"} : std::vector<std::string>{"m", "n", "k"});
  for (long m : {1, 4, 16, 64, 256})
    for (long bits : {2, 4, 8, 16}) {
      if (with_bits)
        b->Args({m, 4096, 4096, bits});
      else if (bits == 2)
        b->Args({m, 4096, 4096});
    }
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

BENCHMARK(BM_QuantizedGemm)->Apply([](benchmark::internal::Benchmark* b) { shapes(b, true); });
BENCHMARK(BM_QuantizedGemmPrepared)->Apply([](benchmark::internal::Benchmark* b) { shapes(b, true); });
BENCHMARK(BM_QuantizedGemmPerChannel<true>)->Name("BM_QuantizedGemmPerChannelUniform")
    ->ArgNames({"m", "n", "k", "bits"})->Args({1, 4096, 4096, 8})->Args({4, 4096, 4096, 8})->Args({16, 4096, 4096, 8})
    ->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_QuantizedGemmPerChannel<false>)->Name("BM_QuantizedGemmPerChannelTables")
    ->ArgNames({"m", "n", "k", "bits"})->Args({1, 4096, 4096, 8})->Args({4, 4096, 4096, 8})->Args({16, 4096, 4096, 8})
    ->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_QuantizedGemmTableOffGrid)->ArgNames({"m", "n", "k", "bits"})->Args({1, 4096, 4096, 8})
    ->Args({4, 4096, 4096, 8})->Args({16, 4096, 4096, 8})->Args({64, 4096, 4096, 8})
    ->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_Prepare)->ArgNames({"m", "n", "k", "bits"})->Args({1, 4096, 4096, 2})->Args({1, 4096, 4096, 4})
    ->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_GroupedQgemm)->Apply([](benchmark::internal::Benchmark* b) { shapes(b, true); });
BENCHMARK(BM_GroupedQgemmPrepared)->Apply([](benchmark::internal::Benchmark* b) { shapes(b, true); });
BENCHMARK(BM_OpenBlasSgemm)->Apply([](benchmark::internal::Benchmark* b) { shapes(b, false); });

constexpr int kGpuRuns = 20;

template <nuq::cuda::Precision kPrecision, nuq::cuda::QgemmKernel kKernel = nuq::cuda::QgemmKernel::Default>
void BM_GpuQgemm(benchmark::State& state) {
  const auto m = std::size_t(state.range(0)), n = std::size_t(state.range(1)), k = std::size_t(state.range(2));
  const int bits = int(state.range(3));
  if (!nuq::bench::time_iterations(
          state, [&] { return nuq::cuda::time_qgemm(m, n, k, bits, kGpuRuns, 0, kPrecision, kKernel) / 1e3; }))
    return;
  counters(state, m, n, k, double(n * nuq::packed_row_bytes(k, bits)));
}

// The device-to-device copy of 1 GiB (bytes read + written per second): the memory's bandwidth,
// from the same run.
void BM_GpuCopy(benchmark::State& state) {
  const auto bytes = std::size_t(state.range(0));
  if (!nuq::bench::time_iterations(state, [&] { return nuq::cuda::time_copy(bytes, kGpuRuns) / 1e3; })) return;
  state.counters["GB/s"] = benchmark::Counter(double(state.iterations()) * 2.0 * double(bytes) / 1e9,
                                              benchmark::Counter::kIsRate);
}

// A kernel that only reads as many bytes as a case's codes (bytes read per second), from a cold L2:
// the ceiling the report sets a streaming kernel's code bytes against, launch and tail included,
// which a 1 GiB copy spreads over a thousand times more bytes.
void BM_GpuRead(benchmark::State& state) {
  const auto bytes = std::size_t(state.range(0));
  if (!nuq::bench::time_iterations(state, [&] { return nuq::cuda::time_read(bytes, kGpuRuns) / 1e3; })) return;
  state.counters["GB/s"] = benchmark::Counter(double(state.iterations()) * double(bytes) / 1e9,
                                              benchmark::Counter::kIsRate);
}

// The code bytes of the LLM layers' 2-, 4- and 8-bit weights (8192^2, 28672 x 8192), the sizes
// BM_GpuRead is timed at.
void read_sizes(benchmark::internal::Benchmark* b) {
  b->ArgName("bytes");
  for (long rows : {8192L, 28672L})
    for (long bits : {2L, 4L, 8L}) b->Arg(rows * 8192 * bits / 8);
  b->UseManualTime()->Iterations(1);
}

template <nuq::cuda::DensePeer kPeer>
void BM_Cublas(benchmark::State& state) {
  const auto m = std::size_t(state.range(0)), n = std::size_t(state.range(1)), k = std::size_t(state.range(2));
  if (!nuq::bench::time_iterations(state, [&] { return nuq::cuda::time_cublas(m, n, k, kPeer, kGpuRuns) / 1e3; }))
    return;
  counters(state, m, n, k, double(n * k) * (kPeer == nuq::cuda::DensePeer::Bf16 ? 2.0 : 4.0));
}

// #5's shapes as (outputs n, inputs k): the MNIST MLP's layers, square layers, an LLM MLP's pair.
void gpu_shapes(benchmark::internal::Benchmark* b, bool with_bits) {
  b->ArgNames(with_bits ? std::vector<std::string>{"m", "n", "k", "bits"} : std::vector<std::string>{"m", "n", "k"});
  const std::vector<std::pair<long, long>> layers = {{512, 784},    {512, 512},     {10, 512},     {4096, 4096},
                                                     {8192, 8192},  {16384, 16384}, {28672, 8192}, {8192, 28672}};
  for (const auto& [n, k] : layers)
    for (long m : {1, 4, 16, 64, 256, 1024, 4096}) {
      if (with_bits)
        b->Args({m, n, k, 2});
      else
        b->Args({m, n, k});
    }
  b->Unit(benchmark::kMicrosecond)->UseManualTime()->Iterations(1);
}

// The fragment-order tensor-core kernel (#17: m <= 64) at the shapes and widths; the cuBLAS
// peers run at the same shapes in gpu_shapes.
void mma_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"m", "n", "k", "bits"});
  const std::vector<std::pair<long, long>> layers = {{4096, 4096}, {8192, 8192}, {28672, 8192}, {8192, 28672}};
  for (const auto& [n, k] : layers)
    for (long m : {1, 4, 16, 64})
      for (long bits : {2, 4, 8}) b->Args({m, n, k, bits});
  b->Unit(benchmark::kMicrosecond)->UseManualTime()->Iterations(1);
}

// The CUDA-core GEMV (#17: m = 1..4) at the shapes and widths, FP32 X as the default
// streaming kernel reads it; gemv_peer_shapes times the default kernel at the widths gpu_shapes
// leaves out, so that both kernels meet every case in one run.
void gemv_shapes(benchmark::internal::Benchmark* b, const std::vector<long>& widths) {
  b->ArgNames({"m", "n", "k", "bits"});
  const std::vector<std::pair<long, long>> layers = {{4096, 4096}, {8192, 8192}, {28672, 8192}, {8192, 28672}};
  for (const auto& [n, k] : layers)
    for (long m : {1, 4})
      for (long bits : widths) b->Args({m, n, k, bits});
  b->Unit(benchmark::kMicrosecond)->UseManualTime()->Iterations(1);
}

// The large-batch paths (#17: m >= 256) side by side: W decoded to BF16 bands + cuBLAS BF16
// (BM_GpuQgemmDequantCublas) beside the tensor-core tiles (BM_GpuQgemmBf16, in gpu_shapes) and the
// cuBLAS peers, at the shapes and widths.
void large_batch_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"m", "n", "k", "bits"});
  const std::vector<std::pair<long, long>> layers = {{4096, 4096}, {8192, 8192}, {28672, 8192}, {8192, 28672}};
  for (const auto& [n, k] : layers)
    for (long m : {256, 1024, 4096})
      for (long bits : {2, 4, 8}) b->Args({m, n, k, bits});
  b->Unit(benchmark::kMicrosecond)->UseManualTime()->Iterations(1);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (nuq::bench::add_gpu_context()) {
    using nuq::cuda::DensePeer;
    using nuq::cuda::Precision;
    // The peers first: a kernel that fails at a shape (an illegal address ends every later case
    // in the process) or a run cut off by its time limit then costs nuq's rows, not the peers'.
    benchmark::RegisterBenchmark("BM_GpuCopy", BM_GpuCopy)->Arg(1L << 30)->ArgName("bytes")->UseManualTime()->Iterations(1);
    benchmark::RegisterBenchmark("BM_GpuRead", BM_GpuRead)->Apply(read_sizes);
    benchmark::RegisterBenchmark("BM_CublasFp32", BM_Cublas<DensePeer::Fp32>)->Apply([](auto* b) { gpu_shapes(b, false); });
    benchmark::RegisterBenchmark("BM_CublasTf32", BM_Cublas<DensePeer::Tf32>)->Apply([](auto* b) { gpu_shapes(b, false); });
    benchmark::RegisterBenchmark("BM_CublasBf16", BM_Cublas<DensePeer::Bf16>)->Apply([](auto* b) { gpu_shapes(b, false); });
    benchmark::RegisterBenchmark("BM_GpuQgemm", BM_GpuQgemm<Precision::Fp32>)->Apply([](auto* b) { gpu_shapes(b, true); });
    benchmark::RegisterBenchmark("BM_GpuQgemmBf16", BM_GpuQgemm<Precision::Bf16>)->Apply([](auto* b) { gpu_shapes(b, true); });
    benchmark::RegisterBenchmark("BM_GpuQgemmMma", BM_GpuQgemm<Precision::Bf16, nuq::cuda::QgemmKernel::Mma>)
        ->Apply(mma_shapes);
    benchmark::RegisterBenchmark("BM_GpuQgemmDequantCublas",
                                 BM_GpuQgemm<Precision::Bf16, nuq::cuda::QgemmKernel::DequantCublas>)
        ->Apply(large_batch_shapes);
    benchmark::RegisterBenchmark("BM_GpuQgemmGemv", BM_GpuQgemm<Precision::Fp32, nuq::cuda::QgemmKernel::Gemv>)
        ->Apply([](auto* b) { gemv_shapes(b, {2, 4, 8}); });
    benchmark::RegisterBenchmark("BM_GpuQgemm", BM_GpuQgemm<Precision::Fp32>)->Apply([](auto* b) { gemv_shapes(b, {4, 8}); });
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
