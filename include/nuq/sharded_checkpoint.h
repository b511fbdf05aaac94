// A checkpoint given as one .safetensors file, a folder of shards or its
// model.safetensors.index.json, and the matching output: one file for one file, otherwise a folder
// holding a file of each shard's name and a new index that maps every tensor to its file. Shared
// by the commands that read a checkpoint and write one back (`nuq quantize`, `nuq dequantize`).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "nuq/error.h"

namespace nuq {
namespace io {
class SafetensorsReader;
class SafetensorsWriter;
class PreparedFile;
class TemporaryFile;
}

// The shards of `input`: a .safetensors file, a folder (its index, else every *.safetensors in it
// but macOS's ._ files and, beside other files, an adapter_*.safetensors or Mistral's
// consolidated*.safetensors; all of them when their names number them "-00001-of-00003") or an
// index .json. Errors name the input.
std::vector<std::string> checkpoint_shards(const std::string& input);

// The shards of a checkpoint opened (headers read and checked), in the order given, so that a
// command parses each header once. A tensor name in two shards is an error naming both: which one
// a loader takes is not defined.
using ShardReaders = std::vector<std::unique_ptr<io::SafetensorsReader>>;
ShardReaders open_shards(const std::vector<std::string>& paths);

// Where the index of `input` (a folder's, or an index .json) and its shards' headers disagree, one
// line each (at most 8, then a count): tensors it maps that no shard holds, that another shard
// holds, or that it does not list. Such indexes are on the Hub and other tools load them, so nuq
// follows the headers (and writes a correct index); callers warn. For a folder without an index,
// the .safetensors files in it not read as shards (checkpoint_shards), each said with what it is.
std::vector<std::string> checkpoint_warnings(const std::string& input);

// The error of a tensor that two files of one checkpoint hold: they are no shards of one model
// (two variants of it, as diffusers' diffusion_pytorch_model.fp16.safetensors beside its
// diffusion_pytorch_model.safetensors), and the message says to give the one to read.
Error tensor_in_two_shards(const std::string& shard, const std::string& tensor, const std::string& other);

class ShardedCheckpoint {
 public:
  // The shards of `input` and their outputs under `output`: for a sharded input the output folder
  // is made, then every output, the index included, is checked before anything is written
  // (io::require_output_path: not an input, not a folder or a device, in a folder that may be
  // written). An output folder is refused while another run writes it (an advisory lock held until
  // this ends) and where it holds another model: safetensors files or an index this run would not
  // write over (the new index would orphan them, or the folder would mix two models), or files
  // under this run's names that a run like it did not write (`writes`): quantized shards where it
  // quantizes, restored ones where it dequantizes (`nuq dequantize llama-2bit -o llama` would
  // write over the original weights, and a run cut short between renames would leave the two
  // mixed where no reader could tell them apart).
  enum class Writes { Quantized, Restored };
  ShardedCheckpoint(const std::string& input, const std::string& output, Writes writes = Writes::Quantized);
  // Outputs held and never published are removed; so is a folder the constructor made, if it is
  // then empty (a run that failed leaves nothing behind).
  ~ShardedCheckpoint();
  ShardedCheckpoint(const ShardedCheckpoint&) = delete;
  ShardedCheckpoint& operator=(const ShardedCheckpoint&) = delete;

  const std::vector<std::string>& inputs() const { return inputs_; }
  const std::string& output(std::size_t shard) const { return outputs_.at(shard); }
  bool sharded() const { return sharded_; }
  // The index the input was given by (a folder's or the .json itself), or "" without one: its bytes
  // count in the input's size as the new index's count in the output's.
  const std::string& input_index() const { return input_index_; }

  // Keeps shard `shard`'s output, all its bytes written and synced (sync_and_set_aside), as a
  // temporary until publish(): an output written over stays whole until every new file is on the
  // disk, whatever ends the run before then.
  void hold(std::size_t shard, std::unique_ptr<io::SafetensorsWriter> output);
  // Once every shard's output is held: writes the new index to its temporary file (a disk too full
  // for it fails the run while the old output is whole), then, with signals held until the end
  // (io::SignalsDeferred), removes an index an earlier run left (it would vouch for a folder of
  // mixed files if the renames were cut short), renames every output into place, in the shards'
  // order, and the index last. Returns the index's path, or "" for one file. (A rename refused part
  // way, or SIGKILL or a power cut meanwhile, leaves old and new files and no index: refused by
  // every reader as a folder of two runs, not read as one model.)
  std::string publish();
  // Records that `tensor` is stored in shard `shard`'s output, and the bytes of tensor data an
  // output holds (its header excluded: the index's total_size, as Hugging Face counts it).
  void add_tensor(const std::string& tensor, std::size_t shard);
  void add_tensor_bytes(std::uint64_t bytes) { total_bytes_ += bytes; }


 private:
  // For a sharded input: the index with the tensors and sizes recorded, under the input index's
  // file name (model.safetensors.index.json without one), written and synced, to be committed; for
  // one file: nullptr.
  std::unique_ptr<io::PreparedFile> prepare_index() const;

  std::vector<std::string> inputs_, outputs_;
  std::string folder_;
  std::string input_index_;
  std::string index_metadata_;  // the input index's "metadata" (JSON), carried to the new index
  std::string index_name_ = "model.safetensors.index.json";  // the input index's file name, if it had one
  bool sharded_ = false;
  bool created_folder_ = false, indexed_ = false;
  int folder_lock_ = -1;  // the output folder, opened and flock()ed while this run writes it
  std::unique_ptr<io::TemporaryFile> made_folder_;  // a folder this run made: removed if interrupted while empty
  std::vector<std::unique_ptr<io::SafetensorsWriter>> held_;  // per shard, until publish()
  std::map<std::string, std::size_t> weight_map_;  // tensor -> the shard whose output holds it
  std::uint64_t total_bytes_ = 0;
};

}  // namespace nuq
