#include "write_behind.h"

#include <cstring>
#include <exception>

#include "nuq/error.h"

namespace nuq::io {

WriteBehind::WriteBehind(std::unique_ptr<SafetensorsWriter> writer)
    : writer_(std::move(writer)), thread_([this] { run(); }) {}

WriteBehind::~WriteBehind() {
  if (!thread_.joinable()) return;  // released
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
    if (queue_.empty()) return;  // closing, and nothing left to do
    Item item = std::move(queue_.front());
    queue_.pop_front();
    working_ = true;
    const bool failed_before = !error_.empty();
    lock.unlock();
    std::string failure;
    if (!failed_before) {  // after an error the rest is dropped: the file is never finished
      try {
        if (item.finish) writer_->finish();
        else if (item.sync) writer_->sync_and_set_aside();
        else if (item.skip) writer_->skip(item.skip);
        else if (item.at) writer_->write_at(*item.at, item.bytes.data(), item.bytes.size());
        else writer_->append(item.bytes.data(), item.bytes.size());
      } catch (const std::exception& e) {
        failure = e.what();
      }
    }
    lock.lock();
    working_ = false;
    queued_bytes_ -= item.bytes.size();
    if (!failure.empty() && error_.empty()) error_ = failure;
    if (item.finish || item.sync) {  // no more appends: the memory goes back
      spares_.clear();
      spare_bytes_ = 0;
    } else {
      keep_spare(std::move(item.bytes));  // for a later append
    }
    changed_.notify_all();
  }
}

void WriteBehind::keep_spare(std::vector<std::uint8_t> bytes) {
  if (bytes.capacity() && spares_.size() < kSpares && spare_bytes_ + bytes.capacity() <= kSpareBytes) {
    spare_bytes_ += bytes.capacity();
    spares_.push_back(std::move(bytes));
  }
}

std::vector<std::uint8_t> WriteBehind::buffer(std::size_t count) {
  std::vector<std::uint8_t> bytes;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!spares_.empty()) {
      bytes = std::move(spares_.back());
      spares_.pop_back();
      spare_bytes_ -= bytes.capacity();
    }
  }
  bytes.resize(count);  // zero-fills only what a reused buffer never held
  return bytes;
}

void WriteBehind::append(const void* bytes, std::size_t count) {
  if (count < kStagedBytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_.empty()) throw Error(error_);  // as a queued append would
    }
    const auto* first = static_cast<const std::uint8_t*>(bytes);
    staged_.insert(staged_.end(), first, first + count);
    if (staged_.size() >= kStagedBytes) queue_staged();
    return;
  }
  std::vector<std::uint8_t> copy = buffer(count);
  std::memcpy(copy.data(), bytes, count);
  append(std::move(copy));
}

void WriteBehind::append(std::vector<std::uint8_t> bytes) {
  if (bytes.size() < kStagedBytes) {
    append(bytes.data(), bytes.size());
    std::lock_guard<std::mutex> lock(mutex_);
    keep_spare(std::move(bytes));
    return;
  }
  queue_staged();
  Item item;
  item.bytes = std::move(bytes);
  queue(std::move(item));
}

void WriteBehind::queue_staged() {
  if (staged_.empty()) return;
  Item item;
  item.bytes = std::move(staged_);
  staged_ = buffer(0);  // a spare's memory, or none
  queue(std::move(item));
}

void WriteBehind::skip(std::uint64_t count) {
  queue_staged();
  Item item;
  item.skip = count;
  queue(std::move(item));
}

void WriteBehind::write_at(std::uint64_t offset, std::vector<std::uint8_t> bytes) {
  queue_staged();
  Item item;
  item.bytes = std::move(bytes);
  item.at = offset;
  queue(std::move(item));
}

void WriteBehind::queue(Item item) {
  NUQ_ASSERT(writer_, "bytes queued to a released WriteBehind");
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return !error_.empty() || queued_bytes_ < kQueuedBytes; });
  if (!error_.empty()) throw Error(error_);
  queued_bytes_ += item.bytes.size();
  queue_.push_back(std::move(item));
  lock.unlock();
  changed_.notify_all();
}

void WriteBehind::finish_later() {
  Item item;
  item.finish = true;
  queue_end(std::move(item));
}

void WriteBehind::sync_later() {
  Item item;
  item.sync = true;
  queue_end(std::move(item));
}

void WriteBehind::queue_end(Item item) {
  NUQ_ASSERT(writer_, "the end of a released WriteBehind's file");
  queue_staged();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(std::move(item));
  }
  changed_.notify_all();
}

void WriteBehind::wait() {
  queue_staged();
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return queue_.empty() && !working_; });
  if (!error_.empty()) throw Error(error_);
}

std::unique_ptr<SafetensorsWriter> WriteBehind::release() {
  wait();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    closing_ = true;
    spares_.clear();
    spare_bytes_ = 0;
  }
  changed_.notify_all();
  thread_.join();
  return std::move(writer_);
}

}  // namespace nuq::io
