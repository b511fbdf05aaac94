// Speed of the design engine on the host: exact distortion per cell, the paper's iterations,
// the numerical optimum and Lloyd-Max. Counters give cells/s so that sizes compare directly.
//   build/bench/bench_design --benchmark_out=design.json --benchmark_out_format=json
#include <benchmark/benchmark.h>

#include "nuq/design.h"
#include "nuq/laplace.h"
#include "nuq/lloyd_max.h"
#include "nuq/power_of_two.h"
#include "nuq/uniform.h"

namespace {

void BM_ExactDistortion(benchmark::State& state) {
  const auto levels = static_cast<std::size_t>(state.range(0));
  const nuq::Codebook codebook = nuq::uniform_codebook(levels, 8.0);
  for (auto _ : state) benchmark::DoNotOptimize(nuq::laplace_distortion(codebook, 1.0));
  state.counters["cells_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations() * levels), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ExactDistortion)->RangeMultiplier(16)->Range(4, 65536);

void BM_SptqAlgorithm1(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(nuq::sptq_iterate(1.0).value());
}
BENCHMARK(BM_SptqAlgorithm1);

void BM_NumericOptimumUniform(benchmark::State& state) {
  nuq::DesignSpec spec;
  spec.method = nuq::Method::Uniform;
  spec.bits = static_cast<int>(state.range(0));
  spec.rule = nuq::XmaxRule::Numeric;
  for (auto _ : state) benchmark::DoNotOptimize(nuq::design(spec).sqnr_db);
}
BENCHMARK(BM_NumericOptimumUniform)->Arg(2)->Arg(8)->Arg(16)->Unit(benchmark::kMillisecond);

void BM_LloydMax(benchmark::State& state) {
  const auto levels = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(nuq::lloyd_max_codebook(levels).xmax());
}
BENCHMARK(BM_LloydMax)->Arg(4)->Arg(16)->Arg(64)->Unit(benchmark::kMillisecond);

}  // namespace
