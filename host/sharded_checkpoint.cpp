#include "nuq/sharded_checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "nuq/error.h"
#include "nuq/io/atomic_file.h"
#include "nuq/io/file_checks.h"

namespace nuq {
namespace {

namespace fs = std::filesystem;

constexpr const char* kIndexName = "model.safetensors.index.json";

std::vector<std::string> shards_of_index(const fs::path& index) {
  std::ifstream in(index);
  NUQ_REQUIRE(in, index.string(), ": cannot open the index");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(index.string() + ": not valid JSON (" + e.what() + ")");
  }
  NUQ_REQUIRE(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), index.string(),
              ": no weight_map object (not a safetensors index)");
  std::set<std::string> files;
  for (const auto& [tensor, file] : j["weight_map"].items()) {
    NUQ_REQUIRE(file.is_string(), index.string(), ": weight_map['", tensor, "'] is not a file name");
    const std::string name = file.get<std::string>();
    NUQ_REQUIRE(!name.empty() && name.find('/') == std::string::npos && name != "." && name != "..", index.string(),
                ": weight_map['", tensor, "'] = '", name, "' is not a file in the index's folder");
    files.insert(name);
  }
  NUQ_REQUIRE(!files.empty(), index.string(), ": the weight_map is empty");
  std::vector<std::string> shards;
  for (const std::string& f : files) shards.push_back((index.parent_path() / f).string());
  return shards;
}

}  // namespace

std::vector<std::string> checkpoint_shards(const std::string& input) {
  NUQ_REQUIRE(!input.empty(), "the input name is empty");
  const fs::path path(input);
  if (fs::is_directory(path)) {
    if (fs::exists(path / kIndexName)) return shards_of_index(path / kIndexName);
    std::vector<std::string> shards;
    for (const auto& entry : fs::directory_iterator(path))
      if (entry.path().extension() == ".safetensors") shards.push_back(entry.path().string());
    std::sort(shards.begin(), shards.end());
    NUQ_REQUIRE(!shards.empty(), input, ": a folder with neither ", kIndexName, " nor .safetensors files");
    return shards;
  }
  if (path.extension() == ".json") return shards_of_index(path);
  return {input};
}

ShardedCheckpoint::ShardedCheckpoint(const std::string& input, const std::string& output)
    : inputs_(checkpoint_shards(input)), folder_(output) {
  sharded_ = inputs_.size() > 1 || fs::is_directory(input) || fs::path(input).extension() == ".json";
  if (sharded_) io::make_folder(output, "--output");
  for (const std::string& shard : inputs_) {
    outputs_.push_back(sharded_ ? (fs::path(output) / fs::path(shard).filename()).string() : output);
    io::require_output_path(outputs_.back(), inputs_, "--output");
  }
}

void ShardedCheckpoint::add_tensor(const std::string& tensor, std::size_t shard) {
  weight_map_[tensor] = fs::path(outputs_.at(shard)).filename().string();
}

std::string ShardedCheckpoint::write_index() const {
  if (!sharded_) return "";
  const std::string index = (fs::path(folder_) / kIndexName).string();
  io::write_atomically(index, [&](std::ostream& out) {
    out << nlohmann::json{{"metadata", {{"total_size", total_bytes_}}}, {"weight_map", weight_map_}}.dump(2) << '\n';
  });
  return index;
}

}  // namespace nuq
