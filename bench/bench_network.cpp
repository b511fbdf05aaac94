// Inference of the papers' MNIST MLP, FP32 against two-bit (MSPTQ codes through qgemm), timed in
// the same run: on the CPU (nuq::Network, OpenBLAS for FP32) and, where a CUDA device is visible,
// device-resident (cuda::infer_mlp: cuBLAS SGEMM with TF32 off against the qgemm kernels).
// Counter: images/s; `batch` images per forward pass over `images` in all.
//   build/bench/bench_network --benchmark_out=network.json --benchmark_out_format=json
// bench/network_report.py turns the JSON into the FP32 / two-bit table.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "nuq/cuda.h"
#include "nuq/design.h"
#include "nuq/io/dataset.h"
#include "nuq/model.h"
#include "nuq/network.h"
#include "nuq/ptq.h"
#include "gpu_context.h"

namespace {

// The test set's size and shape; pixels uniform (the speed does not depend on them).
const nuq::io::Dataset& images() {
  static const nuq::io::Dataset data = [] {
    nuq::io::Dataset d;
    d.count = 10000;
    d.rows = d.cols = 28;
    d.images.resize(d.count * 784);
    d.labels.assign(d.count, 0);
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
    for (float& p : d.images) p = pixel(rng);
    return d;
  }();
  return data;
}

nuq::Codebook msptq() {
  nuq::DesignSpec spec;
  spec.method = nuq::Method::Msptq;
  return nuq::design(spec).codebook;
}

struct Models {
  nuq::Model fp32 = nuq::make_model(nuq::Architecture::Mlp, 1);
  nuq::QuantizedModel two_bit = nuq::quantize_model(fp32, msptq());
  nuq::Model skeleton = nuq::dequantize_model(two_bit);  // biases for the packed network
};
Models& models() {
  static Models m;
  return m;
}

void counters(benchmark::State& state, std::size_t count) {
  state.counters["images/s"] =
      benchmark::Counter(double(state.iterations()) * double(count), benchmark::Counter::kIsRate);
}

// range(0): 0 FP32, 2 two-bit; range(1): batch; range(2): images.
void BM_CpuMlp(benchmark::State& state) {
  const bool quantized = state.range(0) != 0;
  const auto batch = std::size_t(state.range(1)), count = std::size_t(state.range(2));
  Models& m = models();
  nuq::Network network(quantized ? m.skeleton : m.fp32, quantized ? &m.two_bit : nullptr);
  const float* pixels = images().images.data();
  for (auto _ : state)
    for (std::size_t first = 0; first < count; first += batch)
      benchmark::DoNotOptimize(network.forward(pixels + first * 784, std::min(batch, count - first), false).data());
  counters(state, count);
}

// range(3): 1 for BF16 tensor cores in the quantized layers' large batches; range(4): 1 for a
// cluster of blocks per batch of up to four images (the fused MLP spread over several SMs).
void BM_GpuMlp(benchmark::State& state) {
  const bool quantized = state.range(0) != 0;
  const auto batch = std::size_t(state.range(1)), count = std::size_t(state.range(2));
  const auto precision = state.range(3) ? nuq::cuda::Precision::Bf16 : nuq::cuda::Precision::Fp32;
  const auto layout = state.range(4) ? nuq::cuda::MlpLayout::ClusterPerBatch : nuq::cuda::MlpLayout::OneBlockPerBatch;
  nuq::io::Dataset part = images();
  part.count = count;
  part.images.resize(count * 784);
  part.labels.resize(count);
  Models& m = models();
  if (!nuq::bench::time_iterations(state, [&] {
        return nuq::cuda::infer_mlp(m.fp32, quantized ? &m.two_bit : nullptr, part, batch, 0, precision, layout)
                   .milliseconds /
               1e3;
      }))
    return;
  counters(state, count);
}

void cases(benchmark::internal::Benchmark* b, bool gpu) {
  if (gpu)
    b->ArgNames({"bits", "batch", "images", "bf16", "cluster"});
  else
    b->ArgNames({"bits", "batch", "images", "bf16"});
  const auto add = [&](long bits, long batch, long images, long bf16, long cluster) {
    if (gpu)
      b->Args({bits, batch, images, bf16, cluster});
    else
      b->Args({bits, batch, images, bf16});
  };
  for (long bits : {0, 2})
    for (long bf16 : {0, 1}) {
      if (bf16 && (!gpu || bits == 0)) continue;  // tensor cores: the GPU's quantized layers only
      add(bits, 1, gpu ? 1000 : 200, bf16, 0);  // latency: one image per pass
      for (long batch : {16, 64, 256, 1000}) add(bits, batch, 10000, bf16, 0);
      if (gpu) add(bits, 10000, 10000, bf16, 0);
    }
  if (gpu) {  // the fused MLP's batches of one and four images on one SM and on a cluster of SMs
    add(0, 4, 1000, 0, 0);
    add(2, 4, 1000, 0, 0);
    add(2, 1, 1000, 0, 1);
    add(2, 4, 1000, 0, 1);
  }
  b->Unit(benchmark::kMicrosecond);
  if (gpu)
    b->UseManualTime()->Iterations(5);
  else
    b->UseRealTime();
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::RegisterBenchmark("BM_CpuMlp", BM_CpuMlp)->Apply([](auto* b) { cases(b, false); });
  if (nuq::bench::add_gpu_context())
    benchmark::RegisterBenchmark("BM_GpuMlp", BM_GpuMlp)->Apply([](auto* b) { cases(b, true); });
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
