#include "nuq/io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "nuq/error.h"
#include "nuq/io/file_checks.h"
#include "nuq/io/temporary_files.h"

namespace nuq::io {

void write_atomically(const std::string& path, const std::function<void(std::ostream&)>& write) {
  require_output_path(path);  // never a directory, device, FIFO or link: rename() would replace the node
  // Same folder as the destination, so that rename() is atomic (no cross-filesystem copy).
  const std::string temporary = temporary_path_for(path);
  const TemporaryFile removed_if_interrupted(temporary);
  try {
    {
      std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
      NUQ_REQUIRE(out, path, ": cannot write there (creating ", temporary, "): ", std::strerror(errno));
      write(out);
      out.flush();
      NUQ_REQUIRE(out, path, ": writing failed (disk full?)");
    }
    const int fd = ::open(temporary.c_str(), O_RDONLY);
    if (fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
    NUQ_REQUIRE(std::rename(temporary.c_str(), path.c_str()) == 0, path, ": cannot replace the file: ",
                std::strerror(errno));
  } catch (...) {
    std::remove(temporary.c_str());
    throw;
  }
}

}  // namespace nuq::io
