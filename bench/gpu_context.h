// The device the GPU benchmarks ran on, written into the JSON's "context" (benchmark's custom
// context), so that the reports take the peak bandwidth and the L2 from the same run rather than
// from an assumed card.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "nuq/cuda.h"

namespace nuq::bench {

// Adds the first visible device's facts; returns false (and adds nothing) without a device. Call
// after benchmark::Initialize: a filter that asks for GPU benchmarks (BM_Gpu..., BM_Cublas...)
// without a device ends the program with the reason and status 1, where it would otherwise match
// nothing, write an empty JSON and exit 0 (a GPU run that failed to start read as one that ran).
inline bool add_gpu_context() {
  const auto devices = cuda::devices();
  if (devices.empty()) {
    const std::string filter = benchmark::GetBenchmarkFilter();
    if (filter.find("Gpu") != std::string::npos || filter.find("Cublas") != std::string::npos) {
      std::fprintf(stderr, "the filter '%s' asks for GPU benchmarks, but no CUDA device can be used: %s\n",
                   filter.c_str(), cuda::unavailable_reason().c_str());
      std::exit(1);
    }
    return false;
  }
  const cuda::DeviceInfo& d = devices.front();
  benchmark::AddCustomContext("gpu_name", d.name);
  benchmark::AddCustomContext("gpu_compute_capability", std::to_string(d.compute_major) + "." + std::to_string(d.compute_minor));
  benchmark::AddCustomContext("gpu_multiprocessors", std::to_string(d.multiprocessors));
  benchmark::AddCustomContext("gpu_l2_bytes", std::to_string(d.l2_bytes));
  benchmark::AddCustomContext("gpu_memory_bytes", std::to_string(d.global_memory_bytes));
  benchmark::AddCustomContext("gpu_sm_clock_khz", std::to_string(d.sm_clock_khz));
  benchmark::AddCustomContext("gpu_peak_bandwidth_gbs", std::to_string(cuda::peak_bandwidth_gbs(d)));
  return true;
}

// Runs the state's iterations, each timed by `seconds()`. A case that throws (a shape a kernel
// refuses, the device out of memory) is skipped with its message: one row of the JSON marked
// with the error rather than the end of the whole run (Google Benchmark catches no exception).
// False when it was skipped: the caller then sets no counters.
template <typename Seconds>
bool time_iterations(benchmark::State& state, Seconds&& seconds) {
  for (auto _ : state) {
    try {
      state.SetIterationTime(seconds());
    } catch (const std::exception& e) {
      state.SkipWithError(e.what());
      return false;  // leaving the loop after SkipWithError, as Google Benchmark asks
    }
  }
  return true;
}

}  // namespace nuq::bench
