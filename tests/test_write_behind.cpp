// The streamed quantizer's writes on a thread of their own (host/io/write_behind.h): bytes land in
// order, the finish runs behind the caller, and an error on the writing thread comes back to the
// caller as nuq::Error with nothing left at the output path.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <vector>

#include "../host/io/write_behind.h"
#include "nuq/error.h"
#include "nuq/io/safetensors.h"
#include "temp_dir.h"

namespace nuq {
namespace {

std::unique_ptr<io::SafetensorsWriter> writer_of(const std::string& path, std::size_t bytes) {
  return std::make_unique<io::SafetensorsWriter>(
      path, std::map<std::string, std::string>{},
      std::vector<std::pair<std::string, io::TensorEntry>>{{"t", io::TensorEntry{io::DType::U8, {std::int64_t(bytes)}}}});
}

TEST(WriteBehind, BytesLandInOrderAndTheFinishRunsBehind) {
  test::TempDir dir;
  const std::string path = dir.file("out.safetensors");
  constexpr std::size_t kPieces = 300, kPiece = 100000;  // more than the queue holds at once
  io::WriteBehind out(writer_of(path, kPieces * kPiece));
  std::vector<std::uint8_t> piece(kPiece);
  for (std::size_t k = 0; k < kPieces; ++k) {
    for (std::size_t i = 0; i < kPiece; ++i) piece[i] = std::uint8_t(k * 7 + i);
    out.append(piece.data(), piece.size());  // the caller's buffer is free again at once
  }
  EXPECT_FALSE(std::filesystem::exists(path));  // renamed into place by the finish only
  out.finish_later();
  out.wait();
  const io::TensorFile file = io::read_safetensors(path);
  const std::vector<std::uint8_t>& bytes = file.tensors.at("t").data;
  ASSERT_EQ(bytes.size(), kPieces * kPiece);
  for (std::size_t k = 0; k < kPieces; k += 37)
    for (std::size_t i = 0; i < kPiece; i += 101) ASSERT_EQ(bytes[k * kPiece + i], std::uint8_t(k * 7 + i)) << k << " " << i;
  EXPECT_EQ(std::filesystem::file_size(path), out.writer().finished_size());
}

TEST(WriteBehind, AnErrorOnTheWritingThreadReachesTheCallerAndNothingLands) {
  test::TempDir dir;
  const std::string path = dir.file("out.safetensors");
  {
    io::WriteBehind out(writer_of(path, 8));
    const std::uint8_t bytes[16] = {};
    out.append(bytes, 16);  // more than the header promised: the writer throws, on the other thread
    EXPECT_THROW(out.wait(), Error);
    EXPECT_THROW(out.append(bytes, 1), Error);  // and every later call says so
    out.finish_later();  // dropped after the error
    EXPECT_THROW(out.wait(), Error);
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  for (const auto& entry : std::filesystem::directory_iterator(dir.path()))
    ADD_FAILURE() << "left behind: " << entry.path();
}

TEST(WriteBehind, ReleasedWritersGetTheirFinalHeaderInPlace) {
  // A header first written with room (values that print longest), rewritten shorter in place and
  // padded with spaces: the file reads back with the final metadata and every byte where it was.
  test::TempDir dir;
  const std::string path = dir.file("out.safetensors");
  const std::vector<std::pair<std::string, io::TensorEntry>> plan = {
      {"codes", io::TensorEntry{io::DType::U8, {3}}}, {"levels", io::TensorEntry{io::DType::F32, {2}}}};
  auto out = std::make_unique<io::WriteBehind>(std::make_unique<io::SafetensorsWriter>(
      path, std::map<std::string, std::string>{{"stats", "-2.2250738585072014e-308"}}, plan));
  const std::string order = out->writer().order()[0].first;  // widest first: levels, then codes
  EXPECT_EQ(order, "levels");
  const float levels[2] = {-1.5f, 1.5f};
  const std::uint8_t codes[3] = {1, 2, 3};
  out->append(levels, sizeof levels);
  out->append(codes, sizeof codes);
  std::unique_ptr<io::SafetensorsWriter> writer = out->release();
  out.reset();  // the thread is gone; the file is not finished
  EXPECT_FALSE(std::filesystem::exists(path));
  writer->replace_metadata({{"stats", "0.5"}});
  EXPECT_THROW(writer->replace_metadata({{"stats", std::string(100, '7')}}), InternalError);  // no room
  writer->finish();
  const io::TensorFile file = io::read_safetensors(path);
  EXPECT_EQ(file.metadata.at("stats"), "0.5");
  EXPECT_EQ(file.tensors.at("codes").data, (std::vector<std::uint8_t>{1, 2, 3}));
  EXPECT_EQ(io::to_floats(file.tensors.at("levels"), "levels"), (std::vector<float>{-1.5f, 1.5f}));
  EXPECT_EQ(std::filesystem::file_size(path), writer->finished_size());
  std::ifstream in(path, std::ios::binary);
  std::uint64_t length = 0;
  in.read(reinterpret_cast<char*>(&length), 8);
  EXPECT_EQ((8 + length) % 8, 0u);
}

}  // namespace
}  // namespace nuq
