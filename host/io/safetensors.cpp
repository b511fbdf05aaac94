#include "nuq/io/safetensors.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <set>
#include <string_view>

#include <nlohmann/json.hpp>

#include "nuq/error.h"
#include "nuq/io/atomic_file.h"
#include "nuq/io/file_checks.h"
#include "nuq/io/json_parse.h"
#include "header_entries.h"

namespace nuq::io {
namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  std::size_t bits;
};

constexpr std::array<DTypeInfo, 22> kDTypes{{
    {DType::BOOL, "BOOL", 8},       {DType::U8, "U8", 8},
    {DType::I8, "I8", 8},           {DType::U16, "U16", 16},
    {DType::I16, "I16", 16},        {DType::F16, "F16", 16},
    {DType::BF16, "BF16", 16},      {DType::U32, "U32", 32},
    {DType::I32, "I32", 32},        {DType::F32, "F32", 32},
    {DType::U64, "U64", 64},        {DType::I64, "I64", 64},
    {DType::F64, "F64", 64},        {DType::F8_E4M3, "F8_E4M3", 8},
    {DType::F8_E5M2, "F8_E5M2", 8}, {DType::F8_E8M0, "F8_E8M0", 8},
    {DType::F8_E4M3FNUZ, "F8_E4M3FNUZ", 8}, {DType::F8_E5M2FNUZ, "F8_E5M2FNUZ", 8},
    {DType::F4, "F4", 4},           {DType::F6_E2M3, "F6_E2M3", 6},
    {DType::F6_E3M2, "F6_E3M2", 6}, {DType::C64, "C64", 64},
}};

const DTypeInfo& info(DType dtype) {
  for (const auto& entry : kDTypes)
    if (entry.dtype == dtype) return entry;
  NUQ_ASSERT(false, "dtype without an entry");
}

std::uint64_t little_endian_u64(const std::uint8_t* b) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | b[i];
  return v;
}

// A header nests three deep (the header, a tensor, its shape); one far deeper is refused before
// the parse that would hold every level of it (tens of bytes of memory per byte of text).
constexpr int kMaxHeaderDepth = 8;

// The header's JSON bounded, a key named twice refused (io/json_parse.h).
void check_header_json(const std::string& text, const std::string& name) {
  try {
    check_json_bounds(text, kMaxHeaderDepth);
  } catch (const Error& e) {
    const std::string what = e.what();
    if (what.rfind("names '", 0) == 0) throw Error(name + ": the header " + what);
    if (what.rfind("not valid JSON", 0) == 0) throw Error(name + ": the header is " + what);
    throw Error(name + ": the header is not valid JSON (" + what + ")");
  }
}

DType parse_dtype(const HeaderTensor& tensor, const std::string& where) {
  NUQ_REQUIRE(tensor.dtype.has_value(), where, ": dtype is not a string");
  if (const auto dtype = dtype_named(*tensor.dtype)) return *dtype;
  throw Error(where + ": unknown dtype '" + *tensor.dtype + "'");
}

// What is wrong with __metadata__, if anything.
std::optional<std::string> metadata_fault(const HeaderMetadata& metadata, const std::string& name) {
  if (!metadata.is_object) return name + ": __metadata__ is not an object";
  if (metadata.first_not_string)
    return name + ": __metadata__ value '" + *metadata.first_not_string + "' is not a string";
  return std::nullopt;
}

TensorEntry checked_entry(const HeaderTensor& tensor, std::uint64_t data_size, const std::string& where) {
  NUQ_REQUIRE(tensor.is_object, where, " is not an object");
  NUQ_REQUIRE(tensor.has_dtype && tensor.shape.present && tensor.data_offsets.present, where,
              " needs dtype, shape and data_offsets");
  TensorEntry entry;
  entry.dtype = parse_dtype(tensor, where);
  NUQ_REQUIRE(tensor.shape.is_array && tensor.shape.count <= kMaxRank, where,
              ": shape must be an array of rank <= ", kMaxRank);
  for (const std::optional<std::uint64_t>& dim : tensor.shape.kept) {
    NUQ_REQUIRE(dim.has_value(), where, ": shape entries must be non-negative integers");
    NUQ_REQUIRE(*dim <= std::uint64_t(INT64_MAX), where, ": shape entry ", *dim, " is out of range");
    entry.shape.push_back(static_cast<std::int64_t>(*dim));
  }
  const std::size_t count = checked_element_count(entry.shape, where);
  const std::size_t bytes_needed = byte_size(entry.dtype, count, where);
  const HeaderNumbers& offsets = tensor.data_offsets;
  NUQ_REQUIRE(offsets.is_array && offsets.count == 2 && offsets.kept[0] && offsets.kept[1], where,
              ": data_offsets must be two non-negative integers");
  entry.begin = *offsets.kept[0];
  entry.end = *offsets.kept[1];
  NUQ_REQUIRE(entry.begin <= entry.end && entry.end <= data_size, where, ": data_offsets [", entry.begin, ", ",
              entry.end, "] fall outside the ", data_size, " data bytes");
  NUQ_REQUIRE(entry.end - entry.begin == bytes_needed, where, ": data_offsets span ", entry.end - entry.begin,
              " bytes but ", to_string(entry.dtype), " x shape needs ", bytes_needed);
  return entry;
}

}  // namespace

std::string to_string(DType dtype) { return info(dtype).name; }

std::optional<DType> dtype_named(const std::string& name) {
  for (const auto& entry : kDTypes)
    if (name == entry.name) return entry.dtype;
  return std::nullopt;
}
std::size_t dtype_bits(DType dtype) { return info(dtype).bits; }

std::size_t dtype_size(DType dtype) {
  NUQ_ASSERT(info(dtype).bits % 8 == 0, "dtype_size of a sub-byte dtype");
  return info(dtype).bits / 8;
}

std::size_t byte_size(DType dtype, std::size_t count, const std::string& where) {
  const std::size_t bits = info(dtype).bits;
  NUQ_REQUIRE(count <= SIZE_MAX / bits, where, ": the shape's byte size overflows");
  NUQ_REQUIRE(count * bits % 8 == 0, where, ": ", count, " elements of ", info(dtype).name, " (", bits,
              " bits each) are not a whole number of bytes");
  return count * bits / 8;
}

std::size_t checked_element_count(const std::vector<std::int64_t>& shape, const std::string& where) {
  std::uint64_t count = 1, without_zeros = 1;
  for (std::int64_t d : shape) {
    NUQ_REQUIRE(d >= 0, where, ": shape [", shape_text(shape), "] has a negative dimension");
    if (d == 0) {
      count = 0;
      continue;
    }
    NUQ_REQUIRE(without_zeros <= kMaxShapeProduct / std::uint64_t(d), where, ": shape [", shape_text(shape),
                "] is too large (its elements' byte size overflows)");
    without_zeros *= std::uint64_t(d);
  }
  return count ? std::size_t(without_zeros) : 0;
}

std::size_t element_count(const std::vector<std::int64_t>& shape) {
  std::size_t count = 1;
  for (std::int64_t d : shape) count *= static_cast<std::size_t>(d);
  return count;
}

std::size_t Tensor::element_count() const { return io::element_count(shape); }

std::size_t TensorEntry::element_count() const { return io::element_count(shape); }

namespace {

// The weight formats users hand nuq instead of safetensors, told by their first bytes. A
// safetensors file never starts so: each would be a header length far beyond the cap.
std::string other_weight_format(const std::uint8_t* first8) {
  const auto starts = [&](const char* magic, std::size_t n) { return std::memcmp(first8, magic, n) == 0; };
  if (starts("PK\x03\x04", 4)) return "a zip archive (PyTorch's torch.save, pytorch_model.bin, or numpy's .npz)";
  if (first8[0] == 0x80 && first8[1] >= 2 && first8[1] <= 5) return "a Python pickle (an older torch.save or pytorch_model.bin)";
  if (starts("GGUF", 4)) return "a GGUF file (llama.cpp)";
  if (starts("\x89HDF\r\n\x1a\n", 8)) return "an HDF5 file (Keras .h5)";
  if (starts("\x93NUMPY", 6)) return "a numpy .npy array";
  return "";
}

}  // namespace

std::uint64_t header_length(const std::uint8_t* first, std::uint64_t file_size, const std::string& name) {
  std::uint8_t first8[8] = {};  // a file shorter than 8 bytes still names its format when it has one
  std::copy_n(first, std::size_t(std::min<std::uint64_t>(file_size, 8)), first8);  // (an empty file's `first` may be null)
  const std::uint64_t header_size = file_size >= 8 ? little_endian_u64(first8) : 0;
  if (file_size < 8 || header_size > kMaxSafetensorsHeader || header_size > file_size - 8) {  // (a small pickle's is the second)
    // JSON text (after a byte-order mark or white space): a sharded checkpoint's index, given where
    // a shard is read.
    std::size_t at = std::memcmp(first8, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    while (at < 8 && (first8[at] == ' ' || first8[at] == '\t' || first8[at] == '\n' || first8[at] == '\r')) ++at;
    const bool json = at < 8 && first8[at] == '{' &&
                      std::all_of(first8 + at + 1, first8 + 8, [](std::uint8_t b) { return b >= 9 && b != 127; });
    NUQ_REQUIRE(!json, name, ": a JSON file, not safetensors (a sharded checkpoint's index? nuq quantize and nuq dequantize "
                "take the index or its folder; this reads one .safetensors file)");
    // A repository cloned without git-lfs holds "version https://git-lfs.github.com/spec/v1 ..." texts.
    NUQ_REQUIRE(std::memcmp(first8, "version ", 8) != 0, name, ": a Git LFS pointer, not the file itself, so not "
                "safetensors (a repository cloned without git-lfs? git lfs pull fetches the files)");
    const std::string format = other_weight_format(first8);
    NUQ_REQUIRE(format.empty(), name, ": ", format, ", not safetensors; nuq reads safetensors (docs/format.md "
                "says how to convert a PyTorch checkpoint)");
  }
  NUQ_REQUIRE(file_size >= 8, name, ": too short for a safetensors header length (", file_size, " bytes)");
  // A file of another format reads as a length of many exabytes: say so, not only that it is large.
  NUQ_REQUIRE(header_size <= kMaxSafetensorsHeader, name, ": header length ", header_size, " exceeds the cap of ",
              kMaxSafetensorsHeader, " bytes",
              header_size > file_size - 8 ? " and the file itself (" + std::to_string(file_size) +
                                                " bytes): not a safetensors file, or a damaged one"
                                          : std::string());
  NUQ_REQUIRE(header_size <= file_size - 8, name, ": header length ", header_size,
              " runs past the end of the file (", file_size, " bytes)");
  return header_size;
}

Layout parse_layout(const std::string& text, std::uint64_t data_size, const std::string& name) {
  NUQ_REQUIRE(!text.empty(), name, ": the header is empty (length 0); a safetensors header is a JSON object");
  NUQ_REQUIRE(text[0] == '{', name, ": the header must start with '{'");
  check_header_json(text, name);  // nlohmann rejects invalid UTF-8
  Layout layout;
  struct Range {
    std::uint64_t begin, end;
    const std::string* tensor;  // its name, a key of layout.tensors
  };
  std::vector<Range> ranges;
  // Each tensor judged as its entry ends, only a sound one kept: of the faults, the one a walk of
  // the whole header in key order (__metadata__ in its place among the names) would meet first is
  // named, whatever the order of the text.
  std::optional<std::pair<std::string, std::string>> fault;  // (key, message)
  const auto note_fault = [&fault](const std::string& key, std::string message) {
    if (!fault || key < fault->first) fault.emplace(key, std::move(message));
  };
  std::optional<HeaderMetadata> metadata =
      read_header_entries(text, kMaxRank + 1, [&](const std::string& tensor, const HeaderTensor& entry) {
        if (fault && tensor > fault->first) return;  // a fault before it is named whatever it holds
        try {
          TensorEntry checked = checked_entry(entry, data_size, name + ": tensor '" + tensor + "'");
          const auto [at, added] = layout.tensors.emplace(tensor, std::move(checked));
          ranges.push_back({at->second.begin, at->second.end, &at->first});
        } catch (const Error& e) {
          note_fault(tensor, e.what());
        }
      });
  if (metadata) {
    if (std::optional<std::string> message = metadata_fault(*metadata, name))
      note_fault("__metadata__", std::move(*message));
    else
      layout.metadata = std::move(metadata->values);
  }
  if (fault) throw Error(fault->second);
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {  // (the same range: name order)
    return a.begin != b.begin ? a.begin < b.begin : a.end != b.end ? a.end < b.end : *a.tensor < *b.tensor;
  });
  std::uint64_t expected = 0;
  const std::string* previous = nullptr;
  for (const Range& r : ranges) {
    NUQ_REQUIRE(r.begin >= expected, name, ": tensor '", *r.tensor, "' overlaps tensor '", *previous,
                "' (it begins at data byte ", r.begin, ", before that one ends at ", expected, "): safetensors gives each tensor "
                "bytes of its own (a tied weight is saved once)");
    previous = r.tensor;
    NUQ_REQUIRE(r.begin == expected, name, ": a hole of ", r.begin - expected, " bytes before tensor '",
                *r.tensor, "'");
    expected = r.end;
  }
  NUQ_REQUIRE(expected == data_size, name, ": ", data_size - expected, " trailing bytes after the last tensor");
  return layout;
}

TensorFile parse_safetensors(const std::vector<std::uint8_t>& bytes, const std::string& name) {
  const std::uint64_t header_size = header_length(bytes.data(), bytes.size(), name);
  const std::string text(reinterpret_cast<const char*>(bytes.data()) + 8, header_size);
  const std::size_t data_begin = 8 + header_size;
  const Layout layout = parse_layout(text, bytes.size() - data_begin, name);
  TensorFile file;
  file.metadata = layout.metadata;
  for (const auto& [key, entry] : layout.tensors) {
    Tensor& tensor = file.tensors[key];
    tensor.dtype = entry.dtype;
    tensor.shape = entry.shape;
    tensor.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(data_begin + entry.begin),
                       bytes.begin() + static_cast<std::ptrdiff_t>(data_begin + entry.end));
  }
  return file;
}

TensorFile read_safetensors(const std::string& path, std::size_t max_bytes) {
  require_input_file(path);  // a directory would "open" and report a size of 2^63 - 1
  std::ifstream in(path, std::ios::binary);
  NUQ_REQUIRE(in.is_open(), path, ": cannot open: ", std::strerror(errno));
  // Its size from its end, sought apart from the open: a file whose end cannot be sought (/proc's)
  // fails there, and is said to.
  in.seekg(0, std::ios::end);
  const std::streamoff end = in ? std::streamoff(in.tellg()) : -1;
  NUQ_REQUIRE(end >= 0, path, ": cannot tell its size (not a file that can be read whole, as /proc's are not)");
  const auto size = static_cast<std::size_t>(end);
  NUQ_REQUIRE(size <= max_bytes, path, ": ", size, " bytes exceed the limit of ", max_bytes);
  std::vector<std::uint8_t> bytes(size);
  in.seekg(0);
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
  NUQ_REQUIRE(std::size_t(in.gcount()) == size, path, ": read failed after ", in.gcount(), " of its ", size, " bytes: ",
              in.bad() ? std::strerror(errno) : "the file ended before its size (changed while read, or not as long as "
                                                "its size says, as /sys's files are not)");
  return parse_safetensors(bytes, path);
}

std::string plan_header(const std::map<std::string, std::string>& metadata,
                        std::vector<std::pair<std::string, TensorEntry>>& tensors, const std::string& where) {
  // Widest elements first: each tensor's bytes are then a multiple of every later tensor's element
  // size, so every tensor starts at a multiple of its own (the data begins 8-byte aligned), and a
  // reader may view it in place. Within one width, by name; the sub-byte dtypes (whose byte counts
  // may be odd) go last, with the bytes.
  std::stable_sort(tensors.begin(), tensors.end(), [](const auto& a, const auto& b) {
    const std::size_t wa = std::max<std::size_t>(dtype_bits(a.second.dtype), 8);
    const std::size_t wb = std::max<std::size_t>(dtype_bits(b.second.dtype), 8);
    return wa != wb ? wa > wb : a.first < b.first;
  });
  std::uint64_t offset = 0;
  for (auto& [key, entry] : tensors) {
    NUQ_REQUIRE(key != "__metadata__", where, ": a tensor cannot be named __metadata__");
    NUQ_REQUIRE(entry.shape.size() <= kMaxRank, where, ": tensor '", key, "' has ", entry.shape.size(),
                " dimensions; a safetensors file holds at most ", kMaxRank, " (numpy's limit)");
    entry.begin = offset;
    entry.end = offset + byte_size(entry.dtype, entry.element_count(), where + ": tensor '" + key + "'");
    offset = entry.end;
  }
  // The text is put together entry by entry, in the order nlohmann's object (a std::map) would
  // dump it, so that the bytes are those of `header.dump()`: one nlohmann object for 100,000
  // tensors took 200 MB and most of the header's time. Only strings go through nlohmann (escaping).
  std::vector<const std::pair<std::string, TensorEntry>*> by_name;
  by_name.reserve(tensors.size());
  for (const auto& tensor : tensors) by_name.push_back(&tensor);
  std::sort(by_name.begin(), by_name.end(), [](const auto* a, const auto* b) { return a->first < b->first; });
  for (std::size_t i = 1; i < by_name.size(); ++i)
    NUQ_REQUIRE(by_name[i - 1]->first != by_name[i]->first, where, ": tensor '", by_name[i]->first, "' is named twice");
  // The metadata's text too is written entry by entry, not through an nlohmann copy of the map
  // and its dump: a quantized file's description of 200,000 tensors is 57 MB of text, and each of
  // those two held it again at the peak of the run.
  const std::string_view format_key = "format";
  const bool add_format = !metadata.count(std::string(format_key));
  std::size_t length = 64;
  for (const auto& [key, value] : metadata) length += key.size() + value.size() + value.size() / 8 + 6;
  for (const auto* tensor : by_name) length += tensor->first.size() + 96 + 21 * tensor->second.shape.size();
  std::string text;
  text.reserve(length);  // (a guess that holds for names without escapes: the text is not moved)
  text += '{';
  const auto put_number = [&text](auto value) {
    char digits[24];
    text.append(digits, std::to_chars(digits, digits + sizeof digits, value).ptr);
  };
  const auto put_tensor = [&](const std::pair<std::string, TensorEntry>& tensor) {
    if (text.size() > 1) text += ',';
    text += nlohmann::json(tensor.first).dump();
    text += ":{\"data_offsets\":[";
    put_number(tensor.second.begin);
    text += ',';
    put_number(tensor.second.end);
    text += "],\"dtype\":\"";
    text += to_string(tensor.second.dtype);
    text += "\",\"shape\":[";
    for (std::size_t d = 0; d < tensor.second.shape.size(); ++d) {
      if (d) text += ',';
      put_number(tensor.second.shape[d]);
    }
    text += "]}";
  };
  // "__metadata__" takes its place among the names, as a key of the object would.
  const auto metadata_at = std::lower_bound(by_name.begin(), by_name.end(), std::string_view("__metadata__"),
                                            [](const auto* tensor, std::string_view key) { return tensor->first < key; });
  for (auto it = by_name.begin(); it != metadata_at; ++it) put_tensor(**it);
  if (text.size() > 1) text += ',';
  text += "\"__metadata__\":{";
  bool first = true, format_written = !add_format;
  const auto put_entry = [&](std::string_view key, std::string_view value) {
    if (!first) text += ',';
    first = false;
    text += nlohmann::json(key).dump();
    text += ':';
    text += nlohmann::json(value).dump();
  };
  for (const auto& [key, value] : metadata) {
    // "format" (safetensors' own key, "pt" unless given) in the place of the map's order.
    if (!format_written && format_key < key) put_entry(format_key, "pt"), format_written = true;
    put_entry(key, value);
  }
  if (!format_written) put_entry(format_key, "pt");
  text += '}';
  for (auto it = metadata_at; it != by_name.end(); ++it) put_tensor(**it);
  text += '}';
  text.append((8 - text.size() % 8) % 8, ' ');  // align the data to 8 bytes, as the reference does
  // What nuq would refuse to read back (a quantized file's header is its input's metadata and
  // names plus the description of what was quantized) is never written.
  if (text.size() > kMaxSafetensorsHeader) {
    std::size_t metadata_text = 0;
    for (const auto& [key, value] : metadata) metadata_text += key.size() + value.size();
    NUQ_REQUIRE(false, where, ": the header would take ", text.size(), " bytes, over the cap of ", kMaxSafetensorsHeader,
                " bytes that safetensors readers accept (its metadata holds ", metadata_text, " bytes of text; ",
                tensors.size(), " tensors)");
  }
  return text;
}

namespace {

// Every tensor's entry, checked against its bytes, for plan_header to order and place.
std::vector<std::pair<std::string, TensorEntry>> entries_of(const TensorFile& file) {
  std::vector<std::pair<std::string, TensorEntry>> plan;
  for (const auto& [key, tensor] : file.tensors) {
    const std::string where = "safetensors: tensor '" + key + "'";
    const std::size_t needed = byte_size(tensor.dtype, tensor.element_count(), where);
    NUQ_REQUIRE(tensor.data.size() == needed, where, " holds ", tensor.data.size(), " bytes, its shape needs ", needed);
    plan.push_back({key, TensorEntry{tensor.dtype, tensor.shape, 0, 0}});
  }
  return plan;
}

void put_length(std::uint64_t length, std::uint8_t* out) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<std::uint8_t>(length >> (8 * i));
}

}  // namespace

std::vector<std::uint8_t> serialize_safetensors(const TensorFile& file) {
  std::vector<std::pair<std::string, TensorEntry>> plan = entries_of(file);
  const std::string text = plan_header(file.metadata, plan, "safetensors");
  std::vector<std::uint8_t> bytes(8);
  bytes.reserve(8 + text.size() + (plan.empty() ? 0 : plan.back().second.end));
  put_length(text.size(), bytes.data());
  bytes.insert(bytes.end(), text.begin(), text.end());
  for (const auto& [key, entry] : plan) {
    const Tensor& tensor = file.tensors.at(key);
    bytes.insert(bytes.end(), tensor.data.begin(), tensor.data.end());
  }
  return bytes;
}

void write_safetensors(const std::string& path, const TensorFile& file) {
  // The tensors' bytes go to the file as they lie, never gathered into one buffer: a restored
  // checkpoint of several GB is not held twice.
  std::vector<std::pair<std::string, TensorEntry>> plan = entries_of(file);
  const std::string text = plan_header(file.metadata, plan, path);
  write_atomically(path, [&](std::ostream& out) {
    std::uint8_t length[8];
    put_length(text.size(), length);
    out.write(reinterpret_cast<const char*>(length), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& [key, entry] : plan) {
      const Tensor& tensor = file.tensors.at(key);
      out.write(reinterpret_cast<const char*>(tensor.data.data()), static_cast<std::streamsize>(tensor.data.size()));
    }
  });
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  if (shape.empty()) return "scalar";
  std::string text;
  for (auto d : shape) text += (text.empty() ? "" : "x") + std::to_string(d);
  return text;
}

void require_layout(const Tensor& tensor, DType dtype, const std::vector<std::int64_t>& shape, const std::string& where) {
  NUQ_REQUIRE(tensor.dtype == dtype && tensor.shape == shape, where, ": expected ", to_string(dtype), " [",
              shape_text(shape), "], got ", to_string(tensor.dtype), " [", shape_text(tensor.shape), "]");
}

Tensor f32_tensor(std::vector<std::int64_t> shape, const std::vector<float>& values) {
  Tensor t;
  t.dtype = DType::F32;
  t.shape = std::move(shape);
  NUQ_REQUIRE(t.element_count() == values.size(), "f32_tensor: shape holds ", t.element_count(),
              " values, got ", values.size());
  t.data.resize(values.size() * sizeof(float));
  if (!values.empty()) std::memcpy(t.data.data(), values.data(), t.data.size());  // empty: data() may be null
  return t;
}

std::vector<float> to_floats(const Tensor& tensor, const std::string& name) {
  NUQ_REQUIRE(tensor.dtype == DType::F32, name, ": expected F32, got ", to_string(tensor.dtype));
  std::vector<float> values(tensor.element_count());
  NUQ_REQUIRE(tensor.data.size() == values.size() * sizeof(float), name, ": holds ", tensor.data.size(),
              " bytes, its shape needs ", values.size() * sizeof(float));
  if (!values.empty()) std::memcpy(values.data(), tensor.data.data(), values.size() * sizeof(float));
  return values;
}

}  // namespace nuq::io
