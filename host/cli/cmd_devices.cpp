// nuq devices: the CPU nuq runs on (its threads and BLAS), and which CUDA devices this build can use.
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "nuq/cuda.h"
#include "nuq/error.h"
#include "nuq/platform.h"
#include "table.h"
#include "json_text.h"

namespace nuq::cli {

void add_devices_command(CLI::App& app) {
  auto json = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("devices", "Show the CPU nuq runs on and the CUDA devices this build can use");
  cmd->add_flag("--json", *json, "Print the list as JSON");
  cmd->callback([json] {
    const Platform cpu = this_platform();
    const auto devices = cuda::devices();
    // The backend's GEMMs and the benchmarks' peers open cuBLAS when first used: open it now, so
    // that a library the loader cannot find shows here rather than in the middle of a run.
    std::string cublas, cublas_error;
    if (cuda::compiled()) try {
        cublas = cuda::cublas_library();
      } catch (const Error& e) {
        cublas_error = e.what();
      }
    if (*json) {
      nlohmann::json list = nlohmann::json::array();
      for (const auto& d : devices)
        list.push_back({{"index", d.index}, {"name", d.name},
                        {"compute_capability", std::to_string(d.compute_major) + "." + std::to_string(d.compute_minor)},
                        {"global_memory_bytes", d.global_memory_bytes}, {"multiprocessors", d.multiprocessors},
                        {"l2_bytes", d.l2_bytes}, {"sm_clock_khz", d.sm_clock_khz},
                        {"memory_clock_khz", d.memory_clock_khz}, {"memory_bus_bits", d.memory_bus_bits},
                        {"peak_bandwidth_gbs", cuda::peak_bandwidth_gbs(d)}});
      nlohmann::json j = {{"cpu", {{"processor", cpu.processor}, {"threads", cpu.threads}, {"blas", cpu.blas},
                                   {"blas_core", cpu.blas_core}}},
                          {"cuda_compiled", cuda::compiled()}, {"devices", list}};
      if (devices.empty()) j["reason"] = cuda::unavailable_reason();
      if (!cublas.empty()) j["cublas"] = cublas;
      if (!cublas_error.empty()) j["cublas_error"] = cublas_error;
      std::cout << json_text(j) << '\n';
      return;
    }
    std::cout << "CPU: " << summary(cpu) << '\n';
    std::cout << "CUDA backend: " << (cuda::compiled() ? "compiled" : "not compiled") << '\n';
    if (cuda::compiled()) std::cout << "cuBLAS: " << (cublas.empty() ? "not loaded: " + cublas_error : cublas) << '\n';
    if (devices.empty()) {
      std::cout << cuda::unavailable_reason() << "; nuq computes on the CPU.\n";
      return;
    }
    TextTable table({"index", "name", "compute capability", "memory (GiB)", "SMs"});
    for (const auto& d : devices)
      table.add_row({std::to_string(d.index), d.name,
                     std::to_string(d.compute_major) + "." + std::to_string(d.compute_minor),
                     fixed(static_cast<double>(d.global_memory_bytes) / (1 << 30), 1),
                     std::to_string(d.multiprocessors)});
    std::cout << table.render();
  });
}

}  // namespace nuq::cli
