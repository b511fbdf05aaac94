#include "nuq/io/atomic_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ostream>
#include <streambuf>
#include <vector>

#include "nuq/error.h"
#include "nuq/io/file_checks.h"
#include "nuq/io/temporary_files.h"

namespace nuq::io {
namespace {

// An output buffer over a file descriptor opened here: std::ofstream cannot open with
// O_EXCL | O_NOFOLLOW, and those flags are what keep a link planted at the temporary name from being
// followed (the bytes would land in the link's target). A failed write keeps its errno for the
// message; the stream itself only sees badbit.
class DescriptorBuffer : public std::streambuf {
 public:
  explicit DescriptorBuffer(int fd) : fd_(fd), buffer_(std::size_t{1} << 16) {
    setp(buffer_.data(), buffer_.data() + buffer_.size());
  }
  int error() const { return error_; }

 protected:
  int_type overflow(int_type c) override {
    if (!drain()) return traits_type::eof();
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(c);
      pbump(1);
    }
    return traits_type::not_eof(c);
  }
  int sync() override { return drain() ? 0 : -1; }

 private:
  bool drain() {
    const char* p = pbase();
    while (p < pptr()) {
      const ssize_t n = ::write(fd_, p, std::size_t(pptr() - p));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        error_ = n < 0 ? errno : EIO;
        return false;
      }
      p += n;
    }
    setp(buffer_.data(), buffer_.data() + buffer_.size());
    return true;
  }

  int fd_;
  std::vector<char> buffer_;
  int error_ = 0;
};

}  // namespace

PreparedFile::PreparedFile(const std::string& path, const std::function<void(std::ostream&)>& write) : path_(path) {
  require_output_path(path);  // never a directory, device, FIFO or link: rename() would replace the node
  // Same folder as the destination, so that rename() is atomic (no cross-filesystem copy); a new
  // file of this call's own, never one found at that name nor a link's target.
  created_ = create_temporary_for(path);  // (registered: removed if interrupted)
  try {
    DescriptorBuffer buffer(created_.fd);
    std::ostream out(&buffer);
    write(out);
    out.flush();
    NUQ_REQUIRE(out, path, ": writing failed: ", std::strerror(buffer.error() != 0 ? buffer.error() : EIO));
    NUQ_REQUIRE(::fsync(created_.fd) == 0, path, ": writing failed (disk full?): ", std::strerror(errno));
  } catch (...) {
    ::close(created_.fd);
    std::remove(created_.path.c_str());
    throw;
  }
}

PreparedFile::~PreparedFile() {
  if (committed_) return;
  if (created_.fd >= 0) ::close(created_.fd);
  std::remove(created_.path.c_str());
}

void PreparedFile::commit() {
  NUQ_ASSERT(!committed_, path_, ": committed twice");
  move_temporary_into_place(created_.fd, created_.path, path_, /*synced=*/true);  // (throws: the destructor removes it)
  committed_ = true;
}

void write_atomically(const std::string& path, const std::function<void(std::ostream&)>& write) {
  PreparedFile(path, write).commit();
}

}  // namespace nuq::io
