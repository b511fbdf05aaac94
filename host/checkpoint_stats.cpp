#include "nuq/checkpoint_stats.h"

#include <algorithm>
#include <map>

#include "nuq/error.h"
#include "nuq/io/safetensors_stream.h"
#include "nuq/io/widen.h"
#include "nuq/quantized_file.h"
#include "nuq/sharded_checkpoint.h"
#include "nuq/tensor_pieces.h"
#include "nuq/terminal_text.h"
#include "kept_tensors.h"

namespace nuq {
namespace {

// One tensor's statistics, read kPieceBytes at a time (whole elements) into `buffer`. The pieces'
// statistics join with Chan's formula, as the streamed quantizer's do.
WeightStats tensor_stats(const io::SafetensorsReader& reader, const std::string& name, const io::TensorEntry& entry,
                         NonFinite nonfinite, std::vector<std::uint8_t>& buffer) {
  const WeightType type = io::weight_type(entry.dtype);
  const std::size_t element = element_bytes(type);
  const std::uint64_t bytes = entry.end - entry.begin;
  const std::size_t piece = kPieceBytes / element * element;
  const std::string where = reader.path() + ": tensor '" + name + "'";
  WeightStats stats;
  for (std::uint64_t offset = 0; offset < bytes; offset += piece) {
    const std::size_t n = std::size_t(std::min<std::uint64_t>(piece, bytes - offset));
    reader.prefetch(entry.begin + offset + n, std::size_t{64} << 20);  // the disk works while the cores sum
    buffer.resize(std::max(buffer.size(), n));
    reader.read(entry, offset, n, buffer.data());
    WeightStats part;
    try {
      accumulate(part, buffer.data(), type, n / element, where, nonfinite);
    } catch (const NonFiniteWeight& e) {  // its index within the piece, told as the tensor's
      const std::size_t flat = std::size_t(offset / element) + e.index;
      throw NonFiniteWeight(where, flat, e.value, element_place(entry.shape, flat));
    }
    stats = combine(stats, part);
  }
  return stats;
}

}  // namespace

CheckpointStats checkpoint_weight_stats(const std::string& input, const StreamOptions& options) {
  const ShardReaders shards = open_shards(checkpoint_shards(input));
  std::map<std::string, const io::SafetensorsReader*> readers;  // by path, as the plan names them
  for (const auto& reader : shards) {
    NUQ_REQUIRE(!is_quantized_file(reader->layout().metadata), reader->path(),
                ": already quantized; its weights are codes (`nuq dequantize` it first, or `nuq inspect` it)");
    readers.emplace(reader->path(), reader.get());
  }
  const CheckpointPlan plan = plan_checkpoint(shards, options);
  if (options.warnings)  // as a run would give them, before the reading
    for (const std::string& line : plan.warnings) *options.warnings << warning_line(line);
  std::vector<const TensorPlan*> in_file_order;  // read front to back, shard after shard
  for (const TensorPlan& t : plan.tensors)
    if (t.kept.empty()) in_file_order.push_back(&t);
  const auto begin_of = [&](const TensorPlan* t) { return readers.at(t->file)->layout().tensors.at(t->name).begin; };
  std::stable_sort(in_file_order.begin(), in_file_order.end(), [&](const TensorPlan* a, const TensorPlan* b) {
    return std::make_pair(a->file, begin_of(a)) < std::make_pair(b->file, begin_of(b));
  });
  CheckpointStats out;
  std::vector<std::uint8_t> buffer;
  for (const TensorPlan* t : in_file_order) {
    const io::SafetensorsReader& reader = *readers.at(t->file);
    const WeightStats stats = tensor_stats(reader, t->name, reader.layout().tensors.at(t->name), options.nonfinite, buffer);
    require_finite_weights(stats, reader.path() + ": tensor '" + t->name + "'");
    out.tensors.push_back({t->name, stats});
    out.bytes += t->bytes;
  }
  // Joined in name order, as the quantizer joins them: the result does not depend on the layout.
  std::sort(out.tensors.begin(), out.tensors.end(), [](const TensorStats& a, const TensorStats& b) { return a.name < b.name; });
  for (const TensorStats& t : out.tensors) out.all = combine(out.all, t.stats);
  NUQ_REQUIRE(!out.tensors.empty(), input, ": no tensor to quantize (floating tensors of two or more dimensions above 1 "
              "whose names do not end in 'bias', or any with --quantize-vectors, that --skip does not name)");
  return out;
}

}  // namespace nuq
