// The IDX reader on valid files, raw and gzip, and on every way a file can be wrong.
#include <gtest/gtest.h>

#include <fstream>

#include <sys/resource.h>

#include <unistd.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>

#include "nuq/error.h"
#include "nuq/io/dataset.h"
#include "nuq/io/idx.h"
#include "temp_dir.h"

namespace nuq::io {
namespace {

using Bytes = std::vector<unsigned char>;

// An IDX header: magic (0, 0, type, rank) and big-endian dimensions.
Bytes header(unsigned char type, std::vector<std::uint32_t> dims, int rank = -1) {
  Bytes b{0, 0, type, static_cast<unsigned char>(rank < 0 ? dims.size() : rank)};
  for (std::uint32_t d : dims)
    for (int shift : {24, 16, 8, 0}) b.push_back(static_cast<unsigned char>(d >> shift));
  return b;
}

Bytes concat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

void write_gzip(const std::string& path, const Bytes& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_TRUE(f);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  gzclose(f);
}

// Expects read_idx to throw nuq::Error whose message names the file and contains `needle`.
void expect_rejected(const std::string& path, const std::string& needle, std::size_t limit = kDefaultIdxByteLimit) {
  try {
    read_idx(path, limit);
    ADD_FAILURE() << path << " was accepted";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(path), std::string::npos) << what;
    EXPECT_NE(what.find(needle), std::string::npos) << "expected '" << needle << "' in: " << what;
  }
}

TEST(Idx, ReadsRawAndGzipBytes) {
  test::TempDir dir;
  const Bytes file = concat(header(0x08, {2, 3}), {1, 2, 3, 4, 5, 6});
  test::write_bytes(dir.file("raw"), file);
  write_gzip(dir.file("packed.gz"), file);
  for (const char* name : {"raw", "packed.gz"}) {
    const IdxArray a = read_idx(dir.file(name));
    EXPECT_EQ(a.type, IdxType::U8);
    EXPECT_EQ(a.dims, (std::vector<std::uint32_t>{2, 3}));
    EXPECT_EQ(a.bytes, (std::vector<std::uint8_t>{1, 2, 3, 4, 5, 6}));
  }
}

TEST(Idx, ConvertsBigEndianElementsAndRoundTrips) {
  test::TempDir dir;
  test::write_bytes(dir.file("i32"), concat(header(0x0C, {2}), {0, 0, 1, 2, 0xFF, 0xFF, 0xFF, 0xFE}));
  const IdxArray a = read_idx(dir.file("i32"));
  std::int32_t values[2];
  std::memcpy(values, a.bytes.data(), 8);
  EXPECT_EQ(values[0], 258);
  EXPECT_EQ(values[1], -2);
  write_idx(dir.file("copy"), a);
  EXPECT_EQ(read_idx(dir.file("copy")).bytes, a.bytes);
}

TEST(Idx, RejectsCorruptFilesWithSpecificMessages) {
  test::TempDir dir;
  struct Case {
    const char* name;
    Bytes bytes;
    const char* message;
  };
  const Bytes six{1, 2, 3, 4, 5, 6};
  const std::vector<Case> cases = {
      {"empty", {}, "truncated in the magic number"},
      {"short-magic", {0, 0}, "truncated in the magic number"},
      {"bad-magic", concat({1, 0, 8, 1, 0, 0, 0, 6}, six), "not an IDX file"},
      {"bad-type", concat(header(0x07, {6}), six), "unknown IDX element type"},
      {"rank-0", header(0x08, {}, 0), "rank must be 1..4"},
      {"rank-5", header(0x08, {1, 1, 1, 1, 1}), "rank must be 1..4"},
      {"short-dims", {0, 0, 8, 2, 0, 0, 0, 2, 0, 0}, "truncated in the dimensions"},
      {"zero-dim", header(0x08, {0}), "dimension 0 is zero"},
      {"truncated-data", concat(header(0x08, {2, 4}), six), "truncated in the data"},
      {"trailing", concat(header(0x08, {5}), six), "trailing bytes"},
      {"huge-dims", concat(header(0x08, {65536, 65536, 65536}), six), "more than"},
      {"f64-odd", concat(header(0x0E, {1}), {1, 2, 3}), "truncated in the data"},
  };
  for (const Case& c : cases) {
    test::write_bytes(dir.file(c.name), c.bytes);
    expect_rejected(dir.file(c.name), c.message);
  }
  expect_rejected(dir.file("missing"), "cannot open");
}

TEST(Idx, RejectsCorruptAndExplodingGzip) {
  test::TempDir dir;
  // A gzip stream whose deflate data is damaged.
  write_gzip(dir.file("damaged.gz"), concat(header(0x08, {4096}), Bytes(4096, 7)));
  {
    std::fstream f(dir.file("damaged.gz"), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(14);
    const char junk[8] = {'\x55', '\x55', '\x55', '\x55', '\x55', '\x55', '\x55', '\x55'};
    f.write(junk, 8);
  }
  expect_rejected(dir.file("damaged.gz"), "gzip");
  // A small header followed by 64 MB of zeros that compress to almost nothing: only the promised
  // bytes and one more are ever inflated.
  const std::string bomb = dir.file("bomb.gz");
  gzFile f = gzopen(bomb.c_str(), "wb9");
  const Bytes head = concat(header(0x08, {4}), {0, 0, 0, 0});
  gzwrite(f, head.data(), static_cast<unsigned>(head.size()));
  const Bytes zeros(1 << 20, 0);
  for (int i = 0; i < 64; ++i) gzwrite(f, zeros.data(), static_cast<unsigned>(zeros.size()));
  gzclose(f);
  EXPECT_LT(std::filesystem::file_size(bomb), 1u << 20);
  expect_rejected(bomb, "trailing bytes");
  // A limit smaller than what the header asks for is refused before any allocation.
  test::write_bytes(dir.file("big"), concat(header(0x08, {1000}), Bytes(1000, 1)));
  expect_rejected(dir.file("big"), "more than", 999);
  // Within the default limit, a ten-byte file promising a gigabyte fails at its end without the
  // gigabyte ever being allocated (data is read in chunks as it arrives).
  test::write_bytes(dir.file("promise"), concat(header(0x08, {1024, 1024, 1024}), Bytes(10, 1)));
  expect_rejected(dir.file("promise"), "truncated in the data");
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  EXPECT_LT(usage.ru_maxrss, 512L * 1024) << "peak resident set in KiB";
}

void write_split(const test::TempDir& dir, std::uint32_t images, std::uint32_t labels, unsigned char label) {
  test::write_bytes(dir.file("train-images-idx3-ubyte"),
                    concat(header(0x08, {images, 2, 2}), Bytes(4 * images, 255)));
  test::write_bytes(dir.file("train-labels-idx1-ubyte"), concat(header(0x08, {labels}), Bytes(labels, label)));
}

TEST(Dataset, LoadsAndScalesPixels) {
  test::TempDir dir;
  write_split(dir, 3, 3, 7);
  const Dataset d = load_split(dir.path().string(), "train");
  EXPECT_EQ(d.count, 3u);
  EXPECT_EQ(d.features(), 4u);
  EXPECT_EQ(d.images.front(), 1.0f);
  EXPECT_EQ(d.labels, (std::vector<std::uint8_t>{7, 7, 7}));
}

TEST(Dataset, RejectsMismatchedOrImpossibleLabels) {
  test::TempDir dir;
  write_split(dir, 3, 2, 1);
  EXPECT_THROW(load_split(dir.path().string(), "train"), Error);
  write_split(dir, 3, 3, 10);
  EXPECT_THROW(load_split(dir.path().string(), "train"), Error);
  EXPECT_THROW(load_split(dir.path().string(), "valid"), Error);
}

// What the headers say (the element type, the rank, a label per image, nuq's networks' 28 x 28) is
// checked before any data is read: files whose headers promise a GB (a 1 MB gzip of one 32768 x
// 32767 image took 5 GB to refuse) are refused without their data, here absent altogether (read
// first, they were "truncated").
TEST(Dataset, HeadersAreCheckedBeforeTheData) {
  test::TempDir dir;
  const auto refused = [&](const std::string& needle, bool network) {
    try {
      if (network) load_network_split(dir.path().string(), "train");
      else load_split(dir.path().string(), "train");
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  test::write_bytes(dir.file("train-images-idx3-ubyte"), header(0x08, {1, 32768, 32767}));
  test::write_bytes(dir.file("train-labels-idx1-ubyte"), concat(header(0x08, {1}), Bytes(1, 3)));
  refused("the images are 32768x32767; nuq's networks take 28x28", true);
  test::write_bytes(dir.file("train-images-idx3-ubyte"), header(0x08, {60000, 28, 28}));
  refused("1 labels for 60000 images", true);
  test::write_bytes(dir.file("train-labels-idx1-ubyte"), header(0x0D, {60000}));
  refused("train-labels-idx1-ubyte: expected unsigned bytes of rank 1", false);
}

TEST(Dataset, MissingFilesSayHowToFetchThem) {
  test::TempDir dir;
  try {
    load_split(dir.path().string(), "t10k");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no t10k-images-idx3-ubyte"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("scripts/fetch-data"), std::string::npos);
  }
  // A folder that is not there (a mistyped --data) is said to be missing, not its files.
  for (const std::string& missing : {dir.file("nowhere"), dir.file("nowhere/mnist")}) {
    try {
      load_split(missing, "train");
      FAIL();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(missing + ": no such folder; run scripts/fetch-data"), std::string::npos)
          << e.what();
    }
  }
  std::ofstream(dir.file("a-file")) << "not a folder";
  EXPECT_THROW(
      try { load_split(dir.file("a-file"), "train"); } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("a-file: not a folder"), std::string::npos) << e.what();
        throw;
      },
      Error);
}

}  // namespace
}  // namespace nuq::io
