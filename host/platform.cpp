#include "nuq/platform.h"

#include <cblas.h>

#include <fstream>

#include "nuq/cpu_threads.h"

namespace nuq {
namespace {

std::string processor_name() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    const std::size_t colon = line.find(':');
    if (colon == std::string::npos) break;
    const std::size_t start = line.find_first_not_of(' ', colon + 1);
    return start == std::string::npos ? "unknown" : line.substr(start);
  }
  return "unknown";
}

std::string trimmed(const char* text) {
  std::string s = text ? text : "unknown";
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

}  // namespace

Platform this_platform() {
  Platform p;
  p.processor = processor_name();
  p.blas = trimmed(openblas_get_config());
  p.blas_core = trimmed(openblas_get_corename());
  p.threads = cpu_threads();
  return p;
}

std::string summary(const Platform& p) {
  return p.processor + " (" + std::to_string(p.threads) + (p.threads == 1 ? " thread), " : " threads), ") + p.blas +
         ", core " + p.blas_core;
}

}  // namespace nuq
