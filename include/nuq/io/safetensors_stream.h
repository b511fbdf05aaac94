// safetensors files of any size, a piece at a time: a reader that reads a tensor's bytes where it
// is asked (pread; the file is never held whole), and a writer that takes the tensors' bytes in
// the order of the header it wrote first. Memory stays bounded by what the caller holds.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "nuq/io/safetensors.h"
#include "nuq/io/temporary_files.h"

namespace nuq::io {

class SafetensorsReader {
 public:
  // Reads and validates the header only (as read_safetensors does); errors name `path`.
  explicit SafetensorsReader(const std::string& path);
  ~SafetensorsReader();
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;

  const std::string& path() const { return path_; }
  const Layout& layout() const { return layout_; }
  std::uint64_t file_size() const { return file_size_; }
  // The bytes after the header: the tensors' data.
  std::uint64_t data_size() const { return file_size_ - data_begin_; }
  // `bytes` bytes of `entry`, starting `offset` bytes into it, into `out`.
  void read(const TensorEntry& entry, std::uint64_t offset, std::size_t bytes, void* out) const;
  // `bytes` bytes of the data, from `offset` (after the header), whichever tensors they hold.
  void read_data(std::uint64_t offset, std::size_t bytes, void* out) const;
  // Asks the kernel to start reading `bytes` bytes of the data (after the header), from `offset`
  // and clipped to the file's end, into the page cache now, so that a later read() finds them
  // there: disk reads overlap the work on the bytes before them. Not thread-safe (one caller).
  void prefetch(std::uint64_t offset, std::size_t bytes) const;

 private:
  std::string path_;
  int fd_ = -1;
  Layout layout_;
  std::uint64_t data_begin_ = 0, file_size_ = 0;
  mutable std::uint64_t prefetched_to_ = 0;  // the end of the last range prefetch() asked for
  bool cached(std::uint64_t offset) const;   // whether data byte `offset` is in the page cache
};

class SafetensorsWriter {
 public:
  // Writes the header for `tensors` (dtype and shape; reordered and given offsets by plan_header)
  // to a temporary file beside `path`, which must be a new path or a regular file.
  SafetensorsWriter(const std::string& path, const std::map<std::string, std::string>& metadata,
                    std::vector<std::pair<std::string, TensorEntry>> tensors);
  // Removes the temporary file unless finish() ran: nothing half-written is ever left.
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // The tensors in the order their bytes must come.
  const std::vector<std::pair<std::string, TensorEntry>>& order() const { return order_; }
  // The next bytes of the data (tensor after tensor, in order()).
  void append(const void* bytes, std::size_t count);
  // Leaves the next `count` bytes of the data to write_at(): a tensor whose bytes are known only
  // once later ones are (a grouped tensor's scales or a per-row tensor's tables, found as its codes
  // are).
  void skip(std::uint64_t count);
  // Writes `count` bytes at data offset `offset`, into room skip() left and no byte of it twice
  // (checked: anything else is an internal error; finish() checks that every byte of it came).
  // pwrite: the appends' file offset does not move. Called as append() is, from one thread.
  void write_at(std::uint64_t offset, const void* bytes, std::size_t count);
  // Writes the header again with `metadata` in place of the metadata it was written with: a header
  // whose metadata is known only once the data is (the statistics of a checkpoint's every weight),
  // written first with placeholders at least as long. The new header must not be longer (checked:
  // an internal error otherwise); it is padded with spaces to the old one's length, which the
  // format allows, so the data does not move.
  void rewrite_metadata(const std::map<std::string, std::string>& metadata);
  // Checks that every data byte came and closes the file until rewrite_metadata() or finish()
  // opens it again (checked to be the same file): a run that keeps many files waiting for their
  // finish holds no descriptor for them.
  void set_aside();
  // Checks that every byte came, syncs the file (the disk's errors, a full one's among them, show
  // here) and sets it aside: each file of an output of several waits so until all are written, and
  // a run that fails before then leaves the output it was to replace whole.
  void sync_and_set_aside();
  // Throws unless the temporary of a file set aside is still the file nuq wrote (without opening it):
  // checked of every file of an output before the first is renamed.
  void check_set_aside() const;
  // Checks that every byte came, syncs and renames the file into place.
  void finish();
  std::uint64_t file_size() const { return header_bytes_ + written_; }
  // The size the file has once every byte came (its header's promise).
  std::uint64_t finished_size() const { return header_bytes_ + data_bytes_; }
  // The bytes after the header: the tensors' data.
  std::uint64_t data_size() const { return data_bytes_; }

 private:
  std::string path_, temporary_;
  int fd_ = -1;
  std::unique_ptr<TemporaryFile> removed_if_interrupted_;  // registered before the file was made
  std::vector<std::pair<std::string, TensorEntry>> order_;
  std::uint64_t header_bytes_ = 0, data_bytes_ = 0, written_ = 0;
  std::uint64_t written_back_ = 0;  // bytes of the file whose write-back to the disk was started
  std::map<std::uint64_t, std::uint64_t> room_;     // data offsets [begin, end) skip() left, ...
  std::map<std::uint64_t, std::uint64_t> written_at_;  // ... and those write_at() filled (joined when they touch)
  std::uint64_t skipped_ = 0, filled_ = 0;            // their bytes
  // The temporary as set aside (an inode number may be reused by a file put in its place: its
  // size and modification time are compared too).
  std::uint64_t device_ = 0, inode_ = 0, size_ = 0;
  std::int64_t modified_seconds_ = 0, modified_nanoseconds_ = 0;
  void reopen();
  bool as_set_aside(const struct stat& st) const;
  bool finished_ = false;
  bool synced_ = false;  // fsync'd since the last byte written (finish() need not again)
};

}  // namespace nuq::io
