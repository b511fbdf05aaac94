// libFuzzer target: the IDX reader (raw or gzip) on arbitrary bytes. read_idx takes a path, so the
// input is written to an in-memory file (memfd) and read back through /proc/self/fd.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "nuq/error.h"
#include "nuq/io/idx.h"

namespace {

// A small byte limit keeps a header that promises gigabytes from slowing the search; the limit
// itself is part of what is tested (it must be checked before anything is allocated).
constexpr std::size_t kLimit = std::size_t{1} << 24;

int memory_file() {
  static const int fd = memfd_create("nuq-fuzz-idx", 0);
  if (fd < 0) std::abort();
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const int fd = memory_file();
  if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) std::abort();
  try {
    const nuq::io::IdxArray array = nuq::io::read_idx("/proc/self/fd/" + std::to_string(fd), kLimit);
    if (array.bytes.size() > kLimit) std::abort();
  } catch (const nuq::Error&) {
  }
  return 0;
}
