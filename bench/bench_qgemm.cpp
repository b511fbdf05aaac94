// The fused CPU quantized GEMM (codes + codebook straight into the multiply) against its FP32
// peer, OpenBLAS sgemm (sgemv at m = 1) on the dequantized weights, timed in the same run.
// Y[m, n] = X[m, k] * W^T. Counters: weight bytes read per second (GB/s) and TFLOP/s.
//   build/bench/bench_qgemm --benchmark_out=qgemm.json --benchmark_out_format=json
// scripts/plots.py draws peer time / nuq time per m from such a file (bench-speedup figure).
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <random>
#include <vector>

#include "nuq/qgemm.h"

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
    for (long bits : {2, 4, 8}) {
      if (with_bits)
        b->Args({m, 4096, 4096, bits});
      else if (bits == 2)
        b->Args({m, 4096, 4096});
    }
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

BENCHMARK(BM_QuantizedGemm)->Apply([](benchmark::internal::Benchmark* b) { shapes(b, true); });
BENCHMARK(BM_OpenBlasSgemm)->Apply([](benchmark::internal::Benchmark* b) { shapes(b, false); });

}  // namespace
