// A checkpoint given as one .safetensors file, a folder of shards or its
// model.safetensors.index.json, and the matching output: one file for one file, otherwise a folder
// holding a file of each shard's name and a new index that maps every tensor to its file. Shared
// by the commands that read a checkpoint and write one back (`nuq quantize`, `nuq dequantize`).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace nuq {

// The shards of `input`: a .safetensors file, a folder (its index, else every *.safetensors in it,
// all of them when their names number them "-00001-of-00003") or an index .json. Errors name the
// input.
std::vector<std::string> checkpoint_shards(const std::string& input);

// Where the index of `input` (a folder's, or an index .json) and its shards' headers disagree, one
// line each (at most 8, then a count): tensors it maps that no shard holds, that another shard
// holds, or that it does not list. Such indexes are on the Hub and other tools load them, so nuq
// follows the headers (and writes a correct index); callers warn. Empty without an index.
std::vector<std::string> index_disagreements(const std::string& input);

class ShardedCheckpoint {
 public:
  // The shards of `input` and their outputs under `output`: for a sharded input the output folder
  // is made, then every output is checked before anything is written (io::require_output_path:
  // not an input, not a folder or a device).
  ShardedCheckpoint(const std::string& input, const std::string& output);
  // A folder the constructor made is removed again if the run ends before its index while it is
  // still empty (a run that failed before writing leaves nothing behind).
  ~ShardedCheckpoint();
  ShardedCheckpoint(const ShardedCheckpoint&) = delete;
  ShardedCheckpoint& operator=(const ShardedCheckpoint&) = delete;

  const std::vector<std::string>& inputs() const { return inputs_; }
  const std::string& output(std::size_t shard) const { return outputs_.at(shard); }
  bool sharded() const { return sharded_; }
  // The index the input was given by (a folder's or the .json itself), or "" without one: its bytes
  // count in the input's size as the new index's count in the output's.
  const std::string& input_index() const { return input_index_; }

  // Before the first output is written: removes an index an earlier run left in the output folder,
  // which would otherwise vouch for a folder this run may leave half-written if interrupted.
  void begin_writing() const;
  // Records that `tensor` is stored in shard `shard`'s output, and the bytes of tensor data an
  // output holds (its header excluded: the index's total_size, as Hugging Face counts it).
  void add_tensor(const std::string& tensor, std::size_t shard);
  void add_tensor_bytes(std::uint64_t bytes) { total_bytes_ += bytes; }

  // For a sharded input: writes the index (atomically) with the tensors and sizes recorded, under
  // the input index's file name (model.safetensors.index.json without one), and returns its path;
  // for one file: writes nothing and returns "".
  std::string write_index();

 private:
  std::vector<std::string> inputs_, outputs_;
  std::string folder_;
  std::string input_index_;
  std::string index_metadata_;  // the input index's "metadata" (JSON), carried to the new index
  std::string index_name_ = "model.safetensors.index.json";  // the input index's file name, if it had one
  bool sharded_ = false;
  bool created_folder_ = false, indexed_ = false;
  std::map<std::string, std::size_t> weight_map_;  // tensor -> the shard whose output holds it
  std::uint64_t total_bytes_ = 0;
};

}  // namespace nuq
