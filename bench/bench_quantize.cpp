// The weight pipeline (statistics, then the fused quantize-pack-error pass) against the copy
// bandwidth of the same machine, timed in the same run. Its minimum traffic is two reads of the
// FP32 weights and one write of the codes; "GB/s" counts exactly that, and "copy_fraction" is
// GB/s over the copy's (read + write) GB/s measured beside it.
//   CPU: memcpy of the weights as the peer; the pipeline through the CPU backend.
//   GPU (registered only where a CUDA device is visible): device-resident pipeline and
//   device-to-device copy, each the median of 10 runs timed with CUDA events from a cold L2.
//   build/bench/bench_quantize --benchmark_out=quantize.json --benchmark_out_format=json
// bench/torch_quantize.py times the same job in PyTorch eager on the GPU (the peer of #4).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstring>
#include <random>
#include <vector>

#include "nuq/backend.h"
#include "nuq/cuda.h"
#include "nuq/design.h"
#include "nuq/packed.h"
#include "nuq/quantize_table.h"
#include "gpu_context.h"

namespace {

constexpr int kBits = 2;

nuq::Codebook two_bit_codebook() {
  nuq::DesignSpec spec;
  spec.method = nuq::Method::Sptq;
  spec.bits = kBits;
  return nuq::design(spec).codebook;
}

std::vector<float> laplacian(std::size_t count) {
  std::mt19937_64 rng(1);
  std::exponential_distribution<float> e(std::sqrt(2.0f) / 0.05f);
  std::vector<float> v(count);
  for (float& x : v) x = (rng() & 1 ? 1.0f : -1.0f) * e(rng);
  return v;
}

double minimum_bytes(std::size_t count) { return 2.0 * 4.0 * double(count) + double(nuq::packed_row_bytes(count, kBits)); }

// The copy peer's bandwidth, read + write, measured now (best of three).
double copy_gbs(const std::vector<float>& from) {
  std::vector<float> to(from.size());
  double best = 1e30;
  for (int i = 0; i < 3; ++i) {
    const auto start = std::chrono::steady_clock::now();
    std::memcpy(to.data(), from.data(), from.size() * sizeof(float));
    benchmark::DoNotOptimize(to.data());
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return 2.0 * 4.0 * double(from.size()) / best / 1e9;
}

void BM_CpuCopy(benchmark::State& state) {
  const auto count = std::size_t(state.range(0));
  const std::vector<float> from = laplacian(count);
  std::vector<float> to(count);
  for (auto _ : state) {
    std::memcpy(to.data(), from.data(), count * sizeof(float));
    benchmark::DoNotOptimize(to.data());
  }
  state.counters["GB/s"] = benchmark::Counter(double(state.iterations()) * 8.0 * double(count) / 1e9,
                                              benchmark::Counter::kIsRate);
}

void BM_CpuPipeline(benchmark::State& state) {
  const auto count = std::size_t(state.range(0));
  const std::vector<float> w = laplacian(count);
  const nuq::Codebook codebook = two_bit_codebook();
  std::vector<std::uint8_t> packed(nuq::packed_row_bytes(count, kBits));
  nuq::Backend& cpu = nuq::cpu_backend();
  const double copy = copy_gbs(w);
  for (auto _ : state) {
    const nuq::WeightStats s = cpu.stats(w.data(), count, "w", nuq::NonFinite::Reject);
    const nuq::QuantizeTable table = nuq::make_quantize_table(codebook, kBits, {nuq::Affine{s.mean, s.stddev()}});
    const nuq::QuantizeTotals t = cpu.quantize(w.data(), 1, count, table, packed.data());
    benchmark::DoNotOptimize(t);
  }
  state.counters["GB/s"] = benchmark::Counter(double(state.iterations()) * minimum_bytes(count) / 1e9,
                                              benchmark::Counter::kIsRate);
  state.counters["copy_GB/s"] = copy;
}

// One iteration, inside which time_pipeline sets up once and times kGpuRuns runs from a cold L2
// (their median): the setup (allocation, upload of up to 4 GiB) never repeats nor enters the time.
constexpr int kGpuRuns = 10;

void BM_GpuPipeline(benchmark::State& state) {
  const auto count = std::size_t(state.range(0));
  const nuq::Codebook codebook = two_bit_codebook();
  double copy_ms = 0.0;
  if (!nuq::bench::time_iterations(state, [&] {
        const nuq::cuda::PipelineTimes t = nuq::cuda::time_pipeline(count, codebook, kBits, kGpuRuns);
        copy_ms = t.copy_ms;
        return t.pipeline_ms / 1e3;
      }))
    return;
  state.counters["GB/s"] = benchmark::Counter(double(state.iterations()) * minimum_bytes(count) / 1e9,
                                              benchmark::Counter::kIsRate);
  state.counters["copy_GB/s"] = 8.0 * double(count) / (copy_ms / 1e3) / 1e9;
}

void sizes(benchmark::internal::Benchmark* b, long largest_log2) {
  b->ArgName("weights");
  for (long log2 = 20; log2 <= largest_log2; log2 += 2) b->Arg(1L << log2);
  b->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  // The CPU up to 2^28 weights (1 GiB; 2^30 needs 8 GiB beside the copy), the GPU up to 2^30.
  benchmark::RegisterBenchmark("BM_CpuCopy", BM_CpuCopy)->Apply([](auto* b) { sizes(b, 28); })->UseRealTime();
  benchmark::RegisterBenchmark("BM_CpuPipeline", BM_CpuPipeline)->Apply([](auto* b) { sizes(b, 28); })->UseRealTime();
  if (nuq::bench::add_gpu_context())
    benchmark::RegisterBenchmark("BM_GpuPipeline", BM_GpuPipeline)
        ->Apply([](auto* b) { sizes(b, 30); })
        ->UseManualTime()
        ->Iterations(1);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
