// What both CUDA backends (cuda_backend.cu: host memory streamed through; device_resident_backend.cu:
// weights already in device memory) share: the device chosen and described, a QuantizeTable copied
// to the device, and a device statistics partial read as the CPU reports statistics.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <memory>
#include <string>

#include "cuda_check.cuh"
#include "device_buffer.cuh"
#include "nuq/error.h"
#include "nuq/quantize_table.h"
#include "nuq/stats.h"
#include "quantize.cuh"
#include "weight_stats.cuh"

namespace nuq::cuda {

// Rows longer than this take the whole device each in row_stats, not a warp (the CPU's threshold):
// a warp per long row would leave most of the device idle.
constexpr std::size_t kLongRow = 16 * 4096;

// The properties of `device`; throws naming it when it does not exist. (A backend makes its device
// current only within each of its calls: device_scope.cuh.)
inline cudaDeviceProp device_properties(int device) {
  int count = 0;
  NUQ_CUDA_CHECK(cudaGetDeviceCount(&count));
  NUQ_REQUIRE(device >= 0 && device < count, "CUDA device ", device, " does not exist (", count, " visible)");
  cudaDeviceProp prop{};
  NUQ_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return prop;
}

// A QuantizeTable copied to the device, for a call over `rows` rows (one group, or one per row).
struct UploadedTable {
  UploadedTable(const QuantizeTable& table, std::size_t rows)
      : thresholds(table.thresholds), levels(table.levels), params(table.params) {
    NUQ_REQUIRE(table.groups == 1 || table.groups == rows, "codebook groups (", table.groups, ") must be 1 or ", rows);
    view = {thresholds.data(), levels.data(), params.data(), table.levels_count, table.groups != 1, table.bits};
    // Copies from pageable memory may still be in flight on the legacy stream when cudaMemcpy
    // returns; the kernels that read the table run on non-blocking streams, which do not wait.
    NUQ_CUDA_CHECK(cudaStreamSynchronize(cudaStreamLegacy));
  }
  DeviceBuffer<float> thresholds, levels;
  DeviceBuffer<GroupParams> params;
  DeviceTable view;
};

// The last table a backend uploaded, kept on the device: a streamed run quantizes a tensor (or, with
// one normalisation for all, a whole checkpoint) a piece of a few MiB at a time, every piece with the
// same table, and an upload each (three allocations, copies, a synchronisation, three frees, each
// free synchronising the device) would cost as much as the piece's own copies. Only one-group
// tables are kept for reuse: a per-row table belongs to one call's rows, and a host copy of it to
// compare with (16 bits: 256 KiB a row) would cost more than its upload. Not thread-safe: a backend
// that keeps one takes one call at a time.
class TableCache {
 public:
  const DeviceTable& on_device(const QuantizeTable& table, std::size_t rows) {
    NUQ_REQUIRE(table.groups == 1 || table.groups == rows, "codebook groups (", table.groups, ") must be 1 or ", rows);
    // (host_ is empty, no match, unless uploaded_ holds it, a one-group table)
    if (!(table.groups == 1 && same_bits(host_, table))) {
      release();  // before the next is allocated: a large per-row table twice may not fit
      uploaded_ = std::make_unique<UploadedTable>(table, rows);
      if (table.groups == 1) host_ = table;
    }
    return uploaded_->view;
  }
  // Frees the table (a backend's destructor, with its device current).
  void release() {
    uploaded_.reset();
    host_ = QuantizeTable{};
  }

 private:
  QuantizeTable host_;  // what uploaded_ holds where it is a one-group table; else empty
  std::unique_ptr<UploadedTable> uploaded_;
};

// A partial as the CPU reports it: no finite weight leaves mean, spread and extremes 0.
inline WeightStats stats_of(const StatsPartial& p) {
  WeightStats s;
  s.count = p.count;
  s.nonfinite = p.nonfinite;
  if (p.count == 0) return s;
  s.mean = p.mean;
  s.m2 = p.m2;
  s.min = p.min;
  s.max = p.max;
  return s;
}

// NaN or Inf among weights named `name` is an error naming the first (`value`), unless skipped.
inline void require_finite(const WeightStats& s, NonFinite nonfinite, const std::string& name,
                           std::size_t first_nonfinite, float value) {
  if (s.nonfinite != 0 && nonfinite != NonFinite::Skip) throw NonFiniteWeight(name, first_nonfinite, value);
}

}  // namespace nuq::cuda
