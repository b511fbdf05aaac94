// Appends to a SafetensorsWriter on a thread of its own, in order, so that the write system calls
// (and the write-back to the disk they start) run while the caller works on the next piece, and
// the file's finish (fsync, rename) while it works on the next file.
// Private to the streamed checkpoint quantizer (checkpoint_stream.cpp).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "nuq/error.h"
#include "nuq/io/safetensors_stream.h"

namespace nuq::io {

class WriteBehind {
 public:
  explicit WriteBehind(std::unique_ptr<SafetensorsWriter> writer);
  // Waits for what is still queued (a queued finish included); an error not yet rethrown is
  // dropped (a writer never finished removes its temporary file).
  ~WriteBehind();
  WriteBehind(const WriteBehind&) = delete;
  WriteBehind& operator=(const WriteBehind&) = delete;

  const SafetensorsWriter& writer() const {
    NUQ_ASSERT(writer_, "the writer of a released WriteBehind");
    return *writer_;
  }
  // Copies `count` bytes and queues them after the bytes appended before; waits while more than
  // kQueuedBytes wait. Rethrows the error of an earlier append (disk full, ...). Appends of fewer
  // than kStagedBytes are gathered and queued together (every other call queues them first).
  void append(const void* bytes, std::size_t count);
  // A buffer of `count` bytes (contents undefined) to fill and hand back to append(): its bytes are
  // then written without being copied (reused memory: no allocation, no page faults).
  std::vector<std::uint8_t> buffer(std::size_t count);
  void append(std::vector<std::uint8_t> bytes);
  // Queues room for `count` bytes after those appended before, for write_at() to fill
  // (SafetensorsWriter::skip).
  void skip(std::uint64_t count);
  // Queues `bytes` (a buffer() of its own) to be written at data offset `offset`, into that room.
  // On this thread too, so that the threads that work on the pieces never wait for the file.
  void write_at(std::uint64_t offset, std::vector<std::uint8_t> bytes);
  // Queues the file's finish (every byte came, fsync, rename) after the last append and returns.
  void finish_later();
  // Queues SafetensorsWriter::sync_and_set_aside after the last append instead: a file of several
  // whose rename waits for the others (release() hands it back).
  void sync_later();
  // Waits until everything queued is done; rethrows the first error.
  void wait();
  // Waits as wait() does, then hands back the writer (not finished) and stops the thread: a file
  // whose data is all written but whose finish waits for something later (rewrite_metadata),
  // without a thread or spare buffers kept for it meanwhile. Nothing may be queued afterwards.
  std::unique_ptr<SafetensorsWriter> release();

  static constexpr std::size_t kQueuedBytes = std::size_t{4} << 20;  // a bound on the memory held
  static constexpr std::size_t kStagedBytes = std::size_t{256} << 10;

 private:
  struct Item {
    std::vector<std::uint8_t> bytes;
    std::uint64_t skip = 0;  // room left instead of bytes
    std::optional<std::uint64_t> at;  // bytes written in place, at this data offset
    bool finish = false;
    bool sync = false;  // sync_and_set_aside
  };
  void run();
  void queue(Item item);
  void queue_end(Item item);  // the file's last item (a finish or a sync)
  void queue_staged();
  void keep_spare(std::vector<std::uint8_t> bytes);  // (called with mutex_ held)

  std::unique_ptr<SafetensorsWriter> writer_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Item> queue_;
  std::vector<std::vector<std::uint8_t>> spares_;  // written buffers kept for reuse (their size kept)
  std::size_t spare_bytes_ = 0;
  // A window of the streamed quantizer asks for up to 8 buffers at once (piece_reader.h); the
  // bytes kept bound the memory whatever the pieces' sizes.
  static constexpr std::size_t kSpares = 8, kSpareBytes = std::size_t{8} << 20;
  // Small appends, gathered on the caller's thread: a checkpoint of 100,000 small tensors made a
  // write system call and a wake-up of the thread for each of its codes and codebooks.
  std::vector<std::uint8_t> staged_;
  std::size_t queued_bytes_ = 0;
  bool working_ = false, closing_ = false;
  std::string error_;
  std::thread thread_;  // last: started once everything it uses exists
};

}  // namespace nuq::io
