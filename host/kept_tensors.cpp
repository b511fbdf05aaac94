#include "kept_tensors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <regex>
#include <set>

#include "nuq/error.h"
#include "nuq/io/widen.h"
#include "nuq/list_text.h"
#include "nuq/sharded_checkpoint.h"

namespace nuq {
namespace {

// The module a tensor belongs to: its name up to the last dot ("" at the top level).
std::string module_of(const std::string& name) {
  const std::size_t dot = name.rfind('.');
  return dot == std::string::npos ? std::string() : name.substr(0, dot);
}

// Why a tensor is kept as norms and biases are unless --quantize-vectors (a 2-bit norm breaks a
// model), or nullptr: fewer than two dimensions; one dimension above 1 (ViT's cls_token [1, 1, d]);
// a name whose last part ends in "bias" (gpt-oss's per-expert gate_up_proj_bias [E, 2I]).
const char* vector_reason(const std::string& name, const std::vector<std::int64_t>& shape) {
  if (shape.size() < 2) return "fewer than two dimensions (--quantize-vectors)";
  if (std::count_if(shape.begin(), shape.end(), [](std::int64_t d) { return d > 1; }) < 2)
    return "a vector: one dimension above 1 (--quantize-vectors)";
  const std::string last = name.substr(name.rfind('.') + 1);  // (npos + 1 == 0: the whole name)
  if (last.size() >= 4 && last.compare(last.size() - 4, 4, "bias") == 0) return "a bias (--quantize-vectors)";
  return nullptr;
}

// Whether --skip names `tensor`. A search tries the pattern from every character, each try walking
// the rest of the name: time grows with the square of its length (libstdc++, '(a|b)*norm': 0.15 s
// at 2,048 characters, 14 s at 20,000), and without the polynomial executor the recursion, one
// level a character, would overflow the stack. Names beyond any real checkpoint's are refused for
// matching instead.
bool skip_matches(const std::regex& skip, const std::string& tensor, const io::SafetensorsReader& reader) {
  constexpr std::size_t kLongestName = 2048;
  NUQ_REQUIRE(tensor.size() <= kLongestName, reader.path(), ": a tensor name of ", tensor.size(),
              " characters is too long to match --skip against (at most ", kLongestName, ")");
  return std::regex_search(tensor, skip);
}

// How deep `pattern` nests its groups: '(' outside a bracket expression and not escaped.
std::size_t group_depth(const std::string& pattern) {
  std::size_t depth = 0, deepest = 0;
  bool in_brackets = false;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\') ++i;  // the escaped character is literal
    else if (in_brackets) in_brackets = c != ']';
    else if (c == '[') in_brackets = true;
    else if (c == '(') deepest = std::max(deepest, ++depth);
    else if (c == ')' && depth > 0) --depth;
  }
  return deepest;
}

}  // namespace

std::regex skip_pattern(const std::string& pattern) {
  const std::string quoted = "--skip '" + (pattern.size() <= 80 ? pattern : pattern.substr(0, 80) + "...") + "'";
  NUQ_REQUIRE(pattern.size() <= kMaxSkipPatternLength, quoted, ": a pattern of ", pattern.size(),
              " characters; at most ", kMaxSkipPatternLength, " are taken");
  NUQ_REQUIRE(group_depth(pattern) <= kMaxSkipPatternDepth, quoted, ": groups nested ", group_depth(pattern),
              " deep; at most ", kMaxSkipPatternDepth, " are taken");
#if defined(__GLIBCXX__)
  constexpr auto kSyntax = std::regex::ECMAScript | std::regex_constants::__polynomial;
#else
  constexpr auto kSyntax = std::regex::ECMAScript;
#endif
  try {
    return std::regex(pattern, kSyntax);
  } catch (const std::regex_error& e) {
    // A glob's leading '*' (or '?') repeats nothing in a regular expression.
    const bool glob_like = !pattern.empty() && (pattern[0] == '*' || pattern[0] == '?' || pattern[0] == '+');
    throw Error(quoted + ": not a regular expression (" + e.what() + ")" +
                (glob_like ? "; --skip takes regular expressions, not globs: '.*' matches any text" : ""));
  }
}

ShardReaders open_shards(const std::vector<std::string>& paths) {
  ShardReaders readers;
  std::map<std::string, std::size_t> shard_of;
  for (std::size_t s = 0; s < paths.size(); ++s) {
    readers.push_back(std::make_unique<io::SafetensorsReader>(paths[s]));
    for (const auto& [name, entry] : readers.back()->layout().tensors)
      if (!shard_of.emplace(name, s).second) throw tensor_in_two_shards(paths[s], name, paths[shard_of[name]]);
  }
  return readers;
}

std::set<std::string> modules_quantized_elsewhere(const ShardReaders& readers) {
  std::set<std::string> modules;
  for (const auto& reader : readers)
    for (const auto& [name, entry] : reader->layout().tensors) {
      const bool buffer = entry.dtype == io::DType::I64 || entry.dtype == io::DType::U64 ||
                          entry.dtype == io::DType::BOOL || entry.dtype == io::DType::F64;
      if (io::is_floating(entry.dtype) || buffer || entry.element_count() <= 1) continue;
      modules.insert(name);
      if (!module_of(name).empty()) modules.insert(module_of(name));
    }
  return modules;
}

const char* kept_reason(const std::string& name, const io::TensorEntry& entry, const io::SafetensorsReader& reader,
                        const StreamOptions& o, const std::set<std::string>& quantized_elsewhere) {
  if (!io::is_floating(entry.dtype)) return "not F32, F16 or BF16";
  // An empty tensor has nothing to quantize (and a [2^40, 0] one would cost a map per row).
  if (entry.element_count() == 0) return "empty";
  // (Before the vectors' reason: a peer's scales [out, 1] stay whatever --quantize-vectors says.)
  if (quantized_elsewhere.count(module_of(name))) return "of a module another tool quantized";
  if (!o.quantize_vectors)
    if (const char* why = vector_reason(name, entry.shape)) return why;
  if (o.skip && skip_matches(*o.skip, name, reader)) return "named by --skip";
  return nullptr;
}

namespace {

// The distinct values met, while there are at most two; a mask's are 0 and 1 (multiplied in), or 0
// and one value at most -100 (added to attention scores before a softmax), -inf included: PyTorch's
// causal masks are torch.full(..., -inf).triu(1).
struct TwoValues {
  float value[2] = {0.0f, 0.0f};
  int seen = 0;
  // Whether `count` values of `dtype` at `bytes` keep them two at most (each one finite or -inf).
  bool add(io::DType dtype, const std::uint8_t* bytes, std::size_t count, std::vector<float>& values) {
    values.resize(count);
    io::widen_to_f32(dtype, bytes, count, values.data());
    for (float v : values) {
      if (std::isnan(v) || v == std::numeric_limits<float>::infinity()) return false;
      if ((seen > 0 && v == value[0]) || (seen > 1 && v == value[1])) continue;
      if (seen == 2) return false;
      value[seen++] = v;
    }
    return true;
  }
  bool of_a_mask() const {
    const float zero = value[0] == 0.0f ? value[0] : value[1], other = value[0] == 0.0f ? value[1] : value[0];
    return seen == 2 && zero == 0.0f && (other == 1.0f || other <= -100.0f);
  }
};

// Whether statistics are those of values of a mask, two of them, at the extremes. Statistics that
// skipped non-finite values (--nonfinite saturate) are a 0 and -inf mask's if every finite one is 0;
// the read that follows tells.
bool stats_of_a_mask(const WeightStats& stats, std::size_t count) {
  if (count == 0 || stats.count + stats.nonfinite != count) return false;
  if (stats.nonfinite) return stats.count > 0 && stats.min == 0.0 && stats.max == 0.0;
  if (!(stats.min == 0.0 && stats.max == 1.0) && !(stats.max == 0.0 && stats.min <= -100.0)) return false;
  // Values in [min, max] have a variance of at most (max - mean) * (mean - min), reached only when
  // every one is min or max (the Bhatia-Davis bound): a tensor well below it has values between.
  const double bound = double(count) * (stats.max - stats.mean) * (stats.mean - stats.min);
  return stats.m2 >= bound * (1.0 - 1e-3);
}

constexpr std::size_t kFirstValues = 64;  // enough to tell weights from a mask, in one small read

// Whether every value of `entry` is one of the two `known` has met or, while it has met fewer,
// of the first two met: read `piece_bytes` at a time, from value `from`, up to the first other.
bool the_rest_two_valued(const io::SafetensorsReader& reader, const io::TensorEntry& entry, std::size_t from,
                         std::size_t piece_bytes, TwoValues& known) {
  const std::size_t count = entry.element_count(), element = io::dtype_size(entry.dtype);
  const std::size_t chunk = std::max(kFirstValues, piece_bytes / sizeof(float));
  std::vector<std::uint8_t> raw;
  std::vector<float> values;
  for (std::size_t at = from, n = 0; at < count; at += n) {
    n = std::min(at == 0 ? kFirstValues : chunk, count - at);
    raw.resize(n * element);
    reader.read(entry, std::uint64_t(at) * element, n * element, raw.data());
    if (!known.add(entry.dtype, raw.data(), n, values)) return false;
  }
  return known.of_a_mask();
}

// The floating tensors of one shard (named, not yet kept) that are masks (is_a_mask). Their first values are
// read a window at a time in the order of the file, so that thousands of small tensors cost a few
// reads rather than one each; only a tensor they leave in doubt is read on.
std::set<std::string> masks_among(const io::SafetensorsReader& reader, std::vector<const std::string*> names,
                                  std::size_t piece_bytes) {
  constexpr std::uint64_t kWindow = 64 << 10;
  const auto& tensors = reader.layout().tensors;
  std::sort(names.begin(), names.end(),
            [&](const std::string* a, const std::string* b) { return tensors.at(*a).begin < tensors.at(*b).begin; });
  std::set<std::string> masks;
  std::vector<std::uint8_t> window;
  std::vector<float> values;
  std::uint64_t window_begin = 0;
  for (const std::string* name : names) {
    const io::TensorEntry& entry = tensors.at(*name);
    const std::size_t element = io::dtype_size(entry.dtype);
    const std::uint64_t head = std::min<std::uint64_t>(kFirstValues * element, entry.end - entry.begin);
    if (entry.begin + head > window_begin + window.size()) {  // (in file order: never before the window)
      window_begin = entry.begin;
      window.resize(std::size_t(std::max(head, std::min(kWindow, reader.data_size() - entry.begin))));
      reader.read_data(window_begin, window.size(), window.data());
    }
    TwoValues known;
    if (known.add(entry.dtype, window.data() + (entry.begin - window_begin), std::size_t(head / element), values) &&
        the_rest_two_valued(reader, entry, std::size_t(head / element), piece_bytes, known))
      masks.insert(*name);
  }
  return masks;
}

}  // namespace

bool is_a_mask(const io::SafetensorsReader& reader, const io::TensorEntry& entry, std::size_t piece_bytes) {
  TwoValues known;
  return the_rest_two_valued(reader, entry, 0, piece_bytes, known);
}

bool holds_a_mask(const io::SafetensorsReader& reader, const io::TensorEntry& entry, const WeightStats& stats,
                  std::size_t piece_bytes) {
  return stats_of_a_mask(stats, entry.element_count()) && is_a_mask(reader, entry, piece_bytes);
}

CheckpointPlan plan_checkpoint(const std::string& input, const StreamOptions& options) {
  return plan_checkpoint(open_shards(checkpoint_shards(input)), options);
}

CheckpointPlan plan_checkpoint(const ShardReaders& readers, const StreamOptions& options) {
  const std::set<std::string> elsewhere = modules_quantized_elsewhere(readers);
  CheckpointPlan plan;
  plan.warnings = keeping_warnings(readers, options, elsewhere);
  for (const auto& reader : readers) {
    // Masks among the tensors to quantize, and among those kept as vectors or biases are (GPT-2's
    // attn.bias is a 0/1 mask): their reason is that they are masks, which --quantize-vectors keeps too.
    std::vector<const std::string*> candidates;
    for (const auto& [name, entry] : reader->layout().tensors) {
      const char* kept = kept_reason(name, entry, *reader, options, elsewhere);
      const char* as_vector = vector_reason(name, entry.shape);
      if (!kept || (as_vector && std::strcmp(kept, as_vector) == 0)) candidates.push_back(&name);
      plan.tensors.push_back({name, reader->path(), entry.dtype, entry.shape, entry.end - entry.begin, kept ? kept : ""});
    }
    // (A run finds masks from the statistics its pass 1 takes: no read of its own.)
    const std::set<std::string> masks = masks_among(*reader, candidates, options.piece_bytes);
    for (std::size_t t = plan.tensors.size() - reader->layout().tensors.size(); t < plan.tensors.size(); ++t)
      if (masks.count(plan.tensors[t].name)) plan.tensors[t].kept = kMaskReason;
  }
  std::sort(plan.tensors.begin(), plan.tensors.end(),
            [](const TensorPlan& a, const TensorPlan& b) { return a.name < b.name; });
  return plan;
}

std::vector<std::string> keeping_warnings(const ShardReaders& readers, const StreamOptions& o,
                                          const std::set<std::string>& quantized_elsewhere) {
  std::vector<std::string> warnings;
  bool skip_named_one = false;
  for (const auto& reader : readers) {
    std::vector<std::string> f64;
    for (const auto& [name, entry] : reader->layout().tensors) {
      // (A module another tool quantized keeps its floating tensors whatever their dtype: not told.)
      const bool f64_matrix = entry.dtype == io::DType::F64 && entry.element_count() > 1 &&
                              (o.quantize_vectors || !vector_reason(name, entry.shape)) &&
                              !quantized_elsewhere.count(module_of(name));
      // --skip is matched where it decides something: the F64 matrices told of, and floating tensors
      // (as kept_as_they_are matches it) until it has named one. Other dtypes are kept anyway.
      const bool asked = o.skip && (f64_matrix || (!skip_named_one && io::is_floating(entry.dtype)));
      const bool skipped = asked && skip_matches(*o.skip, name, *reader);
      skip_named_one = skip_named_one || skipped;
      if (f64_matrix && !skipped) f64.push_back("'" + name + "'");
    }
    if (f64.empty()) continue;
    warnings.push_back(reader->path() + ": " + std::to_string(f64.size()) +
                       " F64 tensor(s) kept as they are: nuq quantizes F32, F16 and BF16 (convert them to float32 "
                       "to quantize them): " + first_few(f64, 3));
  }
  if (o.skip && !skip_named_one)
    warnings.push_back("--skip names no tensor of the checkpoint that it could keep (it is searched in each full name, e.g. "
                       "'embed_tokens|lm_head'), so it keeps nothing");
  return warnings;
}

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

std::string masks_kept(const std::string& path, const std::vector<std::string>& names) {
  return path + ": " + std::to_string(names.size()) + " mask(s) kept as they are (only 0 and 1, as GPT-2's causal "
         "attn.bias, or 0 and one value <= -100 or -inf, added to attention scores; not weights): " + first_few(names, 3);
}

}  // namespace nuq
