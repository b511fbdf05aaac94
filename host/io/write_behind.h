// Appends to a SafetensorsWriter on a thread of its own, in order, so that the write system calls
// (and the write-back to the disk they start) run while the caller works on the next piece.
// Private to the streamed checkpoint quantizer (checkpoint_stream.cpp).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "nuq/io/safetensors_stream.h"

namespace nuq::io {

class WriteBehind {
 public:
  explicit WriteBehind(SafetensorsWriter& writer);
  // Waits for the appends still queued; an error not yet rethrown is dropped (the writer, never
  // finished, then removes its temporary file).
  ~WriteBehind();
  WriteBehind(const WriteBehind&) = delete;
  WriteBehind& operator=(const WriteBehind&) = delete;

  // Copies `count` bytes and queues them after the bytes appended before; waits while more than
  // kQueuedBytes wait. Rethrows the error of an earlier append (disk full, ...).
  void append(const void* bytes, std::size_t count);
  // Waits for every queued append, rethrows its error, then finishes the file (fsync, rename).
  void finish();

  static constexpr std::size_t kQueuedBytes = std::size_t{16} << 20;

 private:
  void run();
  void wait_until_written();

  SafetensorsWriter& writer_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::vector<std::uint8_t>> queue_;
  std::vector<std::vector<std::uint8_t>> spares_;  // written buffers kept for reuse
  static constexpr std::size_t kSpares = 4;
  std::size_t queued_bytes_ = 0;
  bool writing_ = false, closing_ = false;
  std::string error_;
  std::thread thread_;  // last: started once everything it uses exists
};

}  // namespace nuq::io
