// The statistics of the weights `nuq quantize` would quantize in a checkpoint (one safetensors
// file, a folder of shards or an index), read a bounded piece at a time without writing anything:
// what `nuq bitrate --model` meets a unit-variance design with when the weights are not
// normalised (the companion paper's variance mismatch), for a checkpoint of any size.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nuq/checkpoint_stream.h"
#include "nuq/quantize_table.h"
#include "nuq/stats.h"

namespace nuq {

struct TensorStats {
  std::string name;
  WeightStats stats;
};

struct CheckpointStats {
  WeightStats all;                   // every weight below together
  std::vector<TensorStats> tensors;  // each tensor that would be quantized, in name order
  std::uint64_t bytes = 0;           // of those tensors, as stored
};

// The tensors are those plan_checkpoint says a run under `options` quantizes (its `skip`,
// `quantize_vectors` and `nonfinite`; the rest is ignored), and the plan's warnings go to
// options.warnings as a run's would. A NaN or infinity is an error naming the file, tensor and
// index unless options.nonfinite skips it; an already quantized file, a tensor in two shards, or a
// checkpoint with nothing to quantize, is an error naming it. With options.progress, a progress line
// (tensor, GB read, GB/s, ETA), as quantize's.
CheckpointStats checkpoint_weight_stats(const std::string& input, const StreamOptions& options);

// The same tensors quantized as they are by `table` (unnormalised_table, measured_rate.h), read
// again a piece at a time and nothing written: each tensor's totals, in the order of
// stats.tensors, as `nuq quantize --normalise none` sums them. With `fourth`, each tensor's sum of
// ((w - mean) / sigma)^4 about its mean and sigma in `stats` too (0 for one of no spread): over its
// count, its kurtosis (6 for a Laplacian, whose excess kurtosis is 3).
std::vector<QuantizeTotals> checkpoint_quantized_totals(const std::string& input, const StreamOptions& options,
                                                      const CheckpointStats& stats, const QuantizeTable& table,
                                                      std::vector<double>* fourth = nullptr);

}  // namespace nuq
