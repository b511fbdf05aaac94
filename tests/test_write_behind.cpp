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

}  // namespace
}  // namespace nuq
