#include "nuq/checkpoint_stream.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include "nuq/error.h"
#include "nuq/grouped.h"
#include "nuq/io/atomic_file.h"
#include "nuq/io/file_checks.h"
#include "nuq/io/safetensors_stream.h"
#include "nuq/io/widen.h"
#include "nuq/laplace.h"
#include "nuq/list_text.h"
#include "nuq/packed.h"
#include "nuq/quantize_table.h"
#include "nuq/quantized_file.h"
#include "nuq/sharded_checkpoint.h"
#include "nuq/tensor_pieces.h"

#include "io/write_behind.h"
#include "kept_tensors.h"
#include "progress_line.h"
#include "piece_reader.h"

namespace nuq {
namespace {

namespace fs = std::filesystem;
// A floating tensor to quantize, as the two passes learn about it.
struct Job {
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
};

// Grouped maps turned into the tensor's mean and each group's RMS about it, rounded to the F32 the
// file stores.
void to_group_maps(std::vector<Affine>& maps, const Job& job) {
  for (Affine& g : maps) g = group_map(g, job.own.mean);
}

// The maps of rows (groups) [first, first + count) of a job whose maps pass 1 found: per row those
// rows' own, else the tensor's one map.
std::vector<Affine> maps_of(const Job& job, bool per_row, std::size_t first, std::size_t count, bool grouped) {
  if (!per_row) return job.maps;
  std::vector<Affine> maps(job.maps.begin() + std::ptrdiff_t(first), job.maps.begin() + std::ptrdiff_t(first + count));
  if (grouped) to_group_maps(maps, job);
  return maps;
}

// The error for tensors whose rows do not split into groups of `group_size`: every one named (the
// first few spelled out), with a --skip that keeps them where one is short enough to be typed (to
// be joined to the --skip given, if one was).
std::string ungroupable_error(const std::string& input, std::vector<std::string> names, std::size_t group_size,
                              bool skip_given) {
  std::sort(names.begin(), names.end());
  std::string pattern;
  bool typable = true;  // in single quotes, as a shell takes them
  for (const std::string& name : names) {
    typable = typable && name.find('\'') == std::string::npos;
    pattern += pattern.empty() ? "^(" : "|";
    for (char c : name) pattern += std::string(std::strchr(".^$|()[]{}*+?\\", c) && c ? "\\" : "") + c;
  }
  pattern += ")$";
  std::vector<std::string> quoted;
  for (const std::string& name : names) quoted.push_back("'" + name + "'");
  return input + ": the rows of " + std::to_string(names.size()) + " tensor(s) do not split into groups of " +
         std::to_string(group_size) + ": " + first_few(quoted, 5) + "; keep them as they are with --skip" +
         (typable && pattern.size() <= 300 ? " '" + pattern + "'" : "") +
         (skip_given ? " (joined with '|' to the --skip given)" : "") + ", or choose a group size that divides their rows";
}

std::string where_of(const io::SafetensorsReader& reader, const std::string& tensor, const Piece& p) {
  return reader.path() + ": tensor '" + tensor + "' (from row " + std::to_string(p.row) + ")";
}

// One run of quantize_checkpoint_files: the shards, the tensors to quantize (jobs) and those kept,
// and what the passes share. statistics() and make_maps() are a tensor's first pass, write_shard()
// one output file's second.
//
// quantize_in_two_passes and quantize_shard_by_shard (below) call them in their orders.
class StreamRun {
 public:
  StreamRun(const std::string& input, const std::string& output, const Codebook& codebook, const StreamOptions& o,
            Backend& backend)
      : codebook_(codebook), o_(o), backend_(backend), bits_(storage_bits(codebook)),
        per_row_(o.normalisation == Normalisation::PerChannel || o.group_size > 0),
        checkpoint_(checked_options(input, o, bits_), output), input_(input) {
    const std::vector<std::string>& shard_paths = checkpoint_.inputs();
    if (!checkpoint_.input_index().empty()) report_.input_bytes += fs::file_size(checkpoint_.input_index());
    readers_ = open_shards(shard_paths);
    for (const auto& reader : readers_) {
      NUQ_REQUIRE(!is_quantized_file(reader->layout().metadata), reader->path(),
                  ": already quantized; `nuq dequantize` it first to quantize the restored weights again");
      report_.input_bytes += reader->file_size();
    }
    const std::set<std::string> quantized_elsewhere = modules_quantized_elsewhere(readers_);
    report_.warnings = keeping_warnings(readers_, o, quantized_elsewhere);
    if (o.warnings)  // now, before a run that may take minutes, rather than in its report at the end
      for (const std::string& line : report_.warnings) *o.warnings << "nuq: warning: " << line << '\n';
    std::vector<std::string> ungroupable;  // rows that do not split into groups: told all at once
    std::map<std::size_t, std::vector<std::string>> masks;  // such tensors that are masks: kept
    for (std::size_t s = 0; s < readers_.size(); ++s) {
      const io::SafetensorsReader& reader = *readers_[s];
      for (const auto& [name, entry] : reader.layout().tensors) {
        total_bytes_ += entry.end - entry.begin;
        if (kept_as_they_are(name, entry, reader, o, quantized_elsewhere)) {
          kept_.insert(name);
          continue;
        }
        Job job;
        job.shard = s;
        job.name = name;
        job.entry = entry;
        std::tie(job.matrix_rows, job.matrix_cols) = matrix_view(entry.shape, entry.element_count());
        job.rows = job.matrix_rows;
        job.cols = job.matrix_cols;
        if (o.group_size) {
          if (o.group_size % 8 == 0 && job.cols % o.group_size) {  // (a mask is kept whatever its rows)
            if (is_a_mask(reader, entry, o.piece_bytes)) {
              kept_.insert(name);
              masks[s].push_back("'" + name + "'");
            } else {
              ungroupable.push_back(name);
            }
            continue;
          }
          require_groupable(o.group_size, job.cols, bits_, reader.path() + ": tensor '" + name + "'");
          job.rows = job.matrix_rows * (job.matrix_cols / o.group_size);
          job.cols = o.group_size;
        }
        job.maps_as_quantized = per_row_ && whole_rows(job.cols, o.piece_bytes);
        jobs_.push_back(std::move(job));
        quantized_bytes_ += entry.end - entry.begin;
      }
    }
    if (!ungroupable.empty()) throw Error(ungroupable_error(input, ungroupable, o.group_size, o.skip.has_value()));
    tell_of_masks(masks);
    warn_of_tables_larger_than_rows();
    NUQ_REQUIRE(!jobs_.empty(), input, ": no tensor to quantize (floating tensors of two or more dimensions above 1 whose "
                "names do not end in 'bias', or any with --quantize-vectors, that --skip does not name)");
  }

  // The options' own checks, made before the output folder is: returns `input`.
  static const std::string& checked_options(const std::string& input, const StreamOptions& o, int bits) {
    require_storable(o.normalisation, bits, input, o.group_size);
    // Groups are channels of their own: a map per group, found as per-channel maps are.
    NUQ_REQUIRE(!o.group_size || o.normalisation == Normalisation::PerChannel, input,
                ": a group size takes per-channel normalisation (each group its own scale)");
    return input;
  }

  std::size_t shards() const { return readers_.size(); }
  void begin_writing() const { checkpoint_.begin_writing(); }
  std::uint64_t quantized_bytes() const { return quantized_bytes_; }
  std::uint64_t total_bytes() const { return total_bytes_; }
  std::vector<Job>& jobs() { return jobs_; }
  StreamReport& report() { return report_; }

  // Every job (or shard `only`'s) in the order of its bytes in its shard, shard after shard: reads
  // go front to back.
  std::vector<Job*> file_order(std::optional<std::size_t> only = std::nullopt) {
    std::vector<Job*> order;
    for (Job& job : jobs_)
      if (!only || job.shard == *only) order.push_back(&job);
    std::sort(order.begin(), order.end(), [](const Job* a, const Job* b) {
      return std::tie(a->shard, a->entry.begin) < std::tie(b->shard, b->entry.begin);
    });
    return order;
  }

  // Pass 1 of one tensor: its statistics, and per channel for rows longer than a piece each row's
  // map (rows a piece holds whole have theirs found in pass 2).
  void statistics(Job& job, Progress& progress) {
    const io::SafetensorsReader& reader = *readers_[job.shard];
    WeightStats row;  // a row read in column pieces
    const std::string where = tensor_where(job);
    const std::vector<Piece> pieces = pieces_of(job.rows, job.cols, o_.piece_bytes);
    PieceReader source(reader, job.entry, job.cols, pieces, backend_, buffers_);
    for (std::size_t k = 0; k < pieces.size();) {
      const PieceWindow window = source.start(k);
      std::vector<WeightStats> share_stats(window.items.size());
      for_each_share(window.items.size(), [&](std::size_t i) {
        const Piece& share = window.items[i].share;
        const WeightView w = source.weights(window, i);
        share_stats[i] = locating_nonfinite(where, job.entry.shape, job.cols, share, [&] {
          return backend_.stats_as(w.data, w.type, share.rows * share.cols, where, o_.nonfinite);
        });
      });
      for (std::size_t i = 0; k < window.last; ++k) {  // piece by piece, each share in order
        const Piece& p = pieces[k];
        WeightStats piece;
        for (; i < window.items.size() && window.items[i].piece == k; ++i) piece = combine(piece, share_stats[i]);
        job.own = combine(job.own, piece);
        if (per_row_ && !job.maps_as_quantized) {  // a piece of one row's columns
          row = combine(row, piece);
          if (p.col + p.cols == job.cols) {
            job.long_rows.push_back(row);
            row = {};
          }
        }
        progress.advance("statistics", job.name, p.rows * p.cols * io::dtype_size(job.entry.dtype));
      }
    }
  }

  // After pass 1 over every shard (or shard `only`): the tensors it found to be masks (holds_a_mask)
  // are kept as they are rather than quantized, and said so, before their statistics join anything.
  // Pointers to jobs are not valid after.
  void keep_masks(std::optional<std::size_t> only = std::nullopt) {
    std::map<std::size_t, std::vector<std::string>> masks;  // shard -> the masks found in it
    const auto found = [&](const Job& job) {
      if ((only && job.shard != *only) || !holds_a_mask(*readers_[job.shard], job.entry, job.own, o_.piece_bytes))
        return false;
      masks[job.shard].push_back("'" + job.name + "'");
      kept_.insert(job.name);
      quantized_bytes_ -= job.entry.end - job.entry.begin;
      return true;
    };
    jobs_.erase(std::remove_if(jobs_.begin(), jobs_.end(), found), jobs_.end());
    tell_of_masks(masks);
    NUQ_REQUIRE(!jobs_.empty(), input_, ": no tensor to quantize: every one it would quantize is a mask (only 0 and 1, or "
                "0 and one value <= -100; kept as they are)");
  }

  // The masks kept (shard -> their names, quoted), a line for each shard.
  void tell_of_masks(const std::map<std::size_t, std::vector<std::string>>& masks) {
    for (const auto& [s, names] : masks) {
      report_.warnings.push_back(readers_[s]->path() + ": " + std::to_string(names.size()) +
                                 " mask(s) kept as they are (only 0 and 1, as GPT-2's causal attn.bias, or 0 and "
                                 "one value <= -100, added to attention scores; not weights): " + first_few(names, 3));
      if (o_.warnings) *o_.warnings << "nuq: warning: " << report_.warnings.back() << '\n';
    }
  }

  // Per channel (not in groups), a row's table of 2^bits F32 levels outweighs a short row: tensors
  // that would come out larger than they went in (Mamba's conv1d.weight [d, 1, 4]: 34 bits a
  // weight) are told of before the run.
  void warn_of_tables_larger_than_rows() {
    if (o_.normalisation != Normalisation::PerChannel || o_.group_size) return;
    std::vector<std::string> larger;
    for (const Job& job : jobs_) {
      const std::size_t row_after = packed_row_bytes(job.cols, bits_) + (sizeof(float) << bits_);
      if (job.cols && row_after >= job.cols * io::dtype_size(job.entry.dtype) &&
          !is_a_mask(*readers_[job.shard], job.entry, o_.piece_bytes))  // (pass 1 will keep a mask)
        larger.push_back("'" + job.name + "'");
    }
    if (larger.empty()) return;
    report_.warnings.push_back(input_ + ": " + std::to_string(larger.size()) + " tensor(s) of rows too short for " +
                               "a table of " + std::to_string(1 << bits_) + " levels each come out larger than they " +
                               "went in: " + first_few(larger, 3) + " (--skip them, or use --group-size or " +
                               "--normalise per-tensor)");
    if (o_.warnings) *o_.warnings << "nuq: warning: " << report_.warnings.back() << '\n';
  }

  // After pass 1 with global normalisation: tensors that set every other's scale are told of.
  void warn_of_scale_setting_tensors(const WeightStats& global) {
    std::vector<std::pair<std::string, WeightStats>> tensors;
    for (const Job& job : jobs_) tensors.push_back({job.name, job.own});
    const std::string line = scale_setting_tensors(tensors, global);
    if (line.empty()) return;
    report_.warnings.push_back(input_ + ": " + line);
    if (o_.warnings) *o_.warnings << "nuq: warning: " << report_.warnings.back() << '\n';
  }

  // After pass 1: the tensor's map (global normalisation: from `global`, every tensor's statistics),
  // and the count of maps stored.
  void make_maps(Job& job, const WeightStats& global) {
    require_finite_weights(job.own, tensor_where(job));
    for (const WeightStats& row : job.long_rows) job.maps.push_back(row_map(row, job.own));
    job.long_rows = {};
    if (!per_row_)
      job.maps = normalise_tensor(o_.normalisation, nullptr, job.rows, job.cols, global, job.own, job.name,
                                  o_.nonfinite, backend_).maps;
    job.map_count = per_row_ ? job.rows : job.maps.size();
    NUQ_ASSERT(job.maps_as_quantized || job.maps.size() == job.map_count, job.name, ": ", job.maps.size(), " maps for ",
               job.map_count);
  }

  // The metadata of shard s's output: the input's, and the description of what was quantized with
  // the statistics of every quantized weight (`mean`, `stddev`).
  std::map<std::string, std::string> shard_metadata(std::size_t s, double mean, double stddev) const {
    std::map<std::string, TensorDescription> described;
    for (const Job& job : jobs_)
      if (job.shard == s) described.emplace(job.name, description(job));
    std::vector<std::string> kept;
    for (const auto& [name, entry] : readers_[s]->layout().tensors)
      if (kept_.count(name)) kept.push_back(name);
    std::map<std::string, std::string> metadata = readers_[s]->layout().metadata;
    metadata.erase(kRestoredFromKey);  // a quantized file is not a restored one
    metadata["nuq.quantized"] = describe_quantized(codebook_, o_.normalisation, mean, stddev, described, kept);
    return metadata;
  }

  // Pass 2 of shard s: its output file, tensor by tensor in the order its header gives, written on
  // the returned writer's thread (not yet finished).
  std::unique_ptr<io::WriteBehind> write_shard(std::size_t s, const std::map<std::string, std::string>& metadata,
                                               Progress& progress) {
    const io::SafetensorsReader& reader = *readers_[s];
    const std::string& out_path = checkpoint_.output(s);
    std::map<std::string, Job*> quantized;  // stored tensor name -> its job
    std::vector<std::pair<std::string, io::TensorEntry>> planned;
    for (Job& job : jobs_) {
      if (job.shard != s) continue;
      for (auto& stored : stored_tensors(job.name, description(job), job.map_count, stores_grid(codebook_, bits_) && !per_row_)) {
        NUQ_REQUIRE(!reader.layout().tensors.count(stored.first), reader.path(), ": tensor '", job.name,
                    "' cannot be stored: the checkpoint already has a '", stored.first, "'");
        quantized[stored.first] = &job;
        planned.push_back(std::move(stored));
      }
    }
    for (const auto& [name, entry] : reader.layout().tensors)
      if (kept_.count(name)) planned.push_back({name, io::TensorEntry{entry.dtype, entry.shape}});
    // The writes overlap the next piece's work.
    auto out = std::make_unique<io::WriteBehind>(std::make_unique<io::SafetensorsWriter>(out_path, metadata, planned));
    const io::SafetensorsWriter& writer = out->writer();
    std::set<std::string> found_in_pass_two;  // scales or per-row levels, written as the codes are
    for (const auto& [name, entry] : writer.order()) {
      const auto found = quantized.find(name);
      if (found == quantized.end() || !found->second->maps_as_quantized) continue;
      const std::string suffix = name.substr(found->second->name.size());
      if (suffix == (o_.group_size ? ".scales" : ".codebook")) {
        found->second->side_begin = entry.begin;
        found_in_pass_two.insert(name);
      }
    }
    const auto in_shard_with_room = [&](const Job& job) { return job.shard == s && job.maps_as_quantized; };
    NUQ_ASSERT(found_in_pass_two.size() == std::size_t(std::count_if(jobs_.begin(), jobs_.end(), in_shard_with_room)),
               out_path, ": a tensor's scales or tables have no room in the file");
    for (const auto& [name, entry] : writer.order()) {
      checkpoint_.add_tensor(name, s);
      if (found_in_pass_two.count(name)) {
        out->skip(entry.end - entry.begin);
        continue;
      }
      const auto found = quantized.find(name);
      if (found == quantized.end()) {  // kept as it was: its bytes, a piece at a time
        const io::TensorEntry& source = reader.layout().tensors.at(name);
        for (std::uint64_t at = 0; at < source.end - source.begin; at += o_.piece_bytes) {
          const std::size_t bytes = std::min<std::uint64_t>(o_.piece_bytes, source.end - source.begin - at);
          std::vector<std::uint8_t> piece = out->buffer(bytes);
          reader.read(source, at, bytes, piece.data());
          out->append(std::move(piece));
          progress.advance("writing", name, bytes);
        }
        continue;
      }
      write_stored(*found->second, name.substr(found->second->name.size()), reader, *out, progress);
    }
    report_.output_bytes += writer.finished_size();  // (its appends may still be on their way)
    checkpoint_.add_tensor_bytes(writer.data_size());
    return out;
  }

  // Once every shard is finished: the files written, in the shards' order, and with a folder out
  // the new index.
  void write_index() {
    for (std::size_t s = 0; s < readers_.size(); ++s) report_.outputs.push_back(checkpoint_.output(s));
    const std::string index = checkpoint_.write_index();
    if (index.empty()) return;
    report_.outputs.push_back(index);
    report_.output_bytes += fs::file_size(index);
  }

  // Every tensor's account, and the totals.
  void account(const WeightStats& global) {
    QuantizeTotals all;
    report_.tensors.reserve(jobs_.size());
    for (const Job& job : jobs_) {
      all = combine(all, job.totals);
      StreamTensorReport t;
      const std::size_t finite = job.own.count;
      const std::size_t tables = o_.group_size                                ? (std::size_t{4} << bits_) + 4 * job.rows
                                 : stores_grid(codebook_, bits_) && !per_row_ ? 16
                                                                              : job.map_count * (std::size_t{4} << bits_);
      const std::size_t stored = job.matrix_rows * packed_row_bytes(job.matrix_cols, bits_) + tables;
      t.tensor = {job.name, job.entry.shape, bits_, job.entry.end - job.entry.begin, stored,
                  finite ? std::sqrt(job.totals.noise / double(finite)) : 0.0, job.totals.max_error, job.totals.nonfinite};
      add_measures(t.tensor, codebook_, job.totals, job.own, job.fourth, per_row_, per_row_ ? Affine{} : job.maps[0]);
      t.file = checkpoint_.output(job.shard);
      report_.tensors.push_back(std::move(t));
    }
    std::sort(report_.tensors.begin(), report_.tensors.end(),
              [](const StreamTensorReport& a, const StreamTensorReport& b) { return a.tensor.name < b.tensor.name; });
    report_.kept.assign(kept_.begin(), kept_.end());
    report_.stats = global;
    report_.sqnr_ex_db =
        all.noise > 0.0 ? 10.0 * std::log10(all.signal / all.noise) : std::numeric_limits<double>::infinity();
    report_.within = 100.0 * double(all.inside) / double(global.count);
  }

 private:
  // The map the description records: the tensor's, or (per channel) its own statistics.
  TensorDescription description(const Job& job) const {
    const Affine map = per_row_ ? Affine{job.own.mean, job.own.stddev()} : job.maps[0];
    return {job.entry.shape, job.entry.dtype, job.matrix_rows, job.matrix_cols, bits_, map.mean, map.scale,
            o_.group_size};
  }

  // One stored tensor of a job (its name is the job's plus `suffix`): its grid, codebook, scales or codes.
  void write_stored(Job& job, const std::string& suffix, const io::SafetensorsReader& reader, io::WriteBehind& out,
                    Progress& progress) {
    if (suffix == ".grid") {
      const auto [offset, scale] = grid_map(codebook_, job.maps[0].mean, job.maps[0].scale);
      const double map[2] = {offset, scale};
      out.append(map, sizeof map);
    } else if (suffix == ".codebook" && o_.group_size) {  // the design's levels, normalised
      const std::vector<float> levels = normalised_levels(codebook_, bits_);
      out.append(levels.data(), levels.size() * sizeof(float));
    } else if (suffix == ".scales") {
      // A scale per group, each joined in pass 1 (groups longer than a piece).
      const std::size_t groups = job.map_count;
      for (std::size_t first = 0; first < groups; first += 65536) {
        std::vector<float> scales;
        for (const Affine& g : maps_of(job, per_row_, first, std::min<std::size_t>(65536, groups - first), true))
          scales.push_back(float(g.scale));
        out.append(scales.data(), scales.size() * sizeof(float));
      }
    } else if (suffix == ".codebook") {  // tables of up to 4096 rows at a time
      for (std::size_t first = 0; first < job.map_count; first += 4096) {
        const std::vector<float> levels =
            make_quantize_table(codebook_, bits_,
                                maps_of(job, per_row_, first, std::min<std::size_t>(4096, job.map_count - first), false),
                                tensor_where(job))
                .levels;
        out.append(levels.data(), levels.size() * sizeof(float));
      }
    } else {
      write_codes(job, reader, out, progress);
    }
  }

  // The table of a share of a per-row job: the rows' maps read back (rows longer than a piece,
  // joined in pass 1), or found from the weights in hand (pass 1 would have found the same, row by
  // row) and their scales or levels copied to `side` (the bytes the file stores for these rows).
  QuantizeTable share_table(const Job& job, const io::SafetensorsReader& reader, const WeightView& w, const Piece& share,
                            std::uint8_t* side) {
    const bool grouped = o_.group_size > 0;
    if (!job.maps_as_quantized) return rows_table(job, maps_of(job, per_row_, share.row, share.rows, grouped));
    std::vector<Affine> maps = normalise_tensor(Normalisation::PerChannel, w.data, w.type, share.rows, share.cols,
                                                WeightStats{}, job.own, where_of(reader, job.name, share),
                                                o_.nonfinite, backend_).maps;
    if (grouped) to_group_maps(maps, job);
    QuantizeTable table = rows_table(job, maps);
    if (grouped) {
      for (std::size_t g = 0; g < maps.size(); ++g) {
        const float scale = float(maps[g].scale);
        std::memcpy(side + g * sizeof scale, &scale, sizeof scale);
      }
    } else {
      std::memcpy(side, table.levels.data(), table.levels.size() * sizeof(float));
    }
    return table;
  }

  // The table of a share's rows or groups: a group's levels as a reader restores them (grouped.h).
  QuantizeTable rows_table(const Job& job, const std::vector<Affine>& maps) const {
    return o_.group_size ? grouped_quantize_table(codebook_, bits_, maps, tensor_where(job))
                         : make_quantize_table(codebook_, bits_, maps, tensor_where(job));
  }

  std::string tensor_where(const Job& job) const { return readers_[job.shard]->path() + ": tensor '" + job.name + "'"; }

  // The codes of a job, window after window of its pieces.
  void write_codes(Job& job, const io::SafetensorsReader& reader, io::WriteBehind& out, Progress& progress) {
    const QuantizeTable shared = per_row_ ? QuantizeTable{} : make_quantize_table(codebook_, bits_, job.maps, tensor_where(job));
    const std::vector<Piece> pieces = pieces_of(job.rows, job.cols, o_.piece_bytes);
    PieceReader source(reader, job.entry, job.cols, pieces, backend_, buffers_,
                       Affine{job.own.mean, has_spread(job.own) ? job.own.stddev() : 1.0});
    const auto row_bytes = [&](const Piece& p) { return packed_row_bytes(p.cols, bits_); };
    for (std::size_t k = 0; k < pieces.size();) {
      const PieceWindow window = source.start(k);
      std::vector<std::vector<std::uint8_t>> codes;  // one buffer per piece; every byte is written
      for (std::size_t j = window.first; j < window.last; ++j) codes.push_back(out.buffer(pieces[j].rows * row_bytes(pieces[j])));
      // Maps found here: the window's rows' scales or levels, for the file's room for them.
      const std::size_t first_row = pieces[window.first].row;
      const std::size_t side_row_bytes = o_.group_size ? sizeof(float) : sizeof(float) << bits_;
      std::vector<std::uint8_t> side;
      if (job.maps_as_quantized)
        side = out.buffer((pieces[window.last - 1].row + pieces[window.last - 1].rows - first_row) * side_row_bytes);
      std::vector<QuantizeTotals> share_totals(window.items.size());
      std::vector<double> share_fourth(window.items.size());
      for_each_share(window.items.size(), [&](std::size_t i) {
        const PieceWindow::Item& item = window.items[i];
        const Piece& share = item.share;
        const WeightView w = source.weights(window, i, &share_fourth[i]);
        const QuantizeTable table =
            per_row_ ? share_table(job, reader, w, share,
                                   job.maps_as_quantized ? side.data() + (share.row - first_row) * side_row_bytes : nullptr)
                     : QuantizeTable{};
        std::uint8_t* at = codes[item.piece - window.first].data() + (share.row - pieces[item.piece].row) * row_bytes(share);
        share_totals[i] = backend_.quantize_as(w.data, w.type, share.rows, share.cols, per_row_ ? table : shared, at);
      });
      for (std::size_t i = 0; i < window.items.size(); ++i) {
        job.totals = combine(job.totals, share_totals[i]);
        job.fourth += share_fourth[i];
      }
      if (job.maps_as_quantized) out.write_at(job.side_begin + first_row * side_row_bytes, std::move(side));
      for (; k < window.last; ++k) {
        out.append(std::move(codes[k - window.first]));
        progress.advance("quantizing", job.name, pieces[k].rows * pieces[k].cols * io::dtype_size(job.entry.dtype));
      }
    }
  }

  const Codebook& codebook_;
  const StreamOptions& o_;
  Backend& backend_;
  const int bits_;
  const bool per_row_;
  ShardedCheckpoint checkpoint_;  // the shards in, their outputs and the new index
  const std::string input_;       // as given, for errors about the whole checkpoint
  ShardReaders readers_;
  std::vector<Job> jobs_;
  std::set<std::string> kept_;
  std::uint64_t quantized_bytes_ = 0, total_bytes_ = 0;
  PieceBuffers buffers_;  // the CPU path's shares, one buffer per thread
  StreamReport report_;
};

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Every quantized weight's statistics together, for the report and the headers; a run without a
// finite weight (or, with global normalisation, without a spread) cannot go on.
WeightStats every_weight(StreamRun& run, const std::string& input, const StreamOptions& o) {
  WeightStats global;
  for (const Job& job : run.jobs()) global = combine(global, job.own);
  NUQ_REQUIRE(global.count > 0, input, ": no finite weight to quantize");
  NUQ_REQUIRE(o.normalisation != Normalisation::Global || global.stddev() > 0.0, input,
              ": every weight has the same value; zero variance cannot be normalised");
  return global;
}

double stddev_recorded(const WeightStats& global) { return global.stddev() > 0.0 ? global.stddev() : 1.0; }

// Global normalisation (or a single file): pass 1 over every shard, then pass 2.
WeightStats quantize_in_two_passes(StreamRun& run, const std::string& input, const StreamOptions& o) {
  StreamReport& report = run.report();
  const auto start = std::chrono::steady_clock::now();
  // Pass 1: each tensor's statistics (per channel, rows longer than a piece: each row's map), read
  // in the order of their bytes in each shard, and joined in name order, so that the result does
  // not depend on the layout; every shard first, as global normalisation maps each weight by all.
  Progress progress(o.progress, run.quantized_bytes());
  for (Job* job : run.file_order()) run.statistics(*job, progress);
  run.keep_masks();
  const WeightStats global = every_weight(run, input, o);
  if (o.normalisation == Normalisation::Global) run.warn_of_scale_setting_tensors(global);
  for (Job& job : run.jobs()) run.make_maps(job, global);
  const auto pass_two = std::chrono::steady_clock::now();
  report.statistics_seconds = std::chrono::duration<double>(pass_two - start).count();

  // Pass 2: each output file written while the next is worked on, its finish (fsync, rename)
  // behind the next one's work. The shards are taken last to first: pass 1 read them first to
  // last, so when the checkpoint is larger than the page cache the shards it read last are the
  // ones still cached, and are read again from memory before the others evict them (front to
  // back, every shard would be read from the disk twice). Each file's bytes do not depend on the
  // order, and the totals are joined in the jobs' order afterwards.
  progress.restart(run.total_bytes());
  run.begin_writing();
  std::unique_ptr<io::WriteBehind> finishing;
  for (std::size_t s = run.shards(); s-- > 0;) {
    std::unique_ptr<io::WriteBehind> out =
        run.write_shard(s, run.shard_metadata(s, global.mean, stddev_recorded(global)), progress);
    out->finish_later();
    if (finishing) finishing->wait();  // rethrows its error
    finishing = std::move(out);
  }
  if (finishing) finishing->wait();
  run.write_index();
  progress.close();
  report.quantize_seconds = seconds_since(pass_two);
  return global;
}

// Without global normalisation a tensor's codes need only its own weights: each shard's two
// passes run in turn, so its quantizing pass finds the shard in the page cache its statistics
// pass just filled, and a checkpoint larger than the cache is read from the disk once (a shard at
// a time must fit). Only the statistics of every quantized weight, which each header records, wait
// for the last shard: the headers before it are written with placeholders as long as any number
// prints, set aside (no thread, no descriptor), and rewritten at the end (padded with spaces to the
// same length: the data does not move). The last shard's header, and a single file's, is exact at
// once. Every shard stays a temporary until the end, so an output folder written over holds the old
// shards and the new ones at once.
WeightStats quantize_shard_by_shard(StreamRun& run, const std::string& input, const StreamOptions& o) {
  StreamReport& report = run.report();
  constexpr double kPlaceholder = std::numeric_limits<double>::lowest();  // "-1.7976931348623157e+308"
  Progress progress(o.progress, run.quantized_bytes() + run.total_bytes());
  std::vector<std::unique_ptr<io::SafetensorsWriter>> pending;  // shard s's file, data written
  std::unique_ptr<io::WriteBehind> last;
  WeightStats global;
  for (std::size_t s = 0; s < run.shards(); ++s) {
    const auto statistics = std::chrono::steady_clock::now();
    for (Job* job : run.file_order(s)) run.statistics(*job, progress);
    run.keep_masks(s);
    for (Job& job : run.jobs())
      if (job.shard == s) run.make_maps(job, WeightStats{});  // maps of the tensors' own statistics
    const auto quantizing = std::chrono::steady_clock::now();
    report.statistics_seconds += std::chrono::duration<double>(quantizing - statistics).count();
    const bool exact = s + 1 == run.shards();
    if (exact) global = every_weight(run, input, o);
    std::unique_ptr<io::WriteBehind> out = run.write_shard(
        s, run.shard_metadata(s, exact ? global.mean : kPlaceholder, exact ? stddev_recorded(global) : kPlaceholder),
        progress);
    if (exact) {
      last = std::move(out);
    } else {
      pending.push_back(out->release());  // waits for its data to be written
      pending.back()->set_aside();        // no descriptor held for it meanwhile
    }
    report.quantize_seconds += seconds_since(quantizing);
  }
  const auto finish = std::chrono::steady_clock::now();
  run.begin_writing();
  for (std::size_t s = 0; s < pending.size(); ++s) {
    pending[s]->rewrite_metadata(run.shard_metadata(s, global.mean, stddev_recorded(global)));
    pending[s]->finish();
  }
  last->finish_later();  // after the others: an error among them leaves the last shard unwritten too
  last->wait();
  run.write_index();
  progress.close();
  report.quantize_seconds += seconds_since(finish);
  return global;
}

}  // namespace

StreamReport quantize_checkpoint_files(const std::string& input, const std::string& output, const Codebook& codebook,
                                       const StreamOptions& o, Backend& backend) {
  const auto start = std::chrono::steady_clock::now();
  StreamRun run(input, output, codebook, o, backend);
  const WeightStats global = o.normalisation == Normalisation::Global || run.shards() == 1
                                 ? quantize_in_two_passes(run, input, o)
                                 : quantize_shard_by_shard(run, input, o);
  run.account(global);
  StreamReport& report = run.report();
  report.seconds = seconds_since(start);
  return report;
}

}  // namespace nuq
