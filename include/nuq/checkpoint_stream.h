// Checkpoints of any size quantized with bounded memory: one safetensors file, a folder of shards
// or a Hugging Face `model.safetensors.index.json` in; the same sharding (and a new index) out, in
// the one quantized format (quantized_file.h). Two passes over the input, a bounded piece of rows
// at a time: the statistics, then each output file streamed tensor by tensor. With global
// normalisation every shard's statistics come first (each weight is mapped by all of them), and the
// outputs are written the last shard first (the shards the page cache still holds); otherwise each
// shard's two passes run in turn (the second finds the shard in the page cache, so a checkpoint
// larger than it is read from the disk once), and the headers, which record the statistics of every
// quantized weight, are rewritten at the end. Per-row and group maps are found in the second pass,
// from the weights they map. Peak memory is the pieces in flight, whatever the checkpoint's size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <ostream>
#include <regex>
#include <string>
#include <vector>

#include "nuq/backend.h"
#include "nuq/codebook.h"
#include "nuq/io/safetensors.h"
#include "nuq/normalisation.h"
#include "nuq/sharded_checkpoint.h"
#include "nuq/ptq.h"
#include "nuq/tensor_pieces.h"

namespace nuq {

// A --skip pattern compiled for StreamOptions::skip: ECMAScript syntax, searched in each tensor's
// name. Where the standard library is libstdc++, it is matched in polynomial time (its Thompson
// NFA executor: a pattern such as '(.*)*X' cannot take exponential time, and back-references are
// refused); its compiler recurses a level per nested group, so a pattern of more than
// kMaxSkipPatternLength characters or groups nested deeper than kMaxSkipPatternDepth is refused.
// Errors (nuq::Error) quote the pattern.
constexpr std::size_t kMaxSkipPatternLength = 1024, kMaxSkipPatternDepth = 64;
std::regex skip_pattern(const std::string& pattern);

struct StreamOptions {
  Normalisation normalisation = Normalisation::Global;
  NonFinite nonfinite = NonFinite::Reject;
  // Floating tensors kept as they are, in their own dtype: empty ones; those whose name matches `skip`; 1-D
  // tensors, tensors of one dimension above 1 and those whose name ends in "bias" (norms, biases: a
  // 2-bit norm breaks a model) unless `quantize_vectors`; and those of a
  // module another tool has quantized already, i.e. one holding packed codes or 8-bit weights (an FP8
  // weight's `weight_scale_inv`, GPTQ's `scales` beside its I32 `qweight`), which are kept with it;
  // and masks (is_a_mask in kept_tensors.h: GPT-2's causal `attn.bias`), found as they are read.
  std::optional<std::regex> skip;
  bool quantize_vectors = false;
  // 0, or the run of weights along a row with its own scale: each group's weights meet the codebook
  // as (w - tensor mean) / group scale, the scale their RMS about that mean (docs/format.md).
  // Implies per-row tables; the normalisation is recorded as per-channel with the group size.
  std::size_t group_size = 0;
  std::size_t piece_bytes = kPieceBytes;  // the widened rows processed at a time (tensor_pieces.h)
  std::ostream* progress = nullptr;  // a progress line (\r-updated) when given
  std::ostream* warnings = nullptr;  // StreamReport::warnings, written here as soon as they are known
};

// One quantized tensor's account beyond TensorReport's.
struct StreamTensorReport {
  TensorReport tensor;  // with its measures (SQNR_ex, SQNR_th, share inside, excess kurtosis)
  std::string file;     // the output file it is in
};

struct StreamReport {
  WeightStats stats;                        // every quantized weight together
  std::vector<StreamTensorReport> tensors;  // in name order
  std::vector<std::string> kept;            // tensors stored as they were
  std::vector<std::string> warnings;        // of what was kept: F64 matrices, a --skip naming nothing, masks
  std::vector<std::string> outputs;         // files written (shards, then the index)
  std::uint64_t input_bytes = 0, output_bytes = 0;
  double sqnr_ex_db = 0.0, within = 0.0;
  double seconds = 0.0;
  // Of `seconds`: the statistics pass (every input byte read once) and the quantizing pass that
  // writes the outputs (read again, quantized, written), summed over the shards where each shard's
  // passes run in turn; on a cold page cache the first is bound by the disk, the second, served
  // from the cache, by the cores.
  double statistics_seconds = 0.0, quantize_seconds = 0.0;
};

// What quantize_checkpoint_files would do with each tensor of `input` under `options`, from the
// headers and, to tell masks (kept: kMaskReason in kept_tensors.h) from weights, a
// tensor's first values (`nuq inspect`): quantize it, or keep it as it is and why; and the warnings
// a run would give before it starts (StreamReport::warnings; the run tells of masks once pass 1
// has found them).
struct TensorPlan {
  std::string name, file;  // the tensor, and the shard holding it
  io::DType dtype = io::DType::F32;
  std::vector<std::int64_t> shape;
  std::uint64_t bytes = 0;
  std::string kept;  // why it is kept as it is ("named by --skip", ...); empty: quantized
};
struct CheckpointPlan {
  std::vector<TensorPlan> tensors;  // in name order
  std::vector<std::string> warnings;
};
CheckpointPlan plan_checkpoint(const std::string& input, const StreamOptions& options);
// The same over shards already open (open_shards, nuq/sharded_checkpoint.h).
CheckpointPlan plan_checkpoint(const ShardReaders& readers, const StreamOptions& options);

// Quantizes `input` (see checkpoint_shards, nuq/sharded_checkpoint.h) into `output`: a file for a
// single file, a folder of shards with the same names and a new model.safetensors.index.json for a
// sharded input.
StreamReport quantize_checkpoint_files(const std::string& input, const std::string& output, const Codebook& codebook,
                                       const StreamOptions& options, Backend& backend);

}  // namespace nuq
