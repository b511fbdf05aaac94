// IDX files (the MNIST family's format), raw or gzip-compressed, read strictly: the magic, the
// element type, the rank and every dimension are checked against what the file actually holds,
// so a truncated, padded or hostile file is rejected with a message naming the file and the field
// instead of being read past its end or allocating without bound.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace nuq::io {

enum class IdxType : std::uint8_t {
  U8 = 0x08, I8 = 0x09, I16 = 0x0B, I32 = 0x0C, F32 = 0x0D, F64 = 0x0E,
};

struct IdxArray {
  IdxType type = IdxType::U8;
  std::vector<std::uint32_t> dims;
  // Elements in row-major order, converted from the file's big-endian to this machine's order.
  std::vector<std::uint8_t> bytes;
  std::size_t element_count() const;
};

// The largest payload read_idx accepts unless told otherwise (the MNIST training images are 47 MB).
constexpr std::size_t kDefaultIdxByteLimit = std::size_t{1} << 30;

// Reads `path`; gzip is recognised by its magic bytes, not by the file name. Throws nuq::Error.
IdxArray read_idx(const std::string& path, std::size_t max_bytes = kDefaultIdxByteLimit);

// The type and dimensions alone (`bytes` left empty), checked as read_idx checks them: what a file
// holds, known before its data is read.
IdxArray read_idx_header(const std::string& path, std::size_t max_bytes = kDefaultIdxByteLimit);

// Writes an IDX file (raw), atomically: a temporary file in the same folder, then a rename.
void write_idx(const std::string& path, const IdxArray& array);

}  // namespace nuq::io
