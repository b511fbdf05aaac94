// Writing files so that a reader never sees half of one: the bytes go to a temporary file in the
// same folder, which is flushed, synced and renamed over the destination. A crash at any moment
// leaves either the old file or the complete new one.
#pragma once

#include <functional>
#include <ostream>
#include <string>

#include "nuq/io/temporary_files.h"

namespace nuq::io {

// Refuses a destination that exists and is not a regular file (require_output_path).
// Calls `write` with a stream on the temporary file; throws nuq::Error (naming `path`) when the
// stream fails or the rename does, and removes the temporary file on every failure.
void write_atomically(const std::string& path, const std::function<void(std::ostream&)>& write);

// write_atomically in two steps, for an output that must go into place together with others: the
// constructor writes and syncs the temporary file (every failure of writing shows there), commit()
// renames it over `path`. Destroyed uncommitted, it removes the temporary file.
class PreparedFile {
 public:
  PreparedFile(const std::string& path, const std::function<void(std::ostream&)>& write);
  ~PreparedFile();
  PreparedFile(const PreparedFile&) = delete;
  PreparedFile& operator=(const PreparedFile&) = delete;
  void commit();

 private:
  std::string path_;
  CreatedTemporary created_;
  bool committed_ = false;
};

}  // namespace nuq::io
