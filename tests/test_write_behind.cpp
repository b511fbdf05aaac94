// The streamed quantizer's writes on a thread of their own (host/io/write_behind.h): bytes land in
// order, room left for bytes known later is filled in place, the finish runs behind the caller, and
// an error on the writing thread (room left unfilled included) comes back to the caller as
// nuq::Error with nothing left at the output path.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
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

// Appends below kStagedBytes are gathered before they are queued: mixed with large ones, with
// buffers handed over, and with room left and filled later, every byte still lands in order.
TEST(WriteBehind, SmallAppendsGatheredWithLargeOnesLandInOrder) {
  test::TempDir dir;
  const std::string path = dir.file("out.safetensors");
  constexpr std::size_t kRoom = 64;
  std::vector<std::uint8_t> expected;
  std::vector<std::size_t> sizes;  // small and large, across the staging threshold both ways
  for (std::size_t k = 0; k < 400; ++k)
    sizes.push_back(k % 50 == 7 ? io::WriteBehind::kStagedBytes + k : k % 50 == 8 ? io::WriteBehind::kStagedBytes - 1 : 1 + k * 37 % 3000);
  std::size_t total = kRoom;
  for (std::size_t size : sizes) total += size;
  io::WriteBehind out(writer_of(path, total));
  std::size_t room_at = 0;
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    if (k == 201) {  // room in the middle, filled after every append (small ones staged before it)
      room_at = expected.size();
      expected.resize(expected.size() + kRoom);
      out.skip(kRoom);
    }
    std::vector<std::uint8_t> piece(sizes[k]);
    for (std::size_t i = 0; i < piece.size(); ++i) piece[i] = std::uint8_t(k * 13 + i * 3);
    expected.insert(expected.end(), piece.begin(), piece.end());
    if (k % 3 == 0) {
      out.append(piece.data(), piece.size());
    } else {
      std::vector<std::uint8_t> buffer = out.buffer(piece.size());
      std::memcpy(buffer.data(), piece.data(), piece.size());
      out.append(std::move(buffer));
    }
  }
  std::vector<std::uint8_t> room = out.buffer(kRoom);
  for (std::size_t i = 0; i < kRoom; ++i) expected[room_at + i] = room[i] = std::uint8_t(200 - i);
  out.write_at(room_at, std::move(room));
  out.finish_later();
  out.wait();
  EXPECT_EQ(io::read_safetensors(path).tensors.at("t").data, expected);
}

// As the streamed quantizer writes a grouped tensor: its scales (first in the file) are left as
// room and written in pieces once the codes after them are found, some of them after later appends.
TEST(WriteBehind, RoomLeftIsFilledInPlaceInAnyOrder) {
  test::TempDir dir;
  const std::string path = dir.file("out.safetensors");
  io::WriteBehind out(std::make_unique<io::SafetensorsWriter>(
      path, std::map<std::string, std::string>{},
      std::vector<std::pair<std::string, io::TensorEntry>>{{"a.scales", io::TensorEntry{io::DType::F32, {1000}}},
                                                           {"b.kept", io::TensorEntry{io::DType::F32, {3}}},
                                                           {"c.codes", io::TensorEntry{io::DType::U8, {5000}}}}));
  const auto& order = out.writer().order();
  ASSERT_EQ(order[0].first, "a.scales");
  std::vector<float> scales(1000);
  for (std::size_t i = 0; i < scales.size(); ++i) scales[i] = float(i) * 0.5f + 1.0f;
  const auto bytes_of_scales = [&](std::size_t first, std::size_t count) {
    std::vector<std::uint8_t> bytes(count * sizeof(float));
    std::memcpy(bytes.data(), scales.data() + first, bytes.size());
    return bytes;
  };
  out.skip(order[0].second.end - order[0].second.begin);
  const float kept[3] = {7.0f, 8.0f, 9.0f};
  out.append(kept, sizeof kept);
  std::vector<std::uint8_t> codes(5000);
  for (std::size_t i = 0; i < codes.size(); ++i) codes[i] = std::uint8_t(i * 13);
  out.write_at(order[0].second.begin + 600 * sizeof(float), bytes_of_scales(600, 400));  // the end first
  out.append(codes.data(), 2000);
  out.write_at(order[0].second.begin, bytes_of_scales(0, 600));
  out.append(codes.data() + 2000, 3000);
  out.finish_later();
  out.wait();
  const io::TensorFile file = io::read_safetensors(path);
  EXPECT_EQ(io::to_floats(file.tensors.at("a.scales"), "a"), scales);
  EXPECT_EQ(io::to_floats(file.tensors.at("b.kept"), "b"), std::vector<float>(kept, kept + 3));
  EXPECT_EQ(file.tensors.at("c.codes").data, codes);
  EXPECT_EQ(std::filesystem::file_size(path), out.writer().finished_size());
}

TEST(WriteBehind, RoomLeftUnfilledIsAnErrorAndNothingLands) {
  test::TempDir dir;
  const std::string path = dir.file("out.safetensors");
  {
    io::WriteBehind out(writer_of(path, 64));
    out.skip(16);
    const std::uint8_t bytes[48] = {};
    out.append(bytes, 48);
    out.write_at(0, std::vector<std::uint8_t>(8));  // half the room
    out.finish_later();
    EXPECT_THROW(out.wait(), Error);
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) ADD_FAILURE() << "left behind: " << entry.path();
}

// Bytes written in place outside the room left, or twice, are refused before they land (a wrong
// offset would otherwise overwrite codes and pass a count of the bytes).
TEST(WriteBehind, BytesInPlaceOutsideTheRoomOrTwiceAreRefused) {
  test::TempDir dir;
  const auto refused = [&](std::uint64_t offset, std::size_t count, bool fill_first_half) {
    io::WriteBehind out(writer_of(dir.file("out.safetensors"), 64));
    const std::uint8_t bytes[48] = {};
    out.append(bytes, 16);
    out.skip(16);  // room at [16, 32)
    out.append(bytes, 32);
    if (fill_first_half) out.write_at(16, std::vector<std::uint8_t>(8, 1));
    out.write_at(offset, std::vector<std::uint8_t>(count, 2));
    out.wait();  // rethrows the writer's error
  };
  EXPECT_THROW(refused(8, 8, false), Error);    // before the room, over bytes appended
  EXPECT_THROW(refused(28, 8, false), Error);   // past its end
  EXPECT_THROW(refused(20, 4, true), Error);    // over bytes already written in place
  EXPECT_THROW(refused(12, 8, true), Error);    // over the room's start from before it
  EXPECT_NO_THROW(refused(24, 8, true));        // the rest of the room: fine
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) ADD_FAILURE() << "left behind: " << entry.path();
}

// A file whose header's metadata is known only once its data is written: the data appended on the
// writer's thread, the writer released (no thread kept), the metadata rewritten in the room the
// first header took, then the finish. A longer header does not fit and is refused.
TEST(WriteBehind, AReleasedWriterTakesItsMetadataLater) {
  test::TempDir dir;
  const std::string path = dir.file("out.safetensors");
  const std::map<std::string, std::string> placeholder = {{"mean", "-1.7976931348623157e+308"}};
  io::WriteBehind out(std::make_unique<io::SafetensorsWriter>(
      path, placeholder, std::vector<std::pair<std::string, io::TensorEntry>>{{"t", io::TensorEntry{io::DType::U8, {300}}}}));
  std::vector<std::uint8_t> bytes(300);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = std::uint8_t(i * 11);
  out.append(bytes.data(), bytes.size());
  std::unique_ptr<io::SafetensorsWriter> writer = out.release();
  writer->set_aside();  // closed until the rewrite opens it again
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_ANY_THROW(writer->rewrite_metadata({{"mean", std::string(40, '1')}}));
  writer->rewrite_metadata({{"mean", "0.25"}});
  writer->finish();
  const io::TensorFile file = io::read_safetensors(path);
  EXPECT_EQ(file.metadata.at("mean"), "0.25");
  EXPECT_EQ(file.tensors.at("t").data, bytes);
  EXPECT_EQ(std::filesystem::file_size(path), writer->finished_size());
}

// A temporary file replaced while it was set aside is not written to, nor renamed into place.
TEST(WriteBehind, ATemporaryReplacedWhileSetAsideIsRefused) {
  test::TempDir dir;
  const std::string path = dir.file("out.safetensors");
  auto writer = writer_of(path, 4);
  const std::uint8_t bytes[4] = {1, 2, 3, 4};
  writer->append(bytes, 4);
  writer->set_aside();
  std::string temporary;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) temporary = entry.path().string();
  ASSERT_NE(temporary.find(".tmp."), std::string::npos);
  std::filesystem::remove(temporary);
  std::ofstream(temporary) << "someone else's";
  EXPECT_THROW(writer->finish(), Error);
  EXPECT_FALSE(std::filesystem::exists(path));
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
