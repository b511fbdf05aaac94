#include "nuq/sharded_checkpoint.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "nuq/error.h"
#include "nuq/io/atomic_file.h"
#include "nuq/io/temporary_files.h"
#include "nuq/io/file_checks.h"
#include "nuq/io/json_parse.h"
#include "nuq/io/safetensors.h"
#include "nuq/io/safetensors_stream.h"
#include "nuq/list_text.h"
#include "nuq/quantized_file.h"
#include "index_entries.h"

namespace nuq {
namespace {

namespace fs = std::filesystem;

constexpr const char* kIndexName = "model.safetensors.index.json";

// <name>.safetensors.index.json: the index of a model's shards.
bool is_index_name(const std::string& name) {
  static const std::string suffix = ".safetensors.index.json";
  return name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A shard named as Hugging Face names them, `<stem>-00002-of-00005.safetensors`: `parts` gets the
// stem, the number and the total (9 digits at most: no overflow). Names of 256 characters or more
// are none (std::regex matches by recursion, a level a character).
bool numbered_shard(const std::string& name, std::smatch* parts = nullptr) {
  static const std::regex numbered(R"((.*)-(\d{1,9})-of-(\d{1,9})\.safetensors)");
  std::smatch unused;
  return name.size() < 256 && std::regex_match(name, parts ? *parts : unused, numbered);
}

// macOS's AppleDouble files (._name: another file's metadata, never safetensors) beside a model.
bool is_apple_double(const std::string& name) { return name.rfind("._", 0) == 0; }

// The index `input` is given by: a .json itself, or a folder's model.safetensors.index.json, else
// its one <name>.safetensors.index.json (diffusers' diffusion_pytorch_model..., Mistral's
// consolidated...); empty for a folder without one or a single file. A folder of several other
// indexes holds several models, and which one is meant is the user's to say.
fs::path index_of(const fs::path& input) {
  if (!fs::is_directory(input)) return input.extension() == ".json" ? input : fs::path();
  if (fs::exists(input / kIndexName)) return input / kIndexName;
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator(input)) {
    const std::string name = entry.path().filename().string();
    if (is_index_name(name)) found.push_back(name);
  }
  std::sort(found.begin(), found.end());
  if (found.empty()) return fs::path();
  NUQ_REQUIRE(found.size() == 1, input.string(), ": a folder of ", found.size(), " indexes (", found[0], ", ", found[1],
              found.size() > 2 ? ", ..." : "", ") and no ", kIndexName, ": give the index of the model to read");
  return input / found[0];
}

// An index is read whole: one larger than a safetensors header may be is no index.
constexpr std::uint64_t kMaxIndexBytes = io::kMaxSafetensorsHeader;
// {"metadata": {...}, "weight_map": {...}} nests two deep; a peer's metadata may nest a little more.
constexpr int kMaxIndexDepth = 16;

// The index's entries, with a weight_map object (index_entries.h: no tree of the whole).
IndexEntries read_index(const fs::path& index) {
  io::require_input_file(index.string());  // a FIFO, a device or a file that may not be read, named as such
  std::error_code ec;
  const std::uintmax_t size = fs::file_size(index, ec);
  NUQ_REQUIRE(!ec, index.string(), ": cannot read the index (", ec.message(), ")");
  NUQ_REQUIRE(size <= kMaxIndexBytes, index.string(), ": ", size, " bytes, more than the ", kMaxIndexBytes,
              " an index may have");
  std::ifstream in(index, std::ios::binary);
  NUQ_REQUIRE(in, index.string(), ": cannot open the index");
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  IndexEntries entries;
  try {
    io::check_json_bounds(text, kMaxIndexDepth);
    entries = read_index_entries(text);
  } catch (const Error& e) {
    throw Error(index.string() + ": " + e.what());
  }
  NUQ_REQUIRE(entries.has_weight_map, index.string(),
              ": no weight_map object (not a safetensors index)");
  return entries;
}

// Whether a file's extension names another tool's weights (PyTorch's pickles and zips, GGUF).
bool is_foreign_weights(const fs::path& file) {
  const std::string extension = file.extension().string();
  return extension == ".bin" || extension == ".pt" || extension == ".pth" || extension == ".ckpt" || extension == ".gguf";
}

// For a folder without safetensors: " (it holds PyTorch's pytorch_model.bin ...)" when it holds
// another tool's weights, else empty.
std::string pytorch_files_hint(const fs::path& folder) {
  std::error_code ec;
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    if (is_foreign_weights(it->path()))
      return " (it holds " + it->path().filename().string() + ", another format: nuq reads safetensors; docs/format.md "
             "says how to convert a PyTorch checkpoint)";
  }
  return "";
}

// A weight_map's file name as the folder holds it: "./model-00001-of-00002.safetensors" is that
// file (transformers joins the name to the folder), so the "./" goes.
std::string shard_file_name(std::string name) {
  while (name.rfind("./", 0) == 0) name.erase(0, 2);
  return name;
}

// Where an index and its shards' headers disagree: a tensor it maps that no shard holds, one it
// puts in another shard than the one holding it, one a shard holds that it does not list. Such
// indexes are on the Hub and other tools load them (the headers decide what a shard holds), so
// nuq follows the headers too and writes an index of its own; the caller warns. At most
// kMaxDisagreements are spelled out.
constexpr std::size_t kMaxDisagreements = 8;
constexpr const char* kFollowed = " (the shards' headers are followed, as other tools follow them; an index nuq "
                                  "writes lists what they hold)";

std::vector<std::string> disagreements(const fs::path& index,
                                       const std::map<std::string, std::optional<std::string>>& weight_map,
                                       const std::vector<std::string>& shards) {
  std::vector<std::string> found;
  std::size_t count = 0;
  const auto note = [&](std::string text, const char* followed = kFollowed) {
    if (count++ < kMaxDisagreements) found.push_back(index.string() + ": " + std::move(text) + followed);
  };
  std::set<std::string> held;
  for (const std::string& shard : shards) {
    const std::string file = fs::path(shard).filename().string();
    const io::SafetensorsReader reader(shard);  // named: a temporary's member would dangle in the loop
    for (const auto& [tensor, entry] : reader.layout().tensors) {
      held.insert(tensor);
      const auto mapped = weight_map.find(tensor);
      if (mapped == weight_map.end()) note(file + " holds tensor '" + tensor + "', which the weight_map does not list");
      else if (shard_file_name(mapped->second.value_or("")) != file)
        note("the weight_map puts '" + tensor + "' in " + mapped->second.value_or("") + ", but " + file + " holds it");
    }
  }
  for (const auto& [tensor, file] : weight_map)
    if (!held.count(tensor))
      note("the weight_map puts '" + tensor + "' in " + file.value_or("") + ", which does not hold it",
           ": no shard read holds it, so there is no such tensor to read (nor in an index nuq writes)");
  if (count > kMaxDisagreements)
    found.push_back(index.string() + ": " + std::to_string(count - kMaxDisagreements) + " more such disagreement(s)" +
                    kFollowed);
  // Safetensors files beside the index that it names for no tensor are not read (nor by other
  // tools): said, since a shard left out of the index takes its tensors with it.
  std::set<std::string> named, unnamed;
  for (const std::string& shard : shards) named.insert(fs::path(shard).filename().string());
  std::error_code ec;
  for (fs::directory_iterator it(index.has_parent_path() ? index.parent_path() : fs::path("."), ec), end; !ec && it != end; it.increment(ec))
    if (it->path().extension() == ".safetensors" && !named.count(it->path().filename().string()) &&
        !is_apple_double(it->path().filename().string()))
      unnamed.insert(it->path().filename().string());
  const std::string list = first_few(std::vector<std::string>(unnamed.begin(), unnamed.end()), kMaxDisagreements);
  if (!unnamed.empty())
    found.push_back(index.string() + ": names no tensor in " + list + " beside it; " +
                    (unnamed.size() == 1 ? "that file is not read (nor do other tools read it)"
                                         : "those files are not read (nor do other tools read them)"));
  return found;
}

// The shards an index names, each name checked.
std::vector<std::string> shards_of_index(const fs::path& index) {
  std::set<std::string> files;
  for (const auto& [tensor, file] : read_index(index).weight_map) {
    NUQ_REQUIRE(file.has_value(), index.string(), ": weight_map['", tensor, "'] is not a file name");
    const std::string name = shard_file_name(*file);
    NUQ_REQUIRE(!name.empty() && name.find('/') == std::string::npos && name != "." && name != "..", index.string(),
                ": weight_map['", tensor, "'] = '", *file, "' is not a file in the index's folder");
    NUQ_REQUIRE(name != index.filename().string(), index.string(), ": weight_map['", tensor,
                "'] names the index itself, not the safetensors shard that holds the tensor");
    NUQ_REQUIRE(!is_foreign_weights(name), index.string(), ": weight_map['", tensor, "'] = '", name,
                "' is another tool's file (PyTorch, GGUF), not safetensors; nuq reads safetensors (docs/format.md "
                "says how to convert a PyTorch checkpoint)");
    files.insert(name);
  }
  NUQ_REQUIRE(!files.empty(), index.string(), ": the weight_map is empty");
  std::vector<std::string> shards;
  for (const std::string& f : files) shards.push_back((index.parent_path() / f).string());
  return shards;
}

// Shards named as Hugging Face names them, `<stem>-00002-of-00005.safetensors`, say how many there
// are: a folder without an index must hold them all (nuq writes the index last, so a run that was
// interrupted leaves a folder with no index and some shards missing). Numbered from 1, or from 0
// when a shard 0 is there.
void require_every_numbered_shard(const fs::path& folder, const std::vector<std::string>& shards) {
  std::map<std::pair<std::string, std::string>, std::set<unsigned long>> seen;  // (stem, total) -> numbers
  for (const std::string& shard : shards) {
    std::smatch m;
    const std::string name = fs::path(shard).filename().string();
    if (numbered_shard(name, &m)) seen[{m[1].str(), m[3].str()}].insert(std::stoul(m[2].str()));
  }
  for (const auto& [key, numbers] : seen) {
    const auto& [stem, total_text] = key;
    const unsigned long total = std::stoul(total_text), first = numbers.count(0) ? 0 : 1;
    for (unsigned long n = first; n < first + total && n < first + shards.size() + 1; ++n) {
      std::string number = std::to_string(n);
      number.insert(0, total_text.size() > number.size() ? total_text.size() - number.size() : 0, '0');
      NUQ_REQUIRE(numbers.count(n), folder.string(), ": shard ", number, " of ", total_text, " (", stem, "-", number,
                  "-of-", total_text, ".safetensors) is missing and there is no ", kIndexName,
                  "; an interrupted run? Write the folder again");
    }
  }
}

// Shards that `nuq dequantize` restored record the quantize run they came from. A dequantize
// interrupted over an older restored folder leaves shards of two runs and no index (the old one is
// removed first, the new one written last), which would load as one model: two different
// fingerprints in a folder without an index are refused. Shards without one (original weights, or
// restored by an older nuq) are not judged.
void require_one_restoration(const std::string& input, const std::vector<std::string>& shards) {
  std::string first, first_shard;
  for (const std::string& shard : shards) {
    const io::SafetensorsReader reader(shard);  // the header alone
    const std::map<std::string, std::string>& metadata = reader.layout().metadata;
    const auto found = metadata.find(kRestoredFromKey);
    if (found == metadata.end() || found->second.empty()) continue;
    if (first.empty()) {
      first = found->second, first_shard = shard;
      continue;
    }
    NUQ_REQUIRE(found->second == first, input, ": ", shard, " was restored from quantize run ", found->second, ", ",
                first_shard, " from run ", first, ", and there is no ", kIndexName,
                ": an interrupted nuq dequantize over an older output? Write the folder again");
  }
}

// An output folder that holds another sharded model: shards numbered as Hugging Face numbers them
// (`-00002-of-00005`) or indexes beside this run's outputs, or an index at this run's index name
// that maps files it will not write. Writing among them would leave two models in one folder, and
// the new index would orphan the other's shards (the earlier index removed), so the folder is
// refused before anything is read. A folder an earlier run of the same checkpoint wrote holds this
// run's names only, and is written over; single files beside them (an adapter, Mistral's
// consolidated.safetensors, macOS's ._ files) are no shards of a model, and are left. A folder that
// cannot be listed (write-only) is not judged.
void require_no_other_model(const fs::path& folder, const std::set<std::string>& ours, const std::string& index_name,
                            const std::string& option) {
  std::set<std::string> others;
  std::error_code ec;
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (ours.count(name) || is_apple_double(name)) continue;
    if (is_index_name(name) || numbered_shard(name)) others.insert(name);
  }
  const fs::path index = folder / index_name;
  if (fs::is_regular_file(index, ec)) {
    try {
      for (const std::string& shard : shards_of_index(index)) {
        const std::string name = fs::path(shard).filename().string();
        if (!ours.count(name)) others.insert(name);  // (whether or not the file is there)
      }
    } catch (const Error& e) {
      throw Error(option + " " + folder.string() + ": holds " + index_name + ", which is not an index this run " +
                  "would write over (" + e.what() + "); give a new or empty folder, or remove it");
    }
  }
  NUQ_REQUIRE(others.empty(), option, " ", folder.string(), ": holds another model's files (",
              first_few(std::vector<std::string>(others.begin(), others.end()), 4),
              "), which this run would not write over: its index would leave them out, or the folder would mix two "
              "models; give a new or empty folder, or remove them");
}

// The files under this run's names that an earlier run wrote are what this one writes (quantized
// or restored shards), so that a run cut short between renames leaves shards that readers refuse
// together (two quantize runs, or restorations of two: require_one_quantize_run,
// require_one_restoration), never a mix of new shards and another model's.
void require_outputs_of_a_like_run(const std::vector<std::string>& outputs, ShardedCheckpoint::Writes writes) {
  const bool quantized = writes == ShardedCheckpoint::Writes::Quantized;
  for (const std::string& output : outputs) {
    std::error_code ec;
    if (!fs::exists(output, ec)) continue;
    std::map<std::string, std::string> metadata;
    try {
      metadata = io::SafetensorsReader(output).layout().metadata;
    } catch (const Error& e) {
      throw Error("--output " + output + ": a file this run would write over, which does not read (" + e.what() +
                  "); give a new or empty folder, or remove it");
    }
    NUQ_REQUIRE(quantized ? is_quantized_file(metadata) : metadata.count(kRestoredFromKey) != 0, "--output ", output,
                ": this run would write over it, and ", quantized ? "nuq quantize" : "nuq dequantize",
                " did not write it (", quantized ? "it holds no quantized tensors" : "it was not restored from codes",
                ": the original model?); give a new or empty folder, or remove it");
  }
}

// What a folder without an index holds that is no shard of its model, and says what it is: macOS's
// AppleDouble files (._*, never safetensors) always; beside the model's own files, a PEFT adapter
// (its own small model of other names) and Mistral's consolidated*.safetensors (the same weights
// again, in Mistral's names), which other tools do not read as the model's shards either.
std::string side_file(const std::string& name, bool beside_the_model) {
  if (is_apple_double(name)) return "macOS's metadata of another file";
  if (beside_the_model && name.rfind("adapter_", 0) == 0)
    return "an adapter, not the model's weights; give the file itself to read it";
  if (beside_the_model && name.rfind("consolidated", 0) == 0)
    return "Mistral's copy of the weights under its own names; give the file itself to read it";
  return "";
}

// The model's own files, as transformers and diffusers name them: model.safetensors, its numbered
// shards, diffusion_pytorch_model.safetensors (other names are read too, but do not make an
// adapter or a consolidated copy beside them a side file).
bool model_file(const std::string& name) {
  const bool side = is_apple_double(name) || name.rfind("adapter_", 0) == 0 || name.rfind("consolidated", 0) == 0;
  return !side &&
         (name.rfind("model", 0) == 0 || name.rfind("diffusion_pytorch_model", 0) == 0 || numbered_shard(name));
}

// A folder without an index: its .safetensors files but the side files (sorted), and those with
// what they are.
using SideFiles = std::vector<std::pair<std::string, std::string>>;  // (name, what it is)
std::pair<std::vector<std::string>, SideFiles> folder_shards(const fs::path& path) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(path))
    if (entry.path().extension() == ".safetensors") names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  const bool beside_the_model = std::any_of(names.begin(), names.end(), model_file);
  std::pair<std::vector<std::string>, SideFiles> out;
  for (const std::string& name : names) {
    if (const std::string what = side_file(name, beside_the_model); !what.empty()) out.second.push_back({name, what});
    else out.first.push_back((path / name).string());
  }
  return out;
}

}  // namespace

std::vector<std::string> checkpoint_shards(const std::string& input) {
  NUQ_REQUIRE(!input.empty(), "the input name is empty");
  const fs::path path(input);
  if (const fs::path index = index_of(path); !index.empty()) {
    std::vector<std::string> shards = shards_of_index(index);
    std::error_code ec;
    for (const std::string& shard : shards)
      NUQ_REQUIRE(fs::exists(shard, ec) || ec, index.string(), ": its weight_map names ",
                  fs::path(shard).filename().string(), ", which is not beside it (a shard missing from a download or a "
                  "copy, or a broken link?)");
    return shards;
  }
  if (!fs::is_directory(path)) return {input};
  const auto [shards, left] = folder_shards(path);
  NUQ_REQUIRE(!shards.empty(), input, ": a folder with neither ", kIndexName, " nor .safetensors files",
              left.empty() ? "" : " but " + left.front().first + " (" + left.front().second + ")",
              pytorch_files_hint(path));
  require_every_numbered_shard(path, shards);
  require_one_restoration(input, shards);
  return shards;
}

Error tensor_in_two_shards(const std::string& shard, const std::string& tensor, const std::string& other) {
  bool indexed = false;  // shards an index names are one model's; a folder's files without one may be two
  try {
    indexed = !index_of(fs::path(shard).parent_path()).empty();
  } catch (const Error&) {
    indexed = true;  // (several indexes: the shards came from one of them)
  }
  return Error(shard + ": tensor '" + tensor + "' is also in " + other +
               (indexed ? ": a model's shards hold each tensor once (a tied weight saved in both?)"
                        : ": the files are no shards of one model (two variants of it, as diffusers' .fp16 beside "
                          "its full-precision file?); give the file to read"));
}

std::vector<std::string> checkpoint_warnings(const std::string& input) {
  const fs::path index = index_of(input);
  if (!index.empty()) return disagreements(index, read_index(index).weight_map, checkpoint_shards(input));
  if (input.empty() || !fs::is_directory(input)) return {};
  std::vector<std::string> lines;
  for (const auto& [file, what] : folder_shards(input).second)
    lines.push_back(input + ": " + file + " is not read as a shard of the model (" + what + ")");
  return lines;
}

ShardedCheckpoint::ShardedCheckpoint(const std::string& input, const std::string& output, Writes writes)
    : inputs_(checkpoint_shards(input)), folder_(output) {
  input_index_ = index_of(input).string();
  if (!input_index_.empty()) {
    // The index's own metadata beyond total_size (a peer's format tags, say), carried to the new index.
    index_metadata_ = read_index(input_index_).metadata.dump();
    index_name_ = fs::path(input_index_).filename().string();  // the name its readers look for
  }
  sharded_ = inputs_.size() > 1 || fs::is_directory(input) || fs::path(input).extension() == ".json";
  if (!sharded_) {
    outputs_.push_back(output);
    io::require_output_path(output, inputs_, "--output");
    return;
  }
  for (const std::string& shard : inputs_) {  // the new index names each in JSON, which holds UTF-8 alone
    try {
      (void)nlohmann::json(fs::path(shard).filename().string()).dump();
    } catch (const nlohmann::json::exception&) {
      throw Error(shard + ": the file name is not valid UTF-8, so no index can name it; rename the shard");
    }
  }
  created_folder_ = io::make_output_folder(output, "--output");
  if (created_folder_) made_folder_ = std::make_unique<io::TemporaryFile>(folder_, /*folder=*/true);
  try {
    std::set<std::string> ours{index_name_};
    for (const std::string& shard : inputs_) {
      outputs_.push_back((fs::path(output) / fs::path(shard).filename()).string());
      io::require_output_path(outputs_.back(), inputs_, "--output");
      ours.insert(fs::path(shard).filename().string());
    }
    io::require_output_path((fs::path(output) / index_name_).string(), inputs_, "--output");
    // Two runs writing one folder would each rename its shards over the other's and both succeed.
    // (Best effort: where the file system has no flock, a run goes on unlocked.)
    folder_lock_ = ::open(output.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (folder_lock_ >= 0 && ::flock(folder_lock_, LOCK_EX | LOCK_NB) != 0) {
      NUQ_REQUIRE(errno != EWOULDBLOCK, "--output ", output,
                  ": another nuq run is writing this folder; wait for it to end, or give another folder");
    }
    if (!created_folder_) {
      require_no_other_model(output, ours, index_name_, "--output");
      require_outputs_of_a_like_run(outputs_, writes);
    }
  } catch (...) {  // no destructor runs for a constructor that throws: what it made goes here
    std::error_code ec;
    if (created_folder_) fs::remove(folder_, ec);  // (before the lock goes: no run has it meanwhile)
    if (folder_lock_ >= 0) ::close(folder_lock_);
    throw;
  }
}

ShardedCheckpoint::~ShardedCheckpoint() {
  held_.clear();  // their temporaries removed first, so that a folder this run made is empty again
  if (created_folder_ && !indexed_) {
    std::error_code ec;  // removes the folder this run made only while nothing was written into it
    fs::remove(folder_, ec);
  }
  if (folder_lock_ >= 0) ::close(folder_lock_);  // last: no other run takes the folder before then
}

void ShardedCheckpoint::hold(std::size_t shard, std::unique_ptr<io::SafetensorsWriter> output) {
  NUQ_ASSERT(shard < outputs_.size() && output, "holding shard ", shard, " of ", outputs_.size());
  held_.resize(outputs_.size());
  output->sync_and_set_aside();  // (at once where a WriteBehind's sync_later already ran: nothing is dirty)
  held_[shard] = std::move(output);
}

std::string ShardedCheckpoint::publish() {
  NUQ_ASSERT(held_.size() == outputs_.size() &&
                 std::all_of(held_.begin(), held_.end(), [](const auto& output) { return bool(output); }),
             "publishing before every shard's output is held");
  // Past the removal of the old index only renames remain: every temporary is checked first, and
  // the new index is on the disk.
  for (const std::unique_ptr<io::SafetensorsWriter>& output : held_) output->check_set_aside();
  const std::unique_ptr<io::PreparedFile> index = prepare_index();
  {
    const io::SignalsDeferred deferred;  // a signal meanwhile is taken at the end of the renames
    if (sharded_) {
      std::error_code ec;  // absent is fine; a failure shows when the new index is renamed
      fs::remove(fs::path(folder_) / index_name_, ec);
    }
    for (std::unique_ptr<io::SafetensorsWriter>& output : held_) output->finish();
    if (index) index->commit();
  }
  held_.clear();
  if (!index) return "";
  indexed_ = true;
  made_folder_.reset();
  return (fs::path(folder_) / index_name_).string();
}

void ShardedCheckpoint::add_tensor(const std::string& tensor, std::size_t shard) {
  NUQ_REQUIRE(shard < outputs_.size(), "shard ", shard, " of ", outputs_.size());
  weight_map_[tensor] = shard;
}

// The new index is written as it is read: a checkpoint of 10^5 tensors (a mixture of experts)
// maps each name to a file, and a JSON tree of that map, dumped, took several times the bytes of
// the text. The layout is nlohmann's dump(2), as the index was written before.
std::unique_ptr<io::PreparedFile> ShardedCheckpoint::prepare_index() const {
  if (!sharded_) return nullptr;
  const std::string index = (fs::path(folder_) / index_name_).string();
  std::vector<std::string> files;  // each output's file name as JSON, once
  for (const std::string& output : outputs_) files.push_back(nlohmann::json(fs::path(output).filename().string()).dump());
  return std::make_unique<io::PreparedFile>(index, [&](std::ostream& out) {
    nlohmann::json metadata = index_metadata_.empty() ? nlohmann::json::object() : nlohmann::json::parse(index_metadata_);
    metadata["total_size"] = total_bytes_;  // the tensors' bytes, headers excluded (Hugging Face's count)
    // One level deeper below (JSON text has no raw newline), copied once: a replace at each newline
    // moved the rest of the text each time, quadratic in an index's metadata (3 MB took 30 s).
    const std::string dumped = metadata.dump(2);
    std::string metadata_text;
    metadata_text.reserve(dumped.size() + dumped.size() / 4);
    for (const char c : dumped) {
      metadata_text += c;
      if (c == '\n') metadata_text += "  ";
    }
    out << "{\n  \"metadata\": " << metadata_text << ",\n  \"weight_map\": ";
    if (weight_map_.empty()) {
      out << "{}\n}\n";
      return;
    }
    const char* separator = "{\n    ";
    for (const auto& [tensor, shard] : weight_map_) {
      out << separator << nlohmann::json(tensor).dump() << ": " << files[shard];
      separator = ",\n    ";
    }
    out << "\n  }\n}\n";
  });
}

}  // namespace nuq
