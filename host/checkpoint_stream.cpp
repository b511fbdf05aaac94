#include "nuq/checkpoint_stream.h"

#include <chrono>
#include <limits>
#include <memory>
#include <vector>

#include "nuq/error.h"
#include "nuq/normalisation.h"

#include "io/write_behind.h"
#include "progress_line.h"
#include "stream_run.h"

namespace nuq {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Every quantized weight's statistics together, for the report and the headers; a run without a
// finite weight (or, with global normalisation, without a spread) cannot go on.
WeightStats every_weight(StreamRun& run, const std::string& input, const StreamOptions& o) {
  WeightStats global;
  for (const StreamJob& job : run.jobs()) global = combine(global, job.own);
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
  for (StreamJob* job : run.file_order()) run.statistics(*job, progress);
  run.keep_masks();
  const WeightStats global = every_weight(run, input, o);
  if (o.normalisation == Normalisation::Global) run.warn_of_scale_setting_tensors(global);
  for (StreamJob& job : run.jobs()) run.make_maps(job, global);
  const auto pass_two = std::chrono::steady_clock::now();
  report.statistics_seconds = std::chrono::duration<double>(pass_two - start).count();

  // Pass 2: each output file written while the next is worked on, its fsync behind the next one's
  // work; every file stays a temporary until all are on the disk, so that an output written over
  // is whole until then (publish renames them). The shards are taken last to first: pass 1 read
  // them first to last, so when the checkpoint is larger than the page cache the shards it read
  // last are the ones still cached, and are read again from memory before the others evict them
  // (front to back, every shard would be read from the disk twice). Each file's bytes do not
  // depend on the order, and the totals are joined in the jobs' order afterwards.
  progress.restart(run.total_bytes());
  std::unique_ptr<io::WriteBehind> syncing;
  std::size_t syncing_shard = 0;
  for (std::size_t s = run.shards(); s-- > 0;) {
    std::unique_ptr<io::WriteBehind> out =
        run.write_shard(s, run.shard_metadata(s, global.mean, stddev_recorded(global)), progress);
    out->sync_later();
    if (syncing) run.hold(syncing_shard, syncing->release());  // rethrows its error
    syncing = std::move(out), syncing_shard = s;
  }
  if (syncing) run.hold(syncing_shard, syncing->release());
  run.publish();
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
// once. As with global normalisation, every shard stays a temporary until the end, so an output
// folder written over holds the old shards and the new ones at once.
WeightStats quantize_shard_by_shard(StreamRun& run, const std::string& input, const StreamOptions& o) {
  StreamReport& report = run.report();
  constexpr double kPlaceholder = std::numeric_limits<double>::lowest();  // "-1.7976931348623157e+308"
  Progress progress(o.progress, run.quantized_bytes() + run.total_bytes());
  std::vector<std::unique_ptr<io::SafetensorsWriter>> pending;  // shard s's file, data written
  std::unique_ptr<io::WriteBehind> last;
  WeightStats global;
  for (std::size_t s = 0; s < run.shards(); ++s) {
    const auto statistics = std::chrono::steady_clock::now();
    for (StreamJob* job : run.file_order(s)) run.statistics(*job, progress);
    run.keep_masks(s);
    for (StreamJob& job : run.jobs())
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
  last->sync_later();  // behind the others' rewritten headers
  for (std::size_t s = 0; s < pending.size(); ++s) {
    pending[s]->rewrite_metadata(run.shard_metadata(s, global.mean, stddev_recorded(global)));
    run.hold(s, std::move(pending[s]));
  }
  run.hold(pending.size(), last->release());
  run.publish();
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
