// Which tensors of a checkpoint the streamed quantizer (checkpoint_stream.cpp) keeps as they are,
// in their own dtype: private to it.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "nuq/checkpoint_stream.h"
#include "nuq/io/safetensors_stream.h"
#include "nuq/sharded_checkpoint.h"
#include "nuq/stats.h"

namespace nuq {

// Modules another tool has quantized: those holding packed codes or 8-bit weights (I32, U8, I8,
// FP8, F4, ...; never an index or counter buffer: I64, U64, BOOL, F64, or one element, such as
// BatchNorm's num_batches_tracked or position_ids). Their floating tensors are that tool's
// scales, kept with them; such a tensor is a module of its own too (bitsandbytes keeps
// `<m>.weight.absmax` beside its U8 `<m>.weight`).
std::set<std::string> modules_quantized_elsewhere(const ShardReaders& readers);

// Why tensor `name` of `reader` is kept (StreamOptions: what is not floating, empty tensors, 1-D
// ones unless quantize_vectors, those of a module quantized elsewhere, and those --skip names), or
// nullptr when it is quantized.
const char* kept_reason(const std::string& name, const io::TensorEntry& entry, const io::SafetensorsReader& reader,
                        const StreamOptions& o, const std::set<std::string>& quantized_elsewhere);
inline bool kept_as_they_are(const std::string& name, const io::TensorEntry& entry, const io::SafetensorsReader& reader,
                             const StreamOptions& o, const std::set<std::string>& quantized_elsewhere) {
  return kept_reason(name, entry, reader, o, quantized_elsewhere) != nullptr;
}

// Why a mask is kept (is_a_mask).
inline constexpr const char* kMaskReason = "a mask (only 0 and 1, or 0 and one value <= -100 or -inf), not weights";

// Whether floating tensor `entry` of `reader` is a mask stored as floats, not weights: every value 0
// or 1 (multiplied in: GPT-2's causal `h.N.attn.bias`, F32 [1, 1, n, n], one in every layer), or 0
// or one value at most -100 (added to attention scores: 0 and -100 in Swin's `attn_mask`, 0 and the
// dtype's lowest, 0 and -inf in PyTorch's causal masks), both present. Quantized, a mask would come
// back as two other values (a loader that tests it as booleans would let every position attend), and
// with global normalisation its values would set the scale of every weight of the model. Tensors of
// other two values (a test's +-1 checkerboard) are weights. Read `piece_bytes` at a time after its
// first few values (which tell weights apart at the cost of one small read), up to a value a mask
// does not hold.
bool is_a_mask(const io::SafetensorsReader& reader, const io::TensorEntry& entry, std::size_t piece_bytes);

// The same, for a tensor whose statistics pass 1 took (`stats`): read again only where they say
// it may be (every weight finite, the extremes of a mask, a variance at the bound of values at
// its two extremes; or, where non-finite values were skipped, every finite one 0).
bool holds_a_mask(const io::SafetensorsReader& reader, const io::TensorEntry& entry, const WeightStats& stats,
                  std::size_t piece_bytes);

// What a user should be told of what is kept, before a run: floating tensors nuq would quantize
// but for their dtype (F64), and a --skip that names no tensor (a typo that quantizes what it
// meant to keep). One line each, without a prefix.
std::vector<std::string> keeping_warnings(const ShardReaders& readers, const StreamOptions& o,
                                          const std::set<std::string>& quantized_elsewhere);

// The error for tensors of `input` whose rows do not split into groups of `group_size`: every one
// named (the first few spelled out), with a --skip that keeps them where one is short enough to be
// typed (to be joined to the --skip given, if one was).
std::string ungroupable_error(const std::string& input, std::vector<std::string> names, std::size_t group_size,
                              bool skip_given);

// The warning for the masks of shard `path` kept as they are (`names`, quoted).
std::string masks_kept(const std::string& path, const std::vector<std::string>& names);

}  // namespace nuq
