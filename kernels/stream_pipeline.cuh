// Streaming host data through the device in chunks: pinned host buffers (the copy engines read
// and write them directly, pageable memory would be staged by the driver), two streams, and a
// loop that prepares chunk i+1 on the CPU while chunk i copies and computes. Device buffers are
// grown on demand and reused across calls; when the device is short of memory the chunk is halved
// until it fits, and only below kMinChunkBytes does the call fail, with a message saying so.
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>

#include "cuda_check.cuh"

namespace nuq::cuda {

constexpr std::size_t kMinChunkBytes = std::size_t{1} << 20;

class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() { release(); }
  void reserve(std::size_t bytes) {
    if (bytes <= bytes_) return;
    release();
    NUQ_CUDA_CHECK(cudaMallocHost(&data_, bytes));
    bytes_ = bytes;
  }
  template <typename T>
  T* as() { return static_cast<T*>(data_); }

 private:
  void release() {
    if (data_) NUQ_CUDA_CHECK_NOTHROW(cudaFreeHost(data_));
    data_ = nullptr;
    bytes_ = 0;
  }
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
};

// A device allocation that grows; `try_reserve` reports out-of-memory instead of throwing, so the
// caller can shrink its chunk.
class ScratchBuffer {
 public:
  ScratchBuffer() = default;
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  ~ScratchBuffer() { release(); }
  bool try_reserve(std::size_t bytes) {
    if (bytes <= bytes_) return true;
    release();
    const cudaError_t status = cudaMalloc(&data_, bytes);
    if (status == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // not sticky: clear it so that later checks do not see it
      data_ = nullptr;
      return false;
    }
    NUQ_CUDA_CHECK(status);
    bytes_ = bytes;
    return true;
  }
  template <typename T>
  T* as() { return static_cast<T*>(data_); }

 private:
  void release() {
    if (data_) NUQ_CUDA_CHECK_NOTHROW(cudaFree(data_));
    data_ = nullptr;
    bytes_ = 0;
  }
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
};

class Stream {
 public:
  Stream() { NUQ_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() {
    NUQ_CUDA_CHECK_NOTHROW(cudaStreamSynchronize(stream_));
    NUQ_CUDA_CHECK_NOTHROW(cudaStreamDestroy(stream_));
  }
  cudaStream_t get() const { return stream_; }
  void synchronize() const { NUQ_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

 private:
  cudaStream_t stream_ = nullptr;
};

// Everything one chunk in flight needs: pinned staging in and out, device memory in and out, and
// scratch for block partials and CUB's temporary storage. The stream is declared last so that it
// is destroyed first: its destructor drains it before the memory its copies and kernels use is freed.
struct Slot {
  PinnedBuffer host_in, host_out;
  ScratchBuffer device_in, device_out, scratch;
  Stream stream;
};

// Runs chunks 0..count-1 over the two slots: for chunk i, `stage(i, slot)` fills the slot's pinned
// input on the CPU, `enqueue(i, slot)` issues its copies and kernels on the slot's stream, and
// `finish(i, slot)` reads the pinned output once that stream has drained. Chunk i+1 is staged while
// chunk i runs; a slot is reused only after its previous chunk finished.
inline void run_pipelined(std::array<Slot, 2>& slots, std::size_t count,
                          const std::function<void(std::size_t, Slot&)>& stage,
                          const std::function<void(std::size_t, Slot&)>& enqueue,
                          const std::function<void(std::size_t, Slot&)>& finish) {
  // A fault in a kernel shows at the next synchronisation, whose file:line says nothing of the
  // chunks: the error says which one was awaited (CUDA's faults are sticky, so the faulting kernel
  // may be of that chunk or of one enqueued on the other stream before it).
  const auto drain = [count](std::size_t chunk, Slot& slot) {
    try {
      slot.stream.synchronize();
    } catch (const Error& e) {
      throw Error(std::string(e.what()) + " (found while waiting for chunk " + std::to_string(chunk + 1) + " of " +
                  std::to_string(count) + ")");
    }
  };
  try {
    for (std::size_t i = 0; i < count; ++i) {
      Slot& slot = slots[i % 2];
      if (i >= 2) {
        drain(i - 2, slot);
        finish(i - 2, slot);
      }
      stage(i, slot);
      enqueue(i, slot);
    }
    for (std::size_t i = count >= 2 ? count - 2 : 0; i < count; ++i) {
      drain(i, slots[i % 2]);
      finish(i, slots[i % 2]);
    }
  } catch (...) {
    // The other slot's chunk may still be copying into its pinned buffer or reading a table the
    // caller frees as the error unwinds, and the next call would restage into its buffers: both
    // streams drain before the error goes on.
    for (Slot& slot : slots) NUQ_CUDA_CHECK_NOTHROW(cudaStreamSynchronize(slot.stream.get()));
    throw;
  }
}

}  // namespace nuq::cuda
