#include "nuq/quantized_file.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include "nuq/codebook_record.h"
#include "nuq/design.h"
#include "nuq/error.h"
#include "nuq/fingerprint.h"
#include "nuq/grouped.h"
#include "nuq/io/json_parse.h"
#include "nuq/io/widen.h"
#include "nuq/json_numbers.h"
#include "nuq/packed.h"
#include "nuq/quantize_table.h"

namespace nuq {
namespace {

// Where each layout keeps its description: version 1 and nuq models before it use "nuq.quantized";
// checkpoints before version 1 used "nuq.checkpoint" (which training checkpoints also use, for
// something else: they have no "tensors").
constexpr const char* kKey = "nuq.quantized";
constexpr const char* kLegacyCheckpointKey = "nuq.checkpoint";

// The levels of a stored affine map, computed as make_quantize_table computes them.
std::vector<float> grid_levels(double offset, double scale, std::size_t count) {
  std::vector<float> levels(count);
  for (std::size_t k = 0; k < count; ++k) levels[k] = static_cast<float>(offset + scale * double(k));
  return levels;
}

// The description's JSON (version 1 on, a nuq model's before it, or a checkpoint's before it), its
// version and tensors object checked. With `visit`, the tensors object is left empty and each
// tensor's entry handed to `visit` instead.
nlohmann::json description_of(const std::map<std::string, std::string>& metadata, const std::string& name,
                              const io::MemberVisitor& visit = nullptr) {
  auto meta = metadata.find(kKey);
  if (meta == metadata.end()) meta = metadata.find(kLegacyCheckpointKey);
  NUQ_REQUIRE(meta != metadata.end(), name, ": no ", kKey, " in __metadata__ (not a file nuq quantize wrote)");
  nlohmann::json description;
  try {  // a description nests four deep (tensors, a tensor, its shape): one far deeper is no description
    description = visit ? io::parse_json_bounded(meta->second, 16, "tensors", visit)
                        : io::parse_json_bounded(meta->second, 16);
  } catch (const Error& e) {
    throw Error(name + ": " + meta->first + ": " + e.what());
  }
  // The version first: a later format may describe its tensors otherwise.
  if (description.is_object() && description.contains("version")) {  // absent in files written before version 1
    const nlohmann::json& version = description["version"];
    const std::optional<std::int64_t> number = json_integer(version);
    NUQ_REQUIRE(number && *number >= 1, name, ": ", meta->first, ": version ", version.dump(),
                " is not a format version (a positive integer)");
    NUQ_REQUIRE(*number <= kQuantizedFormatVersion, name, ": written in format version ", *number,
                "; this nuq reads up to version ", kQuantizedFormatVersion);
  }
  NUQ_REQUIRE(description.is_object() && description.contains("tensors") && description["tensors"].is_object(), name,
              ": ", meta->first, " has no tensors object (a training checkpoint is not a quantized file)");
  return description;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() > suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The tensors a quantized tensor `<name>` is stored as: `<name>` and one of these.
constexpr const char* kStoredSuffixes[] = {".codes", ".codebook", ".grid", ".scales"};

// The suffix of kStoredSuffixes `tensor_name` ends with, or nullptr.
const char* stored_suffix(const std::string& tensor_name) {
  for (const char* suffix : kStoredSuffixes)
    if (ends_with(tensor_name, suffix)) return suffix;
  return nullptr;
}

bool has_stored_suffix(const std::string& tensor_name) { return stored_suffix(tensor_name) != nullptr; }

// The number `key` of a description (`fallback` when absent), named with `where` when it is not one.
double number_of(const nlohmann::json& d, const char* key, double fallback, const std::string& where) {
  if (!d.contains(key)) return fallback;
  NUQ_REQUIRE(d.at(key).is_number(), where, ": ", key, " is ", d.at(key).dump(), ", not a number");
  return d.at(key).get<double>();
}

// The description's `kept` (version 2): tensors stored as they were under names that end like a
// quantized tensor's parts. Each must be one the file holds (`holds`), or the file is damaged.
template <typename Holds>
std::set<std::string> kept_of(const nlohmann::json& description, const std::string& name, const Holds& holds) {
  std::set<std::string> kept;
  if (!description.contains("kept")) return kept;
  NUQ_REQUIRE(description["kept"].is_array(), name, ": ", kKey, ": kept is not a list of names");
  for (const auto& entry : description["kept"]) {
    NUQ_REQUIRE(entry.is_string(), name, ": ", kKey, ": kept is not a list of names");
    const std::string tensor_name = entry.get<std::string>();
    NUQ_REQUIRE(holds.count(tensor_name), name, ": ", kKey, ": kept names '", tensor_name,
                "', which the file does not hold; the file is damaged");
    kept.insert(tensor_name);
  }
  return kept;
}

// A described tensor's stored parts: `<name>.codes` and its tables, those present and not kept.
std::vector<std::string> parts_of(const std::string& tensor_name, const std::set<std::string>& present,
                                  const std::set<std::string>& kept) {
  std::vector<std::string> parts;
  for (const char* suffix : kStoredSuffixes) {
    const std::string part = tensor_name + suffix;
    if (present.count(part) && !kept.count(part)) parts.push_back(part);
  }
  return parts;
}

// Codes without a description cannot be restored; copying them as they are would hand the user a
// checkpoint that looks whole and is not (a tensor the description lists as kept is not codes).
void require_not_quantized_data(const std::string& tensor_name, const std::string& name) {
  const char* suffix = stored_suffix(tensor_name);
  NUQ_REQUIRE(!suffix, name, ": tensor '", tensor_name, "' holds quantized data but ", kKey, " does not describe '",
              tensor_name.substr(0, tensor_name.size() - (suffix ? std::strlen(suffix) : 0)), "'; the file is damaged");
}

// The codes of one described tensor: U8 packed rows, or at 16 bits U16 [rows, cols] (and, in the
// checkpoints before version 1 only, `legacy_checkpoint`, U8 [rows, 2 cols]: the same bytes; a
// later file in that shape is refused, as any codes reshaped to their byte count are).
const std::vector<std::uint8_t>& read_codes(const io::Tensor& codes, std::size_t rows, std::size_t cols, int bits,
                                            bool legacy_checkpoint, const std::string& where) {
  const std::vector<std::int64_t> packed{std::int64_t(rows), std::int64_t(packed_row_bytes(cols, bits))};
  if (bits == 16 && !(legacy_checkpoint && codes.dtype == io::DType::U8 && codes.shape == packed))
    io::require_layout(codes, io::DType::U16, {packed[0], std::int64_t(cols)}, where);
  else
    io::require_layout(codes, io::DType::U8, packed, where);
  return codes.data;
}

std::vector<float> read_grid(const io::Tensor& grid, int bits, const std::string& where) {
  io::require_layout(grid, io::DType::F64, {2}, where);
  double map[2];
  std::memcpy(map, grid.data.data(), sizeof map);
  NUQ_REQUIRE(std::isfinite(map[0]) && std::isfinite(map[1]) && map[1] >= 0.0, where,
              ": offset and scale must be finite, scale not negative");
  std::vector<float> levels = grid_levels(map[0], map[1], std::size_t{1} << bits);
  // The ends are the extremes: a grid whose levels leave FP32's range would restore infinities.
  NUQ_REQUIRE(std::isfinite(levels.front()) && std::isfinite(levels.back()), where, ": offset ", map[0], " and scale ",
              map[1], " put levels at ", levels.front(), " .. ", levels.back(), "; every level must be a finite float");
  return levels;
}

// A grouped tensor: codes of the [rows, cols] matrix read as the [rows * groups, group_size] view,
// each group's levels mean + scale * the normalised codebook (grouped.h); the scales and the
// normalised levels kept, so that the tensor can be written again as it was read.
void read_groups(const io::TensorFile& file, const std::string& tensor, std::size_t rows, std::size_t cols, int bits,
                 QuantizedTensor& q, const std::string& where) {
  require_groupable(q.group_size, cols, bits, where);
  const std::size_t groups = rows * (cols / q.group_size);
  const auto codes = file.tensors.find(tensor + ".codes");
  const auto levels = file.tensors.find(tensor + ".codebook");
  const auto scales = file.tensors.find(tensor + ".scales");
  NUQ_REQUIRE(levels != file.tensors.end() && scales != file.tensors.end(), where,
              ": grouped, so it needs .codebook and .scales");
  q.normalised_levels = read_levels_table(levels->second, 1, bits, where + ".codebook");
  io::require_layout(scales->second, io::DType::F32, {std::int64_t(rows), std::int64_t(cols / q.group_size)},
                     where + ".scales");
  q.scales = io::to_floats(scales->second, where + ".scales");
  check_group_levels_finite(q, where);
  q.matrix = {{groups, q.group_size, bits, read_codes(codes->second, rows, cols, bits, false, where + ".codes")}, {}};
}

}  // namespace

bool stores_grid(const Codebook& codebook, int bits) { return bits == 16 && codebook.uniform_grid().has_value(); }

bool stores_grid_of(const std::optional<Codebook>& codebook, const QuantizedTensor& q) {
  return codebook && stores_grid(*codebook, q.matrix.codes.bits) && q.matrix.levels.size() == (std::size_t{1} << 16);
}

bool is_quantized_file(const std::map<std::string, std::string>& metadata) {
  if (metadata.count(kKey)) return true;
  // The checkpoints of the layout before version 1 were other tools' models, never nuq's networks:
  // a file naming its architecture with this key is nuq train's checkpoint, whatever its text holds.
  const auto legacy = metadata.find(kLegacyCheckpointKey);
  return legacy != metadata.end() && !metadata.count("nuq.architecture") &&
         legacy->second.find("\"tensors\"") != std::string::npos;
}

std::vector<float> read_levels_table(const io::Tensor& tensor, std::size_t rows, int bits, const std::string& where) {
  const std::int64_t per_table = std::int64_t{1} << bits;
  const std::vector<std::int64_t> per_row{std::int64_t(rows), per_table};
  if (tensor.shape != per_row) io::require_layout(tensor, io::DType::F32, {1, per_table}, where);
  std::vector<float> levels = io::to_floats(tensor, where);
  for (std::size_t i = 0; i < levels.size(); ++i)
    NUQ_REQUIRE(std::isfinite(levels[i]), where, ": level ", i, " is ", levels[i], "; every level must be finite");
  return levels;
}

std::string describe_quantized(const std::optional<Codebook>& codebook, Normalisation normalisation, double mean,
                               double stddev, const std::map<std::string, TensorDescription>& tensors,
                               const std::vector<std::string>& kept, const std::set<std::size_t>& run_group_sizes) {
  // The tensors' list is written as text, a tensor at a time: held as one tree it took about 1 KB
  // a tensor, the peak of a run of 200,000 tensors. The text is the tree's own dump (the tensors
  // in name order, each entry's keys sorted).
  std::string list = "{";
  for (const auto& [name, d] : tensors) {
    nlohmann::json entry = {{"shape", d.shape}, {"dtype", io::to_string(d.dtype)}, {"rows", d.rows}, {"cols", d.cols},
                            {"bits", d.bits},   {"mean", d.mean},                   {"stddev", d.stddev}};
    if (d.group_size) entry["group_size"] = d.group_size;
    if (list.size() > 1) list += ',';
    list += nlohmann::json(name).dump() + ':' + entry.dump();
  }
  list += '}';
  std::vector<std::string> ambiguous;
  for (const std::string& tensor_name : kept)
    if (has_stored_suffix(tensor_name)) ambiguous.push_back(tensor_name);
  std::sort(ambiguous.begin(), ambiguous.end());
  // The lowest version that reads the file: 2 for `kept`, 3 for a mu-law codebook recorded by its
  // parameters (version 2 readers rebuilt only uniform ones), 4 for a Lloyd-Max one (version 3
  // readers rebuilt uniform and mu-law ones). Each reads every earlier version's files.
  const nlohmann::json recorded = codebook ? codebook_record(*codebook) : nlohmann::json();
  const bool by_parameters = codebook && !recorded.contains("levels");
  const Method method = codebook ? codebook->provenance().method : Method::Uniform;
  const int version = by_parameters && method == Method::LloydMax ? 4
                      : by_parameters && method == Method::MuLaw  ? 3
                      : ambiguous.empty()                         ? 1
                                                                  : 2;
  nlohmann::json description = {{"normalisation", to_string(normalisation)}, {"mean", mean}, {"stddev", stddev}};
  if (!ambiguous.empty()) description["kept"] = ambiguous;
  if (codebook) description["codebook"] = recorded;
  if (!run_group_sizes.empty() && *run_group_sizes.rbegin() != 0) description["group_sizes"] = run_group_sizes;
  // A tree's keys are dumped sorted, and "tensors" and "version" sort after every other key: the
  // description is the tree's dump with those two appended.
  std::string text = description.dump();
  text.pop_back();  // its closing brace
  return text + ",\"tensors\":" + list + ",\"version\":" + std::to_string(version) + '}';
}

std::vector<std::pair<std::string, io::TensorEntry>> stored_tensors(const std::string& name, const TensorDescription& d,
                                                                    std::size_t tables, bool grid) {
  // LSB-first 16-bit codes are exactly little-endian U16, one per weight.
  const std::int64_t rows = std::int64_t(d.rows);
  std::vector<std::pair<std::string, io::TensorEntry>> stored = {
      {name + ".codes", d.bits == 16 ? io::TensorEntry{io::DType::U16, {rows, std::int64_t(d.cols)}}
                                     : io::TensorEntry{io::DType::U8, {rows, std::int64_t(packed_row_bytes(d.cols, d.bits))}}}};
  if (d.group_size) {
    stored.push_back({name + ".codebook", io::TensorEntry{io::DType::F32, {1, std::int64_t{1} << d.bits}}});
    stored.push_back({name + ".scales", io::TensorEntry{io::DType::F32, {rows, std::int64_t(d.cols / d.group_size)}}});
  } else if (grid) stored.push_back({name + ".grid", io::TensorEntry{io::DType::F64, {2}}});
  else stored.push_back({name + ".codebook", io::TensorEntry{io::DType::F32, {std::int64_t(tables), std::int64_t{1} << d.bits}}});
  return stored;
}

void require_groupable(std::size_t group_size, std::size_t cols, int bits, const std::string& where) {
  NUQ_REQUIRE(group_size > 0 && group_size % 8 == 0, where, ": a group size must be a positive multiple of 8, got ",
              group_size);
  NUQ_REQUIRE(cols % group_size == 0, where, ": rows of ", cols, " weights do not split into groups of ", group_size,
              " (skip the tensor, or choose a divisor)");
  NUQ_REQUIRE(bits <= 8, where, ": groups take codebooks of up to 8 bits, got ", bits);
}

std::pair<double, double> grid_map(const Codebook& codebook, double mean, double stddev) {
  const UniformGrid& grid = *codebook.uniform_grid();
  return {mean + stddev * grid.first_level, stddev * grid.step};
}

QuantizedParts quantized_parts(const QuantizedCheckpoint& run,
                               const std::map<std::string, const QuantizedTensor*>& quantized,
                               const std::set<std::string>& kept, const std::string& name) {
  QuantizedParts out;
  std::map<std::string, TensorDescription> described;
  for (const auto& [tensor_name, tensor] : quantized) {
    const QuantizedTensor& q = *tensor;
    const PackedCodes& codes = q.matrix.codes;
    const auto dtype = run.dtypes.find(tensor_name);
    TensorDescription d{q.shape, dtype == run.dtypes.end() ? io::DType::F32 : dtype->second,
                        codes.rows, codes.cols, codes.bits, q.mean, q.stddev, q.group_size};
    if (q.group_size) {  // described as the [rows, cols] matrix its [groups, group_size] codes cut up
      std::tie(d.rows, d.cols) = matrix_view(q.shape, io::element_count(q.shape));
      const std::string where = name + ": tensor '" + tensor_name + "'";
      require_groupable(q.group_size, d.cols, codes.bits, where);
      check_grouped(q, where);
    }
    const bool grid = !q.group_size && stores_grid_of(run.codebook, q);
    const std::size_t tables = q.matrix.levels.size() >> codes.bits;
    for (const auto& [stored_name, entry] : stored_tensors(tensor_name, d, tables, grid)) {
      NUQ_REQUIRE(!kept.count(stored_name) && !quantized.count(stored_name), name, ": tensor '", tensor_name,
                  "' cannot be stored: the checkpoint already has a '", stored_name, "'");
      StoredPart part{stored_name, entry, nullptr, {}};
      const std::string suffix = stored_name.substr(tensor_name.size());
      if (suffix == ".codes") {
        part.lying = &codes.bytes;
      } else if (suffix == ".grid") {
        const auto [offset, scale] = grid_map(*run.codebook, q.mean, q.stddev);
        const double map[2] = {offset, scale};
        part.made.resize(sizeof map);
        std::memcpy(part.made.data(), map, sizeof map);
      } else if (suffix == ".scales") {
        part.made = io::f32_tensor({std::int64_t(q.scales.size())}, q.scales).data;
      } else {  // .codebook: grouped, the normalised levels; else every table
        const std::vector<float>& levels = q.group_size ? q.normalised_levels : q.matrix.levels;
        part.made = io::f32_tensor({std::int64_t(levels.size())}, levels).data;
      }
      out.parts.push_back(std::move(part));
    }
    described.emplace(tensor_name, d);
  }
  std::sort(out.parts.begin(), out.parts.end(),
            [](const StoredPart& a, const StoredPart& b) { return a.name < b.name; });
  std::set<std::size_t> group_sizes;  // the file is the run
  for (const auto& [tensor_name, d] : described) group_sizes.insert(d.group_size);
  out.description = describe_quantized(run.codebook, run.normalisation, run.mean, run.stddev, described,
                                       std::vector<std::string>(kept.begin(), kept.end()), group_sizes);
  return out;
}

io::TensorFile to_tensor_file(const QuantizedCheckpoint& checkpoint, const std::string& name) {
  std::map<std::string, const QuantizedTensor*> quantized;
  for (const auto& [tensor_name, q] : checkpoint.quantized) quantized.emplace(tensor_name, &q);
  std::set<std::string> kept;
  for (const auto& [tensor_name, t] : checkpoint.copied) kept.insert(tensor_name);
  QuantizedParts parts = quantized_parts(checkpoint, quantized, kept, name);
  io::TensorFile out;
  out.tensors = {checkpoint.copied.begin(), checkpoint.copied.end()};
  for (StoredPart& part : parts.parts)
    out.tensors[part.name] =
        io::Tensor{part.entry.dtype, part.entry.shape, part.lying ? *part.lying : std::move(part.made)};
  out.metadata = checkpoint.metadata;
  out.metadata[kKey] = std::move(parts.description);
  return out;
}

namespace {

// What read_quantized_checkpoint reads of `file`: the run from `description` (codebook,
// normalisation, statistics, kept), each quantized tensor from its entry in `tensors`; metadata
// left out. (A file read a tensor at a time reads its run's description once, not once a tensor.)
QuantizedCheckpoint read_described(const nlohmann::json& description, const nlohmann::json& tensors,
                                   bool legacy_checkpoint, const io::TensorFile& file, const std::string& name) {
  QuantizedCheckpoint out;
  try {
    if (description.contains("codebook")) out.codebook = codebook_from_record(description["codebook"]);
    if (description.contains("normalisation"))
      out.normalisation = parse_normalisation(description["normalisation"].get<std::string>());
  } catch (const std::exception& e) {
    throw Error(name + ": " + kKey + ": " + e.what());
  }
  out.mean = number_of(description, "mean", 0.0, name + ": " + kKey);
  out.stddev = number_of(description, "stddev", 1.0, name + ": " + kKey);
  NUQ_REQUIRE(std::isfinite(out.mean) && std::isfinite(out.stddev) && out.stddev > 0.0, name,
              ": mean and stddev must be finite, stddev positive");
  const std::set<std::string> kept = kept_of(description, name, file.tensors);
  std::set<std::string> present, used;
  for (const auto& [tensor_name, t] : file.tensors)
    if (!kept.count(tensor_name)) present.insert(tensor_name);
  for (const auto& [tensor_name, d] : tensors.items()) {
    const std::string where = name + ": tensor '" + tensor_name + "'";
    std::vector<std::int64_t> shape;
    std::size_t rows = 0, cols = 0;
    int bits = 0;
    QuantizedTensor q;
    io::DType dtype = io::DType::F32;
    // A count: a whole number (as JSON has them: 2 or 2.0) that is not negative.
    const auto count_of = [&](const nlohmann::json& value, const char* what) {
      const std::optional<std::int64_t> n = json_integer(value);
      NUQ_REQUIRE(n && *n >= 0, where, ": ", what, " ", value.dump(), " is not a count (a whole number from 0 to 2^63 - 1)");
      return std::size_t(*n);
    };
    try {
      NUQ_REQUIRE(d.is_object() && d.at("shape").is_array(), where, ": its description needs a shape array");
      for (const nlohmann::json& dim : d.at("shape")) shape.push_back(std::int64_t(count_of(dim, "shape entry")));
      rows = count_of(d.at("rows"), "rows");
      cols = count_of(d.at("cols"), "cols");
      const std::optional<std::int64_t> width = json_integer(d.at("bits"));
      NUQ_REQUIRE(width && *width >= 0 && *width <= 64, where, ": unsupported code width ", d.at("bits").dump());
      bits = int(*width);
      q.mean = number_of(d, "mean", out.mean, where);
      q.stddev = number_of(d, "stddev", out.stddev, where);
      const std::string dtype_name = d.value("dtype", std::string("F32"));
      const std::optional<io::DType> named = io::dtype_named(dtype_name);
      NUQ_REQUIRE(named && io::is_floating(*named), where, ": dtype '", dtype_name,
                  "' is not one nuq quantizes (F32, F16 or BF16)");
      dtype = *named;
    } catch (const nlohmann::json::exception& e) {
      throw Error(where + ": bad description in " + kKey + ": " + e.what());
    }
    NUQ_REQUIRE(is_packable_bits(bits), where, ": unsupported code width ", bits);
    if (d.contains("group_size")) {  // written only for grouped tensors
      q.group_size = count_of(d.at("group_size"), "group_size");
      NUQ_REQUIRE(q.group_size > 0, where, ": group_size 0; a group holds at least one weight (the file is damaged)");
    }
    NUQ_REQUIRE(std::isfinite(q.mean) && std::isfinite(q.stddev) && q.stddev >= 0.0, where,
                ": mean and stddev must be finite, stddev not negative");
    std::size_t count = 1;
    for (std::int64_t dim : shape) {
      NUQ_REQUIRE(dim >= 0 && (dim == 0 || count <= std::numeric_limits<std::size_t>::max() / std::size_t(dim)), where,
                  ": bad shape");
      count *= std::size_t(dim);
    }
    // The matrix view follows from the shape alone (products of untrusted numbers could wrap).
    const auto [view_rows, view_cols] = matrix_view(shape, count);
    // (A tensor without rows was described as 0 x 0 before its columns were kept: read as written.)
    NUQ_REQUIRE((rows == view_rows && cols == view_cols) || (view_rows == 0 && rows == 0 && cols == 0), where,
                ": rows x cols (", rows, " x ", cols, ") do not match its shape");
    const auto codes = file.tensors.find(tensor_name + ".codes");
    NUQ_REQUIRE(present.count(tensor_name + ".codes"), where, ": missing .codes");
    for (const std::string& part : parts_of(tensor_name, present, kept)) used.insert(part);
    if (q.group_size) {
      NUQ_REQUIRE(present.count(tensor_name + ".codebook") && present.count(tensor_name + ".scales"), where,
                  ": grouped, so it needs .codebook and .scales (not kept as they were)");
      NUQ_REQUIRE(!present.count(tensor_name + ".grid"), where, ": grouped, so it has no .grid; the file is damaged");
      q.shape = shape;
      read_groups(file, tensor_name, rows, cols, bits, q, where);
      out.quantized[tensor_name] = std::move(q);
      out.dtypes[tensor_name] = dtype;
      continue;
    }
    NUQ_REQUIRE(!present.count(tensor_name + ".scales"), where,
                ": has .scales, but its description gives no group_size; the file is damaged");
    const auto levels = present.count(tensor_name + ".codebook") ? file.tensors.find(tensor_name + ".codebook")
                                                                 : file.tensors.end();
    const auto grid = present.count(tensor_name + ".grid") ? file.tensors.find(tensor_name + ".grid") : file.tensors.end();
    NUQ_REQUIRE((levels != file.tensors.end()) != (grid != file.tensors.end()), where,
                ": needs exactly one of .codebook and .grid");
    NUQ_REQUIRE(grid == file.tensors.end() || bits == 16, where, ".grid: an affine map is stored for 16-bit codes only");
    q.shape = shape;
    q.matrix = {{rows, cols, bits, read_codes(codes->second, rows, cols, bits, legacy_checkpoint, where + ".codes")},
                grid != file.tensors.end() ? read_grid(grid->second, bits, where + ".grid")
                                           : read_levels_table(levels->second, rows, bits, where + ".codebook")};
    out.quantized[tensor_name] = std::move(q);
    out.dtypes[tensor_name] = dtype;
  }
  for (const auto& [tensor_name, t] : file.tensors) {
    if (used.count(tensor_name)) continue;
    if (!kept.count(tensor_name)) require_not_quantized_data(tensor_name, name);
    out.copied[tensor_name] = t;
  }
  return out;
}

}  // namespace

QuantizedCheckpoint read_quantized_checkpoint(const io::TensorFile& file, const std::string& name) {
  const nlohmann::json description = description_of(file.metadata, name);
  // (described under nuq.checkpoint: a checkpoint before version 1)
  QuantizedCheckpoint out = read_described(description, description["tensors"], !file.metadata.count(kKey), file, name);
  out.metadata = file.metadata;
  out.metadata.erase(kKey);
  out.metadata.erase(kLegacyCheckpointKey);
  return out;
}

QuantizedCheckpoint read_quantized_one(const QuantizedLayout& layout, const std::string& tensor,
                                       const nlohmann::json& tensor_description, const io::TensorFile& stored,
                                       const std::string& name) {
  return read_described(*layout.run, nlohmann::json::object({{tensor, tensor_description}}),
                        layout.key == kLegacyCheckpointKey, stored, name);
}

QuantizedLayout quantized_layout(const std::map<std::string, std::string>& metadata,
                                 const std::vector<std::string>& names, const std::string& name) {
  // Each tensor's entry is kept as it is parsed, as its text and its shape, not as a tree: the
  // tree of every entry (about 600 bytes a tensor), held beside the layout built from it, was the
  // peak of reading a file of many tensors. The entries are checked below, in name order, once the
  // run's own fields have been.
  struct Entry {
    nlohmann::json shape;  // null where the entry has none or is not an object
    std::string text;
  };
  std::map<std::string, Entry> entries;
  nlohmann::json description = description_of(metadata, name, [&](const std::string& key, const nlohmann::json& d) {
    Entry& entry = entries[key];
    if (d.is_object()) entry.shape = d.value("shape", nlohmann::json());
    entry.text = d.dump();
  });
  const std::set<std::string> present(names.begin(), names.end());
  const std::set<std::string> kept = kept_of(description, name, present);
  QuantizedLayout layout;
  std::set<std::string> used;
  for (auto entry = entries.begin(); entry != entries.end(); entry = entries.erase(entry)) {
    const std::string& tensor_name = entry->first;
    QuantizedLayout::Described& described = layout.quantized[tensor_name];
    described.stored = parts_of(tensor_name, present, kept);
    used.insert(described.stored.begin(), described.stored.end());
    // The one that tells its original shape, before its stored tensors are read and checked.
    const std::string where = name + ": tensor '" + tensor_name + "'";
    NUQ_REQUIRE(entry->second.shape.is_array(), where, ": its description needs a shape array");
    for (const nlohmann::json& dim : entry->second.shape) {
      const std::optional<std::int64_t> n = json_integer(dim);
      NUQ_REQUIRE(n && *n >= 0, where, ": shape entry ", dim.dump(), " is not a count (a whole number from 0 to 2^63 - 1)");
      described.shape.push_back(*n);
    }
    described.description = std::move(entry->second.text);
  }
  for (const std::string& tensor_name : names) {
    if (used.count(tensor_name)) continue;
    if (!kept.count(tensor_name)) require_not_quantized_data(tensor_name, name);
    NUQ_REQUIRE(!layout.quantized.count(tensor_name), name, ": tensor '", tensor_name, "' is stored as it is and ", kKey,
                " also describes it as quantized; the file is damaged");
    layout.copied.push_back(tensor_name);
  }
  // The run's description, parsed once for every tensor read_quantized_one reads.
  layout.key = metadata.count(kKey) ? kKey : kLegacyCheckpointKey;
  // (its tensors an empty object: each was handed over as it was parsed)
  description.erase("kept");  // resolved above: a tensor's stored parts are named, kept ones left out
  layout.run = std::make_shared<const nlohmann::json>(std::move(description));
  return layout;
}

std::string quantized_run(const std::map<std::string, std::string>& metadata, const std::string& name) {
  // A run's group size lives in each tensor's entry: two runs that differ only there (per channel,
  // with and without groups: the same codebook and statistics) would otherwise compare equal. The
  // run's distinct sizes (0: without groups) are compared where any has groups: as "group_sizes"
  // records them (every shard of a grouped run since 2026-12-06, one without a quantized tensor
  // too), else (files written before) as the shard's own tensors give them. Only that is read of
  // the tensors' entries, each as it is parsed (a tree of 200,000 took 128 MB).
  std::set<double> group_sizes;  // the shard's own tensors'
  nlohmann::json description = description_of(metadata, name, [&](const std::string&, const nlohmann::json& entry) {
    const nlohmann::json size = entry.is_object() ? entry.value("group_size", nlohmann::json(0)) : nlohmann::json(0);
    group_sizes.insert(size.is_number() ? size.get<double>() : 0.0);
  });
  if (const auto recorded = description.find("group_sizes"); recorded != description.end()) {
    // The run's: distinct whole numbers, ascending, the shard's own among them, as nuq writes them.
    std::set<std::int64_t> sizes;
    bool valid = recorded->is_array() && !recorded->empty();
    for (std::size_t i = 0; valid && i < recorded->size(); ++i) {
      const std::optional<std::int64_t> whole = json_integer((*recorded)[i]);
      valid = whole && *whole >= 0 && (sizes.empty() || *whole > *sizes.rbegin());
      if (valid) sizes.insert(*whole);
    }
    for (double own : group_sizes) valid = valid && sizes.count(std::int64_t(own));
    NUQ_REQUIRE(valid, name, ": nuq.quantized's group_sizes ", recorded->dump(), " is not the ascending list of "
                "distinct group sizes its tensors' are among");
  } else if (!group_sizes.empty() && *group_sizes.rbegin() != 0.0) {
    description["group_sizes"] = group_sizes;
  }
  description.erase("tensors");
  description.erase("kept");
  description.erase("version");
  return canonical_text(description);  // one text however the writer spelled its numbers
}

std::map<std::string, std::string> plain_metadata(std::map<std::string, std::string> metadata) {
  metadata.erase(kKey);
  metadata.erase(kLegacyCheckpointKey);
  return metadata;
}

std::map<std::string, std::string> restored_metadata(const std::map<std::string, std::string>& metadata,
                                                     const std::string& name) {
  // Short in every shard's header; two runs that differ anywhere (codebook, normalisation,
  // statistics) differ here but for a 2^-64 chance.
  std::map<std::string, std::string> out = plain_metadata(metadata);
  out[kRestoredFromKey] = fingerprint(quantized_run(metadata, name));
  return out;
}

}  // namespace nuq
