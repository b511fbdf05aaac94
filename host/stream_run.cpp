#include "stream_run.h"

#include <cstring>
#include <filesystem>

#include "nuq/grouped.h"
#include "nuq/io/widen.h"
#include "nuq/laplace.h"
#include "nuq/list_text.h"
#include "nuq/normalisation.h"
#include "nuq/packed.h"

namespace nuq {
namespace {

namespace fs = std::filesystem;

// Grouped maps turned into the tensor's mean and each group's RMS about it, rounded to the F32 the
// file stores.
void to_group_maps(std::vector<Affine>& maps, const StreamJob& job) {
  for (Affine& g : maps) g = group_map(g, job.own.mean);
}

// The maps of rows (groups) [first, first + count) of a job whose maps pass 1 found: per row those
// rows' own, else the tensor's one map.
std::vector<Affine> maps_of(const StreamJob& job, bool per_row, std::size_t first, std::size_t count, bool grouped) {
  if (!per_row) return job.maps;
  std::vector<Affine> maps(job.maps.begin() + std::ptrdiff_t(first), job.maps.begin() + std::ptrdiff_t(first + count));
  if (grouped) to_group_maps(maps, job);
  return maps;
}

std::string where_of(const io::SafetensorsReader& reader, const std::string& tensor, const Piece& p) {
  return reader.path() + ": tensor '" + tensor + "' (from row " + std::to_string(p.row) + ")";
}

}  // namespace

StreamRun::StreamRun(const std::string& input, const std::string& output, const Codebook& codebook,
                     const StreamOptions& o, Backend& backend)
    : codebook_(codebook), o_(o), backend_(backend), bits_(storage_bits(codebook)),
      per_row_(o.normalisation == Normalisation::PerChannel || o.group_size > 0),
      checkpoint_(checked_options(input, o, bits_), output), input_(input) {
  const std::vector<std::string>& shard_paths = checkpoint_.inputs();
  if (!checkpoint_.input_index().empty()) report_.input_bytes += fs::file_size(checkpoint_.input_index());
  readers_ = open_shards(shard_paths);
  std::size_t tensors = 0;
  for (const auto& reader : readers_) {
    NUQ_REQUIRE(!is_quantized_file(reader->layout().metadata), reader->path(),
                ": already quantized; `nuq dequantize` it first to quantize the restored weights again");
    report_.input_bytes += reader->file_size();
    tensors += reader->layout().tensors.size();
  }
  jobs_.reserve(tensors);  // at most a job a tensor; grown by doubling, 200,000 jobs held room for 262,144
  const std::set<std::string> quantized_elsewhere = modules_quantized_elsewhere(readers_);
  for (std::string& line : keeping_warnings(readers_, o, quantized_elsewhere)) warn(std::move(line));
  std::vector<std::string> ungroupable;  // rows that do not split into groups: told all at once
  std::map<std::size_t, std::vector<std::string>> masks;  // such tensors that are masks: kept
  for (std::size_t s = 0; s < readers_.size(); ++s) {
    const io::SafetensorsReader& reader = *readers_[s];
    for (const auto& [name, entry] : reader.layout().tensors) {
      shard_of_.emplace(name, s);
      total_bytes_ += entry.end - entry.begin;
      if (kept_as_they_are(name, entry, reader, o, quantized_elsewhere)) {
        kept_.insert(name);
        continue;
      }
      StreamJob job;
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
  // The jobs in name order, whatever shard holds each: their statistics and totals are joined in
  // this order, so a checkpoint's are the same bits in one file or in any sharding of it (joined
  // shard by shard, a global mean moved in its last digit, and with it the run's fingerprint).
  std::sort(jobs_.begin(), jobs_.end(), [](const StreamJob& a, const StreamJob& b) { return a.name < b.name; });
  if (!ungroupable.empty()) throw Error(ungroupable_error(input, ungroupable, o.group_size, o.skip.has_value()));
  tell_of_masks(masks);
  warn_of_tables_larger_than_rows();
  require_names_free();  // before pass 1, so that no time is spent on a run that cannot write its files
  NUQ_REQUIRE(!jobs_.empty(), input, ": no tensor to quantize (floating tensors of two or more dimensions above 1 whose "
              "names do not end in 'bias', or any with --quantize-vectors, that --skip does not name)");
}

void StreamRun::statistics(StreamJob& job, Progress& progress) {
  try {
    take_statistics(job, progress);
  } catch (const NonFiniteWeight&) {
    // A mask added to attention scores may hold -inf, which weights may not: such a tensor is kept
    // (keep_masks), not refused. (Its statistics are never joined with the weights'.) Only that
    // error: a failed read or a device's is the run's, whatever the tensor holds.
    if (!is_a_mask(*readers_[job.shard], job.entry, o_.piece_bytes)) throw;
    job.own = {};
    job.long_rows.clear();
    job.a_mask = true;
  }
}

void StreamRun::take_statistics(StreamJob& job, Progress& progress) {
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

void StreamRun::keep_masks(std::optional<std::size_t> only) {
  std::map<std::size_t, std::vector<std::string>> masks;  // shard -> the masks found in it
  const auto found = [&](const StreamJob& job) {
    if ((only && job.shard != *only) ||
        !(job.a_mask || holds_a_mask(*readers_[job.shard], job.entry, job.own, o_.piece_bytes)))
      return false;
    masks[job.shard].push_back("'" + job.name + "'");
    kept_.insert(job.name);
    quantized_bytes_ -= job.entry.end - job.entry.begin;
    return true;
  };
  jobs_.erase(std::remove_if(jobs_.begin(), jobs_.end(), found), jobs_.end());
  tell_of_masks(masks);
  NUQ_REQUIRE(!jobs_.empty(), input_, ": no tensor to quantize: every one it would quantize is a mask (only 0 and 1, or "
              "0 and one value <= -100 or -inf; kept as they are)");
}

void StreamRun::warn_of_tables_larger_than_rows() {
  if (o_.normalisation != Normalisation::PerChannel || o_.group_size) return;
  std::vector<std::string> larger;
  for (const StreamJob& job : jobs_) {
    const std::size_t row_after = packed_row_bytes(job.cols, bits_) + (sizeof(float) << bits_);
    if (job.cols && row_after >= job.cols * io::dtype_size(job.entry.dtype) &&
        !is_a_mask(*readers_[job.shard], job.entry, o_.piece_bytes))  // (pass 1 will keep a mask)
      larger.push_back("'" + job.name + "'");
  }
  if (larger.empty()) return;
  warn(input_ + ": " + std::to_string(larger.size()) + " tensor(s) of rows too short for a table of " +
       std::to_string(1 << bits_) + " levels each come out larger than they went in: " + first_few(larger, 3) +
       " (--skip them, or use --group-size or --normalise per-tensor)");
}

void StreamRun::warn_of_scale_setting_tensors(const WeightStats& global) {
  std::vector<std::pair<std::string, WeightStats>> tensors;
  for (const StreamJob& job : jobs_) tensors.push_back({job.name, job.own});
  const std::string line = scale_setting_tensors(tensors, global);
  if (!line.empty()) warn(input_ + ": " + line);
}

void StreamRun::make_maps(StreamJob& job, const WeightStats& global) {
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

std::map<std::string, std::string> StreamRun::shard_metadata(std::size_t s, double mean, double stddev) const {
  std::map<std::string, TensorDescription> described;
  for (const StreamJob& job : jobs_)
    if (job.shard == s) described.emplace(job.name, description(job));
  std::vector<std::string> kept;
  for (const auto& [name, entry] : readers_[s]->layout().tensors)
    if (kept_.count(name)) kept.push_back(name);
  std::map<std::string, std::string> metadata = readers_[s]->layout().metadata;
  metadata.erase(kRestoredFromKey);  // a quantized file is not a restored one
  // The whole run's (every job has the options' group size): a shard without a job names its run as the others do.
  const std::set<std::size_t> group_sizes{o_.group_size};
  metadata["nuq.quantized"] =
      describe_quantized(codebook_, o_.normalisation, mean, stddev, described, kept, group_sizes);
  return metadata;
}

void StreamRun::require_names_free() const {
  // The names only: they follow from the options (no map is known yet; shapes do not matter here).
  const bool grid = stores_grid(codebook_, bits_) && !per_row_;
  for (const StreamJob& job : jobs_) {
    const TensorDescription names_only{job.entry.shape, job.entry.dtype, job.matrix_rows, job.matrix_cols, bits_,
                                       0.0, 1.0, o_.group_size};
    for (const auto& [name, entry] : stored_tensors(job.name, names_only, 1, grid)) {
      // A name a tensor of any shard has: the index out could map it to one file only. (A mask,
      // kept after pass 1, stores nothing.)
      const auto taken = shard_of_.find(name);
      if (taken == shard_of_.end() || is_a_mask(*readers_[job.shard], job.entry, o_.piece_bytes)) continue;
      throw Error(readers_[job.shard]->path() + ": tensor '" + job.name + "' cannot be stored: the checkpoint already "
                  "has a '" + name + "'" + (taken->second != job.shard ? " (in " + readers_[taken->second]->path() + ")" : ""));
    }
  }
}

std::unique_ptr<io::WriteBehind> StreamRun::write_shard(std::size_t s, std::map<std::string, std::string> metadata,
                                                        Progress& progress) {
  const io::SafetensorsReader& reader = *readers_[s];
  const std::string& out_path = checkpoint_.output(s);
  std::map<std::string, StreamJob*> quantized;  // stored tensor name -> its job
  std::vector<std::pair<std::string, io::TensorEntry>> planned;
  for (StreamJob& job : jobs_) {
    if (job.shard != s) continue;
    for (auto& stored : stored_tensors(job.name, description(job), job.map_count, stores_grid(codebook_, bits_) && !per_row_)) {
      quantized[stored.first] = &job;
      planned.push_back(std::move(stored));
    }
  }
  for (const auto& [name, entry] : reader.layout().tensors)
    if (kept_.count(name)) planned.push_back({name, io::TensorEntry{entry.dtype, entry.shape}});
  // The writes overlap the next piece's work.
  auto out =
      std::make_unique<io::WriteBehind>(std::make_unique<io::SafetensorsWriter>(out_path, metadata, std::move(planned)));
  metadata.clear();  // in the header now
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
  const auto in_shard_with_room = [&](const StreamJob& job) { return job.shard == s && job.maps_as_quantized; };
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

void StreamRun::publish() {
  const std::string index = checkpoint_.publish();
  for (std::size_t s = 0; s < readers_.size(); ++s) report_.outputs.push_back(checkpoint_.output(s));
  if (index.empty()) return;
  report_.outputs.push_back(index);
  report_.output_bytes += fs::file_size(index);
}

void StreamRun::account(const WeightStats& global) {
  QuantizeTotals all;
  report_.tensors.reserve(jobs_.size());
  for (const StreamJob& job : jobs_) {
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

void StreamRun::write_stored(StreamJob& job, const std::string& suffix, const io::SafetensorsReader& reader,
                             io::WriteBehind& out, Progress& progress) {
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

QuantizeTable StreamRun::share_table(const StreamJob& job, const io::SafetensorsReader& reader, const WeightView& w,
                                     const Piece& share, std::uint8_t* side) {
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

QuantizeTable StreamRun::rows_table(const StreamJob& job, const std::vector<Affine>& maps) const {
  return o_.group_size ? grouped_quantize_table(codebook_, bits_, maps, tensor_where(job))
                       : make_quantize_table(codebook_, bits_, maps, tensor_where(job));
}

void StreamRun::write_codes(StreamJob& job, const io::SafetensorsReader& reader, io::WriteBehind& out, Progress& progress) {
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

}  // namespace nuq
