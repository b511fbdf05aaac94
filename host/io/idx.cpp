#include "nuq/io/idx.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "nuq/error.h"
#include "nuq/io/file_checks.h"
#include "nuq/io/atomic_file.h"

namespace nuq::io {
namespace {

std::size_t element_size(IdxType type) {
  switch (type) {
    case IdxType::U8:
    case IdxType::I8: return 1;
    case IdxType::I16: return 2;
    case IdxType::I32:
    case IdxType::F32: return 4;
    case IdxType::F64: return 8;
  }
  return 0;
}

bool known_type(std::uint8_t code) {
  for (std::uint8_t known : {0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E})
    if (code == known) return true;
  return false;
}

// One reader for raw and gzip files: zlib's gzread passes uncompressed files through unchanged.
class Source {
 public:
  explicit Source(const std::string& path) : path_(path), file_((require_input_file(path), gzopen(path.c_str(), "rb"))) {
    NUQ_REQUIRE(file_, path, ": cannot open: ", std::strerror(errno));
    gzbuffer(file_, 1 << 16);
  }
  ~Source() {
    if (file_) gzclose(file_);
  }
  Source(const Source&) = delete;
  Source& operator=(const Source&) = delete;

  // Reads up to n bytes; returns how many came. Throws on a corrupt gzip stream.
  std::size_t read(void* out, std::size_t n) {
    std::size_t done = 0;
    while (done < n) {
      const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(n - done, 1u << 30));
      const int got = gzread(file_, static_cast<char*>(out) + done, chunk);
      if (got < 0) {
        int code = 0;
        const char* message = gzerror(file_, &code);
        throw Error(path_ + ": corrupt gzip stream: " + (message ? message : "unknown zlib error"));
      }
      if (got == 0) break;
      done += static_cast<std::size_t>(got);
    }
    return done;
  }
  void read_exactly(void* out, std::size_t n, const char* what) {
    const std::size_t got = read(out, n);
    NUQ_REQUIRE(got == n, path_, ": truncated in the ", what, " (", got, " of ", n, " bytes)");
  }

 private:
  std::string path_;
  gzFile file_;
};

std::uint32_t big_endian_u32(const std::uint8_t* b) {
  return (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) | (std::uint32_t{b[2]} << 8) | b[3];
}

}  // namespace

std::size_t IdxArray::element_count() const {
  std::size_t count = 1;
  for (std::uint32_t d : dims) count *= d;
  return count;
}

namespace {

// The magic and the dimensions, checked; `bytes` the data's size they give.
IdxArray read_header(Source& source, const std::string& path, std::size_t max_bytes, std::size_t& bytes) {
  std::array<std::uint8_t, 4> magic{};
  source.read_exactly(magic.data(), magic.size(), "magic number");
  NUQ_REQUIRE(magic[0] == 0 && magic[1] == 0, path, ": not an IDX file (the magic number must start "
              "with two zero bytes)");
  NUQ_REQUIRE(known_type(magic[2]), path, ": unknown IDX element type code 0x", std::hex,
              int{magic[2]});
  const int rank = magic[3];
  NUQ_REQUIRE(rank >= 1 && rank <= 4, path, ": IDX rank must be 1..4, got ", rank);

  IdxArray array;
  array.type = static_cast<IdxType>(magic[2]);
  std::array<std::uint8_t, 16> raw_dims{};
  source.read_exactly(raw_dims.data(), 4 * rank, "dimensions");
  bytes = element_size(array.type);
  for (int i = 0; i < rank; ++i) {
    const std::uint32_t d = big_endian_u32(raw_dims.data() + 4 * i);
    NUQ_REQUIRE(d > 0, path, ": dimension ", i, " is zero");
    NUQ_REQUIRE(bytes <= max_bytes / d, path, ": dimensions ask for more than ", max_bytes,
                " bytes (dimension ", i, " = ", d, ")");
    bytes *= d;
    array.dims.push_back(d);
  }
  return array;
}

}  // namespace

IdxArray read_idx_header(const std::string& path, std::size_t max_bytes) {
  Source source(path);
  std::size_t bytes = 0;
  return read_header(source, path, max_bytes, bytes);
}

IdxArray read_idx(const std::string& path, std::size_t max_bytes) {
  Source source(path);
  std::size_t bytes = 0;
  IdxArray array = read_header(source, path, max_bytes, bytes);
  const std::size_t size = element_size(array.type);
  // Read in chunks, growing the buffer only as data actually arrives: a ten-byte file whose
  // dimensions promise a gigabyte fails at its end instead of allocating the gigabyte first.
  constexpr std::size_t kChunk = std::size_t{1} << 20;
  while (array.bytes.size() < bytes) {
    const std::size_t have = array.bytes.size(), want = std::min(kChunk, bytes - have);
    array.bytes.resize(have + want);
    const std::size_t got = source.read(array.bytes.data() + have, want);
    NUQ_REQUIRE(got == want, path, ": truncated in the data (the dimensions promise ", bytes, " bytes, the file holds ",
                have + got, ")");
  }
  std::uint8_t extra;
  NUQ_REQUIRE(source.read(&extra, 1) == 0, path, ": trailing bytes after the ", bytes,
              " bytes of data the dimensions describe");
  if (size > 1)  // IDX is big-endian; convert each element in place.
    for (std::size_t i = 0; i < bytes; i += size) std::reverse(&array.bytes[i], &array.bytes[i] + size);
  return array;
}

void write_idx(const std::string& path, const IdxArray& array) {
  NUQ_REQUIRE(!array.dims.empty() && array.dims.size() <= 4, path, ": IDX rank must be 1..4");
  const std::size_t size = element_size(array.type);
  NUQ_REQUIRE(array.bytes.size() == array.element_count() * size, path,
              ": the data does not match the dimensions");
  write_atomically(path, [&](std::ostream& out) {
    const char magic[4] = {0, 0, static_cast<char>(array.type), static_cast<char>(array.dims.size())};
    out.write(magic, 4);
    for (std::uint32_t d : array.dims) {
      const char be[4] = {static_cast<char>(d >> 24), static_cast<char>(d >> 16), static_cast<char>(d >> 8),
                          static_cast<char>(d)};
      out.write(be, 4);
    }
    std::vector<std::uint8_t> bytes = array.bytes;
    if (size > 1)
      for (std::size_t i = 0; i < bytes.size(); i += size) std::reverse(&bytes[i], &bytes[i] + size);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  });
}

}  // namespace nuq::io
