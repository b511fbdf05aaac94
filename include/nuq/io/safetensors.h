// safetensors files (Hugging Face's format, which PyTorch's `safetensors` loader reads): an 8-byte
// little-endian header length, a JSON header naming every tensor's dtype, shape and byte range,
// then the tensor bytes. Read as strictly as the reference parser: a bounded header, valid UTF-8
// JSON, no duplicate names, string-only metadata, known dtypes, shapes whose byte size matches
// the range, and ranges that tile the data exactly (no overlap, no hole, nothing after).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace nuq::io {

// Every dtype the format defines (safetensors 0.6+). nuq quantizes F32, F16 and BF16 (widen.h)
// and carries the rest through as bytes: the 8-bit floats of FP8 checkpoints, the packed 4- and
// 6-bit floats of MX checkpoints (F4: two elements a byte; F6: four in three bytes) and C64.
enum class DType {
  BOOL, U8, I8, U16, I16, F16, BF16, U32, I32, F32, U64, I64, F64,
  F8_E4M3, F8_E5M2, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ, F4, F6_E2M3, F6_E3M2, C64
};

std::string to_string(DType dtype);
// The dtype the format names `name` ("F8_E4M3"); nullopt for a name it does not define.
std::optional<DType> dtype_named(const std::string& name);
std::size_t dtype_bits(DType dtype);
// Bytes of one element; an internal error for the sub-byte F4, F6_E2M3 and F6_E3M2 (use byte_size).
std::size_t dtype_size(DType dtype);
// Bytes of `count` elements. Throws nuq::Error naming `where` when they are not a whole number of
// bytes (an odd number of F4 elements), as the reference parser refuses such a tensor.
std::size_t byte_size(DType dtype, std::size_t count, const std::string& where);

// The number of elements of `shape` (1 for a scalar), for shapes already known to be sane: the
// reader checks a file's shapes (checked_element_count) before any of them reaches this product.
std::size_t element_count(const std::vector<std::int64_t>& shape);

// The product of a shape's non-zero dimensions, which numpy and PyTorch must be able to allocate
// an array of even when another dimension is 0: at most 2^60, so that the bytes of any dtype fit a
// signed 64-bit size.
constexpr std::uint64_t kMaxShapeProduct = std::uint64_t{1} << 60;
// The most dimensions a tensor of a file nuq reads or writes may have: numpy's limit (32), so that
// every array Python hands nuq.save is written, and every file written is read again.
constexpr std::size_t kMaxRank = 32;

// element_count for a shape from outside (a file's header, a caller's): throws nuq::Error naming
// `where` for a negative dimension or non-zero dimensions whose product exceeds kMaxShapeProduct.
std::size_t checked_element_count(const std::vector<std::int64_t>& shape, const std::string& where);

struct Tensor {
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> data;  // little-endian, row-major
  std::size_t element_count() const;
};

struct TensorFile {
  std::map<std::string, std::string> metadata;  // "__metadata__"; {"format": "pt"} when written
  std::map<std::string, Tensor> tensors;
};

// Where one tensor lies in a file: [begin, end) counted from the first data byte.
struct TensorEntry {
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0;
  std::size_t element_count() const;
};

// A file's header, validated: metadata and every tensor's place (no overlap, no hole, nothing
// after the last one).
struct Layout {
  std::map<std::string, std::string> metadata;
  std::map<std::string, TensorEntry> tensors;
};

constexpr std::size_t kMaxSafetensorsHeader = 100u << 20;  // the reference parser's cap
constexpr std::size_t kDefaultSafetensorsLimit = std::size_t{16} << 30;

// Throws nuq::Error naming the file and the field.
TensorFile read_safetensors(const std::string& path, std::size_t max_bytes = kDefaultSafetensorsLimit);
TensorFile parse_safetensors(const std::vector<std::uint8_t>& bytes, const std::string& name);

// The header length in a file's first 8 bytes (`first` holds min(8, file_size) bytes), checked
// against the cap and the file's size; another tool's weight file is named for what it is.
std::uint64_t header_length(const std::uint8_t* first, std::uint64_t file_size, const std::string& name);
// Validates the header text (after the 8-byte length) against `data_size` bytes of data.
Layout parse_layout(const std::string& header, std::uint64_t data_size, const std::string& name);
// The header nuq writes for `tensors` (dtype and shape given): reorders them widest element first
// (then by name), so that every tensor starts at a multiple of its element size, fills in their
// offsets, and returns the JSON text padded to a multiple of 8 bytes. A header longer than
// kMaxSafetensorsHeader, which no reader would take, is refused (errors name `where`, the file).
std::string plan_header(const std::map<std::string, std::string>& metadata,
                        std::vector<std::pair<std::string, TensorEntry>>& tensors, const std::string& where);

// Written atomically; "format": "pt" is added to the metadata unless present.
void write_safetensors(const std::string& path, const TensorFile& file);
std::vector<std::uint8_t> serialize_safetensors(const TensorFile& file);

// "784x512" (or "scalar" for rank 0), for messages and tables.
std::string shape_text(const std::vector<std::int64_t>& shape);

// Throws nuq::Error naming `where` unless the tensor is `dtype` with exactly `shape` (a tensor
// reshaped to the same byte count is as wrong as one of the wrong size).
void require_layout(const Tensor& tensor, DType dtype, const std::vector<std::int64_t>& shape, const std::string& where);

// F32 tensors from and to float vectors (the host is little-endian, as the format).
Tensor f32_tensor(std::vector<std::int64_t> shape, const std::vector<float>& values);
std::vector<float> to_floats(const Tensor& tensor, const std::string& name);

}  // namespace nuq::io
