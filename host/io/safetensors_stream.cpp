#include "nuq/io/safetensors_stream.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <algorithm>

#include "nuq/error.h"
#include "nuq/io/file_checks.h"

namespace nuq::io {
namespace {

// pread until `bytes` came (a read may return fewer).
void read_fully(int fd, void* out, std::size_t bytes, std::uint64_t at, const std::string& path) {
  auto* p = static_cast<char*>(out);
  while (bytes > 0) {
    const ssize_t n = ::pread(fd, p, bytes, static_cast<off_t>(at));
    if (n < 0 && errno == EINTR) continue;
    NUQ_REQUIRE(n > 0, path, ": read failed at byte ", at, ": ", n == 0 ? "unexpected end of file" : std::strerror(errno));
    p += n;
    bytes -= std::size_t(n);
    at += std::uint64_t(n);
  }
}

void write_fully(int fd, const void* data, std::size_t bytes, const std::string& path) {
  const auto* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    NUQ_REQUIRE(n > 0, path, ": writing failed: ", std::strerror(errno));
    p += n;
    bytes -= std::size_t(n);
  }
}

void pwrite_fully(int fd, const void* data, std::size_t bytes, std::uint64_t offset, const std::string& path) {
  const auto* p = static_cast<const char*>(data);
  for (std::size_t done = 0; done < bytes;) {
    const ssize_t n = ::pwrite(fd, p + done, bytes - done, off_t(offset + done));
    if (n < 0 && errno == EINTR) continue;
    NUQ_REQUIRE(n > 0, path, ": writing failed: ", std::strerror(errno));
    done += std::size_t(n);
  }
}

}  // namespace

SafetensorsReader::SafetensorsReader(const std::string& path) : path_(path) {
  require_input_file(path);
  // Without blocking (a FIFO put in the file's place after the check above would block open()),
  // and what was opened checked again: a regular file, whatever the path named a moment before.
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  NUQ_REQUIRE(fd_ >= 0, path, ": cannot open: ", std::strerror(errno));
  try {
    struct stat info {};
    NUQ_REQUIRE(::fstat(fd_, &info) == 0, path, ": cannot stat: ", std::strerror(errno));
    NUQ_REQUIRE(S_ISREG(info.st_mode), path, ": not a regular file");
    file_size_ = std::uint64_t(info.st_size);
    if (file_size_ == 0) {  // empty, or a file whose size stat does not give, which then reads bytes
      char byte = 0;
      NUQ_REQUIRE(::pread(fd_, &byte, 1, 0) <= 0, path, ": cannot tell its size (not a file that can be read whole, as "
                  "/proc's are not)");
    }
    std::uint8_t first8[8] = {};
    read_fully(fd_, first8, std::size_t(std::min<std::uint64_t>(file_size_, 8)), 0, path);
    const std::uint64_t header_size = header_length(first8, file_size_, path);
    std::string text(header_size, '\0');
    read_fully(fd_, text.data(), header_size, 8, path);
    data_begin_ = 8 + header_size;
    layout_ = parse_layout(text, file_size_ - data_begin_, path);
    // The kernel reads ahead further when it knows the tensors are read front to back.
    ::posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
  } catch (...) {
    ::close(fd_);
    throw;
  }
}

SafetensorsReader::~SafetensorsReader() {
  if (fd_ >= 0) ::close(fd_);
}

void SafetensorsReader::read(const TensorEntry& entry, std::uint64_t offset, std::size_t bytes, void* out) const {
  NUQ_ASSERT(offset + bytes <= entry.end - entry.begin, "read past a tensor's end");
  read_data(entry.begin + offset, bytes, out);
}

void SafetensorsReader::read_data(std::uint64_t offset, std::size_t bytes, void* out) const {
  NUQ_ASSERT(offset <= data_size() && bytes <= data_size() - offset, "read past the data's end");
  read_fully(fd_, out, bytes, data_begin_ + offset, path_);
}

void SafetensorsReader::prefetch(std::uint64_t offset, std::size_t bytes) const {
  const std::uint64_t size = file_size_ - data_begin_, end = std::min<std::uint64_t>(size, offset + bytes);
  // What an earlier call asked for is not asked again: a window sliding along a file front to back
  // asks once for each byte.
  const std::uint64_t from = offset <= prefetched_to_ && prefetched_to_ <= end ? prefetched_to_ : offset;
  if (from >= end) return;
  prefetched_to_ = end;
  // Asking for pages already in the page cache costs a walk over each of them (a fifth of the CPU
  // time of a warm run): a range whose first and last bytes are there is taken to be there.
  if (cached(from) && cached(end - 1)) return;
  // Advice only: a failure costs speed, never correctness.
  ::posix_fadvise(fd_, off_t(data_begin_ + from), off_t(end - from), POSIX_FADV_WILLNEED);
}

bool SafetensorsReader::cached(std::uint64_t offset) const {
#if defined(RWF_NOWAIT)
  char byte = 0;
  struct iovec one = {&byte, 1};
  // Fails with EAGAIN instead of waiting for the disk when the byte is not in the page cache.
  return ::preadv2(fd_, &one, 1, off_t(data_begin_ + offset), RWF_NOWAIT) == 1;
#else
  (void)offset;
  return false;
#endif
}

SafetensorsWriter::SafetensorsWriter(const std::string& path, const std::map<std::string, std::string>& metadata,
                                     std::vector<std::pair<std::string, TensorEntry>> tensors)
    : path_(path), order_(std::move(tensors)) {
  require_output_path(path);
  const std::string text = plan_header(metadata, order_, path);
  data_bytes_ = order_.empty() ? 0 : order_.back().second.end;
  header_bytes_ = 8 + text.size();
  CreatedTemporary created = create_temporary_for(path);  // a new file of this call's own
  temporary_ = std::move(created.path);
  fd_ = created.fd;
  removed_if_interrupted_ = std::move(created.removed_if_interrupted);
  std::uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<std::uint8_t>(std::uint64_t(text.size()) >> (8 * i));
  try {
    write_fully(fd_, length, 8, path_);
    write_fully(fd_, text.data(), text.size(), path_);
  } catch (...) {
    ::close(fd_);
    std::remove(temporary_.c_str());
    throw;
  }
}

SafetensorsWriter::~SafetensorsWriter() {
  if (finished_) return;
  if (fd_ >= 0) ::close(fd_);
  std::remove(temporary_.c_str());
}

void SafetensorsWriter::append(const void* bytes, std::size_t count) {
  NUQ_ASSERT(!finished_ && written_ + count <= data_bytes_, "more tensor bytes than the header promised");
  write_fully(fd_, bytes, count, path_);
  written_ += count;
  synced_ = false;
#if defined(__linux__)
  // Start writing back each 16 MiB to the disk now, without waiting for it: finish()'s fsync then
  // waits for the last few, not for the whole file at once after all the work.
  constexpr std::uint64_t kWriteBack = std::uint64_t{16} << 20;
  const std::uint64_t end = header_bytes_ + written_;
  if (end - written_back_ >= kWriteBack) {
    ::sync_file_range(fd_, off_t(written_back_), off_t(end - written_back_), SYNC_FILE_RANGE_WRITE);  // advice: errors show at fsync
    written_back_ = end;
  }
#endif
}

void SafetensorsWriter::skip(std::uint64_t count) {
  NUQ_ASSERT(!finished_ && written_ + count <= data_bytes_, "more tensor bytes than the header promised");
  if (count == 0) return;
  NUQ_REQUIRE(::lseek(fd_, off_t(count), SEEK_CUR) >= 0, path_, ": writing failed: ", std::strerror(errno));
  if (!room_.empty() && std::prev(room_.end())->second == written_) std::prev(room_.end())->second += count;
  else room_[written_] = written_ + count;
  written_ += count;
  skipped_ += count;
  synced_ = false;
}

void SafetensorsWriter::write_at(std::uint64_t offset, const void* bytes, std::size_t count) {
  NUQ_ASSERT(!finished_, "bytes written in place after the file's finish");
  if (count == 0) return;
  const std::uint64_t end = offset + count;
  const auto room = room_.upper_bound(offset);  // after the room that begins at or before `offset`
  NUQ_ASSERT(room != room_.begin() && end <= std::prev(room)->second, "bytes [", offset, ", ", end,
             ") written in place outside the room left for them");
  auto after = written_at_.lower_bound(offset);  // the filled range that begins at or after `offset`
  NUQ_ASSERT(after == written_at_.end() || end <= after->first, "bytes [", offset, ", ", end, ") written in place twice");
  NUQ_ASSERT(after == written_at_.begin() || std::prev(after)->second <= offset, "bytes [", offset, ", ", end,
             ") written in place twice");
  pwrite_fully(fd_, bytes, count, header_bytes_ + offset, path_);
  synced_ = false;
  // Recorded as filled, joined with the ranges just after and just before it so that the map stays
  // a few entries long.
  std::uint64_t stop = end;
  if (after != written_at_.end() && after->first == end) {
    stop = after->second;
    after = written_at_.erase(after);
  }
  if (after != written_at_.begin() && std::prev(after)->second == offset) std::prev(after)->second = stop;
  else written_at_.emplace_hint(after, offset, stop);
  filled_ += count;
}

void SafetensorsWriter::rewrite_metadata(const std::map<std::string, std::string>& metadata) {
  NUQ_ASSERT(!finished_, "a header rewritten after the file's finish");
  reopen();
  std::vector<std::pair<std::string, TensorEntry>> tensors = order_;
  std::string text = plan_header(metadata, tensors, path_);
  for (std::size_t i = 0; i < tensors.size(); ++i)
    NUQ_ASSERT(tensors[i].first == order_[i].first && tensors[i].second.begin == order_[i].second.begin,
               "a header rewritten with other tensors");
  NUQ_ASSERT(text.size() <= header_bytes_ - 8, path_, ": the header rewritten takes ", text.size(), " bytes, ",
             header_bytes_ - 8, " were left for it");
  text.append(header_bytes_ - 8 - text.size(), ' ');
  pwrite_fully(fd_, text.data(), text.size(), 8, path_);
  synced_ = false;
}

void SafetensorsWriter::set_aside() {
  NUQ_ASSERT(written_ == data_bytes_ && filled_ == skipped_, "a file set aside before all its data came");
  room_.clear();
  written_at_.clear();
  if (fd_ < 0) return;
  struct stat st;
  NUQ_REQUIRE(::fstat(fd_, &st) == 0, path_, ": ", std::strerror(errno));
  device_ = std::uint64_t(st.st_dev);
  inode_ = std::uint64_t(st.st_ino);
  size_ = std::uint64_t(st.st_size);
  modified_seconds_ = std::int64_t(st.st_mtim.tv_sec);
  modified_nanoseconds_ = std::int64_t(st.st_mtim.tv_nsec);
  ::close(fd_);
  fd_ = -1;
}

bool SafetensorsWriter::as_set_aside(const struct stat& st) const {
  return std::uint64_t(st.st_dev) == device_ && std::uint64_t(st.st_ino) == inode_ &&
         std::uint64_t(st.st_size) == size_ && std::int64_t(st.st_mtim.tv_sec) == modified_seconds_ &&
         std::int64_t(st.st_mtim.tv_nsec) == modified_nanoseconds_;
}

void SafetensorsWriter::reopen() {
  if (fd_ >= 0) return;
  const int fd = ::open(temporary_.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
  NUQ_REQUIRE(fd >= 0, path_, ": opening its temporary file ", temporary_, " again: ", std::strerror(errno));
  struct stat st;
  const bool same = ::fstat(fd, &st) == 0 && as_set_aside(st);
  if (!same) ::close(fd);
  NUQ_REQUIRE(same, path_, ": its temporary file ", temporary_, " was replaced while nuq was writing it");
  fd_ = fd;
}

void SafetensorsWriter::check_set_aside() const {
  if (fd_ >= 0) return;
  struct stat st;
  NUQ_REQUIRE(::lstat(temporary_.c_str(), &st) == 0, path_, ": its temporary file ", temporary_, ": ",
              std::strerror(errno));
  NUQ_REQUIRE(as_set_aside(st), path_, ": its temporary file ", temporary_, " was replaced while nuq was writing it");
}

void SafetensorsWriter::sync_and_set_aside() {
  if (synced_ && fd_ < 0) return;  // (set aside synced, and not written since)
  reopen();
  NUQ_ASSERT(written_ == data_bytes_, "the header promised ", data_bytes_, " data bytes, ", written_, " came");
  NUQ_REQUIRE(::fsync(fd_) == 0, path_, ": writing failed (disk full?): ", std::strerror(errno));
  synced_ = true;
  set_aside();
}

void SafetensorsWriter::finish() {
  NUQ_ASSERT(written_ == data_bytes_, "the header promised ", data_bytes_, " data bytes, ", written_, " came");
  NUQ_ASSERT(filled_ == skipped_, skipped_, " bytes were left to be written in place, ", filled_, " came");
  if (synced_ && fd_ < 0) {  // set aside synced (a shard of a run, held): only its rename remains
    check_set_aside();
    rename_temporary_into_place(temporary_, path_);
  } else {
    reopen();
    move_temporary_into_place(fd_, temporary_, path_, synced_);
  }
  finished_ = true;
}

}  // namespace nuq::io
