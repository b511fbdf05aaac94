#include "nuq/checkpoint_stats.h"

#include <algorithm>
#include <map>

#include "nuq/error.h"
#include "nuq/io/safetensors_stream.h"
#include "nuq/io/widen.h"
#include "nuq/measured_rate.h"
#include "nuq/quantized_file.h"
#include "nuq/sharded_checkpoint.h"
#include "nuq/tensor_pieces.h"
#include "nuq/terminal_text.h"
#include "kept_tensors.h"
#include "progress_line.h"

namespace nuq {
namespace {

// Each piece of kPieceBytes (whole elements) of one tensor read into `buffer`, handed to
// visit(first element, count, bytes), the disk reading ahead while the cores work.
template <typename Visit>
void for_each_piece(const io::SafetensorsReader& reader, const io::TensorEntry& entry,
                    std::vector<std::uint8_t>& buffer, const Visit& visit) {
  const std::size_t element = element_bytes(io::weight_type(entry.dtype));
  const std::uint64_t bytes = entry.end - entry.begin;
  const std::size_t piece = kPieceBytes / element * element;
  for (std::uint64_t offset = 0; offset < bytes; offset += piece) {
    const std::size_t n = std::size_t(std::min<std::uint64_t>(piece, bytes - offset));
    reader.prefetch(entry.begin + offset + n, std::size_t{64} << 20);
    buffer.resize(std::max(buffer.size(), n));
    reader.read(entry, offset, n, buffer.data());
    visit(std::size_t(offset / element), n / element, buffer.data());
  }
}

// One tensor's statistics, a piece at a time. The pieces' statistics join with Chan's formula, as
// the streamed quantizer's do.
WeightStats tensor_stats(const io::SafetensorsReader& reader, const std::string& name, const io::TensorEntry& entry,
                         NonFinite nonfinite, std::vector<std::uint8_t>& buffer, Progress& progress) {
  const WeightType type = io::weight_type(entry.dtype);
  const std::string where = reader.path() + ": tensor '" + name + "'";
  WeightStats stats;
  for_each_piece(reader, entry, buffer, [&](std::size_t first, std::size_t count, const std::uint8_t* values) {
    WeightStats part;
    try {
      accumulate(part, values, type, count, where, nonfinite);
    } catch (const NonFiniteWeight& e) {  // its index within the piece, told as the tensor's
      throw NonFiniteWeight(where, first + e.index, e.value, element_place(entry.shape, first + e.index));
    }
    stats = combine(stats, part);
    progress.advance("statistics", name, count * element_bytes(type));
  });
  return stats;
}

// The tensors a run under `options` quantizes, each with its reader, in the order their bytes lie
// (shard after shard, front to back), so that the disk reads straight through.
class PlannedTensors {
 public:
  PlannedTensors(const std::string& input, const StreamOptions& options)
      : shards_(open_shards(checkpoint_shards(input))) {
    for (const auto& reader : shards_) {
      NUQ_REQUIRE(!is_quantized_file(reader->layout().metadata), reader->path(),
                  ": already quantized; its weights are codes (`nuq dequantize` it first, or `nuq inspect` it)");
      readers_.emplace(reader->path(), reader.get());
    }
    plan_ = plan_checkpoint(shards_, options);
    for (const TensorPlan& t : plan_.tensors)
      if (t.kept.empty()) in_file_order_.push_back(&t);
    std::stable_sort(in_file_order_.begin(), in_file_order_.end(), [&](const TensorPlan* a, const TensorPlan* b) {
      return std::make_pair(a->file, entry(*a).begin) < std::make_pair(b->file, entry(*b).begin);
    });
  }
  const CheckpointPlan& plan() const { return plan_; }
  const std::vector<const TensorPlan*>& in_file_order() const { return in_file_order_; }
  std::uint64_t bytes() const {  // of the tensors to read
    std::uint64_t total = 0;
    for (const TensorPlan* t : in_file_order_) total += t->bytes;
    return total;
  }
  const io::SafetensorsReader& reader(const TensorPlan& t) const { return *readers_.at(t.file); }
  const io::TensorEntry& entry(const TensorPlan& t) const { return reader(t).layout().tensors.at(t.name); }

 private:
  ShardReaders shards_;
  std::map<std::string, const io::SafetensorsReader*> readers_;  // by path, as the plan names them
  CheckpointPlan plan_;
  std::vector<const TensorPlan*> in_file_order_;
};

}  // namespace

CheckpointStats checkpoint_weight_stats(const std::string& input, const StreamOptions& options) {
  const PlannedTensors planned(input, options);
  if (options.warnings)  // as a run would give them, before the reading
    for (const std::string& line : planned.plan().warnings) *options.warnings << warning_line(line);
  CheckpointStats out;
  std::vector<std::uint8_t> buffer;
  Progress progress(options.progress, planned.bytes());
  for (const TensorPlan* t : planned.in_file_order()) {
    const io::SafetensorsReader& reader = planned.reader(*t);
    const WeightStats stats = tensor_stats(reader, t->name, planned.entry(*t), options.nonfinite, buffer, progress);
    require_finite_weights(stats, reader.path() + ": tensor '" + t->name + "'");
    out.tensors.push_back({t->name, stats});
    out.bytes += t->bytes;
  }
  progress.close();
  // Joined in name order, as the quantizer joins them: the result does not depend on the layout.
  std::sort(out.tensors.begin(), out.tensors.end(), [](const TensorStats& a, const TensorStats& b) { return a.name < b.name; });
  for (const TensorStats& t : out.tensors) out.all = combine(out.all, t.stats);
  NUQ_REQUIRE(!out.tensors.empty(), input, ": no tensor to quantize (floating tensors of two or more dimensions above 1 "
              "whose names do not end in 'bias', or any with --quantize-vectors, that --skip does not name)");
  return out;
}

std::vector<QuantizeTotals> checkpoint_quantized_totals(const std::string& input, const StreamOptions& options,
                                                      const CheckpointStats& stats, const QuantizeTable& table,
                                                      std::vector<double>* fourth) {
  StreamOptions quiet = options;
  quiet.warnings = nullptr;  // told once, when the statistics were taken
  const PlannedTensors planned(input, quiet);
  std::map<std::string, std::size_t> index;  // of each tensor in `stats`, in name order
  for (std::size_t i = 0; i < stats.tensors.size(); ++i) index.emplace(stats.tensors[i].name, i);
  std::vector<QuantizeTotals> totals(stats.tensors.size());
  if (fourth) fourth->assign(stats.tensors.size(), 0.0);
  std::vector<std::uint8_t> buffer, codes;
  Progress progress(options.progress, planned.bytes());
  const std::string pass = "quantizing (" + std::to_string(table.levels_count) + " levels)";
  for (const TensorPlan* t : planned.in_file_order()) {
    const auto at = index.find(t->name);
    NUQ_REQUIRE(at != index.end(), input, ": tensor '", t->name, "' was not there when its statistics were taken");
    const io::TensorEntry& entry = planned.entry(*t);
    const WeightType type = io::weight_type(entry.dtype);
    const WeightStats& own = stats.tensors[at->second].stats;
    for_each_piece(planned.reader(*t), entry, buffer, [&](std::size_t, std::size_t count, const std::uint8_t* values) {
      totals[at->second] = combine(totals[at->second], quantized_totals(values, type, count, table, codes));
      if (fourth && has_spread(own))
        (*fourth)[at->second] += fourth_moment(values, type, count, own.mean, own.stddev());
      progress.advance(pass, t->name, count * element_bytes(type));
    });
  }
  progress.close();
  return totals;
}

}  // namespace nuq
