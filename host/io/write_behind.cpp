#include "write_behind.h"

#include <cstring>
#include <exception>

#include "nuq/error.h"

namespace nuq::io {

WriteBehind::WriteBehind(SafetensorsWriter& writer) : writer_(writer), thread_([this] { run(); }) {}

WriteBehind::~WriteBehind() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    closing_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void WriteBehind::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    changed_.wait(lock, [this] { return closing_ || !queue_.empty(); });
    if (queue_.empty()) return;  // closing, and nothing left to write
    std::vector<std::uint8_t> bytes = std::move(queue_.front());
    queue_.pop_front();
    writing_ = true;
    lock.unlock();
    std::string failure;
    if (error_.empty()) {  // after an error the rest is dropped: the file is never finished
      try {
        writer_.append(bytes.data(), bytes.size());
      } catch (const std::exception& e) {
        failure = e.what();
      }
    }
    lock.lock();
    writing_ = false;
    queued_bytes_ -= bytes.size();
    if (spares_.size() < kSpares) {  // its memory serves a later append: no allocation, no page faults
      bytes.clear();
      spares_.push_back(std::move(bytes));
    }
    if (!failure.empty() && error_.empty()) error_ = failure;
    changed_.notify_all();
  }
}

void WriteBehind::append(const void* bytes, std::size_t count) {
  std::vector<std::uint8_t> copy;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!spares_.empty()) {
      copy = std::move(spares_.back());
      spares_.pop_back();
    }
  }
  const auto* first = static_cast<const std::uint8_t*>(bytes);
  copy.assign(first, first + count);  // no zero fill before the copy
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return !error_.empty() || queued_bytes_ < kQueuedBytes; });
  if (!error_.empty()) throw Error(error_);
  queued_bytes_ += count;
  queue_.push_back(std::move(copy));
  lock.unlock();
  changed_.notify_all();
}

void WriteBehind::wait_until_written() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return queue_.empty() && !writing_; });
  if (!error_.empty()) throw Error(error_);
}

void WriteBehind::finish() {
  wait_until_written();
  writer_.finish();
}

}  // namespace nuq::io
