// One run of the streamed checkpoint quantizer (checkpoint_stream.cpp): its shards, the tensors it
// quantizes and keeps, and each tensor's two passes, which checkpoint_stream.cpp takes in the order
// the normalisation asks for. Private to the library.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "nuq/backend.h"
#include "nuq/checkpoint_stream.h"
#include "nuq/codebook.h"
#include "nuq/error.h"
#include "nuq/quantize_table.h"
#include "nuq/quantized_file.h"
#include "nuq/sharded_checkpoint.h"
#include "nuq/stats.h"
#include "nuq/tensor_pieces.h"
#include "nuq/terminal_text.h"

#include "io/write_behind.h"
#include "kept_tensors.h"
#include "piece_reader.h"
#include "progress_line.h"

namespace nuq {

// A floating tensor to quantize, as the two passes learn about it.
struct StreamJob {
  std::size_t shard = 0;
  std::string name;
  io::TensorEntry entry;
  std::size_t matrix_rows = 0, matrix_cols = 0;  // the [shape[0], rest] view the file describes
  std::size_t rows = 0, cols = 0;                // the view quantized: grouped, [groups, group size]
  WeightStats own;
  // Per row or group, rows a piece holds whole: each row's map is found from its weights in pass 2,
  // as they are quantized, and its scale or levels written then into the room the file left for
  // them at `side_begin` (the data offset of the job's .scales or .codebook).
  bool maps_as_quantized = false;
  std::uint64_t side_begin = 0;
  // Otherwise, after pass 1: the tensor's one map, or per row (rows longer than a piece) each row's,
  // from the statistics of its pieces that pass 1 joined (`long_rows`, at most one per piece: 48
  // bytes a million weights) and, for a row of no finite weight, the tensor's (row_map).
  std::vector<WeightStats> long_rows;
  std::vector<Affine> maps;
  std::size_t map_count = 0;  // the maps stored: one per row (group) for per-row maps, else one
  QuantizeTotals totals;     // pass 2
  double fourth = 0.0;       // pass 2: sum of ((w - mean) / sigma)^4 over the finite weights
  bool a_mask = false;       // pass 1 met -inf in it, and the tensor holds only 0 and -inf: kept
};

// One run of quantize_checkpoint_files: the shards, the tensors to quantize (jobs) and those kept,
// and what the passes share. statistics() and make_maps() are a tensor's first pass, write_shard()
// one output file's second.
//
// quantize_in_two_passes and quantize_shard_by_shard (checkpoint_stream.cpp) call them in their orders.
class StreamRun {
 public:
  StreamRun(const std::string& input, const std::string& output, const Codebook& codebook, const StreamOptions& o,
            Backend& backend);

  // The options' own checks, made before the output folder is: returns `input`.
  static const std::string& checked_options(const std::string& input, const StreamOptions& o, int bits) {
    require_storable(o.normalisation, bits, input, o.group_size);
    // Groups are channels of their own: a map per group, found as per-channel maps are.
    NUQ_REQUIRE(!o.group_size || o.normalisation == Normalisation::PerChannel, input,
                ": a group size takes per-channel normalisation (each group its own scale)");
    return input;
  }

  std::size_t shards() const { return readers_.size(); }
  // Shard s's output, its bytes written and synced, kept as a temporary until publish().
  void hold(std::size_t s, std::unique_ptr<io::SafetensorsWriter> output) { checkpoint_.hold(s, std::move(output)); }
  std::uint64_t quantized_bytes() const { return quantized_bytes_; }
  std::uint64_t total_bytes() const { return total_bytes_; }
  std::vector<StreamJob>& jobs() { return jobs_; }
  StreamReport& report() { return report_; }

  // Every job (or shard `only`'s) in the order of its bytes in its shard, shard after shard: reads
  // go front to back.
  std::vector<StreamJob*> file_order(std::optional<std::size_t> only = std::nullopt) {
    std::vector<StreamJob*> order;
    for (StreamJob& job : jobs_)
      if (!only || job.shard == *only) order.push_back(&job);
    std::sort(order.begin(), order.end(), [](const StreamJob* a, const StreamJob* b) {
      return std::tie(a->shard, a->entry.begin) < std::tie(b->shard, b->entry.begin);
    });
    return order;
  }

  // Pass 1 of one tensor: its statistics, and per channel for rows longer than a piece each row's
  // map (rows a piece holds whole have theirs found in pass 2).
  void statistics(StreamJob& job, Progress& progress);

  // After pass 1 over every shard (or shard `only`): the tensors it found to be masks (holds_a_mask)
  // are kept as they are rather than quantized, and said so, before their statistics join anything.
  // Pointers to jobs are not valid after.
  void keep_masks(std::optional<std::size_t> only = std::nullopt);

  // After pass 1 with global normalisation: tensors that set every other's scale are told of.
  void warn_of_scale_setting_tensors(const WeightStats& global);

  // After pass 1: the tensor's map (global normalisation: from `global`, every tensor's statistics),
  // and the count of maps stored.
  void make_maps(StreamJob& job, const WeightStats& global);

  // The metadata of shard s's output: the input's, and the description of what was quantized with
  // the statistics of every quantized weight (`mean`, `stddev`).
  std::map<std::string, std::string> shard_metadata(std::size_t s, double mean, double stddev) const;

  // Pass 2 of shard s: its output file, tensor by tensor in the order its header gives, written on
  // the returned writer's thread (not yet finished). `metadata` (shard_metadata) is let go once the
  // header is written: with many tensors it is tens of MB of description.
  std::unique_ptr<io::WriteBehind> write_shard(std::size_t s, std::map<std::string, std::string> metadata,
                                               Progress& progress);

  // Once every shard's output is held: each renamed into place (ShardedCheckpoint::publish), and
  // the files written listed, in the shards' order, with a folder out the new index.
  void publish();

  // Every tensor's account, and the totals.
  void account(const WeightStats& global);

 private:
  void take_statistics(StreamJob& job, Progress& progress);  // statistics(), but for the masks it keeps
  // Throws unless every tensor the jobs will store (codes, codebook or grid, scales) has a name no
  // tensor of the input has, in any shard: the constructor's check, before any pass (a tensor that
  // is a mask will be kept, and is let be; the names follow from the options, so write_shard's are
  // these).
  void require_names_free() const;
  // A line for the report, written now too where warnings are asked for (before a run that may take
  // minutes, rather than in its report at the end).
  void warn(std::string line) {
    if (o_.warnings) *o_.warnings << warning_line(line);
    report_.warnings.push_back(std::move(line));
  }

  // The masks kept (shard -> their names, quoted), a line for each shard.
  void tell_of_masks(const std::map<std::size_t, std::vector<std::string>>& masks) {
    for (const auto& [s, names] : masks) warn(masks_kept(readers_[s]->path(), names));
  }

  // Per channel (not in groups), a row's table of 2^bits F32 levels outweighs a short row: tensors
  // that would come out larger than they went in (Mamba's conv1d.weight [d, 1, 4]: 34 bits a
  // weight) are told of before the run.
  void warn_of_tables_larger_than_rows();

  // The map the description records: the tensor's, or (per channel) its own statistics.
  TensorDescription description(const StreamJob& job) const {
    const Affine map = per_row_ ? Affine{job.own.mean, job.own.stddev()} : job.maps[0];
    return {job.entry.shape, job.entry.dtype, job.matrix_rows, job.matrix_cols, bits_, map.mean, map.scale,
            o_.group_size};
  }

  // One stored tensor of a job (its name is the job's plus `suffix`): its grid, codebook, scales or codes.
  void write_stored(StreamJob& job, const std::string& suffix, const io::SafetensorsReader& reader, io::WriteBehind& out,
                    Progress& progress);

  // The table of a share of a per-row job: the rows' maps read back (rows longer than a piece,
  // joined in pass 1), or found from the weights in hand (pass 1 would have found the same, row by
  // row) and their scales or levels copied to `side` (the bytes the file stores for these rows).
  QuantizeTable share_table(const StreamJob& job, const io::SafetensorsReader& reader, const WeightView& w, const Piece& share,
                            std::uint8_t* side);

  // The table of a share's rows or groups: a group's levels as a reader restores them (grouped.h).
  QuantizeTable rows_table(const StreamJob& job, const std::vector<Affine>& maps) const;

  std::string tensor_where(const StreamJob& job) const { return readers_[job.shard]->path() + ": tensor '" + job.name + "'"; }

  // The codes of a job, window after window of its pieces.
  void write_codes(StreamJob& job, const io::SafetensorsReader& reader, io::WriteBehind& out, Progress& progress);

  const Codebook& codebook_;
  const StreamOptions& o_;
  Backend& backend_;
  const int bits_;
  const bool per_row_;
  ShardedCheckpoint checkpoint_;  // the shards in, their outputs and the new index
  const std::string input_;       // as given, for errors about the whole checkpoint
  ShardReaders readers_;
  std::vector<StreamJob> jobs_;
  std::set<std::string> kept_;
  std::map<std::string, std::size_t> shard_of_;  // every tensor of the input -> the shard that holds it
  std::uint64_t quantized_bytes_ = 0, total_bytes_ = 0;
  PieceBuffers buffers_;  // the CPU path's shares, one buffer per thread
  StreamReport report_;
};

}  // namespace nuq
