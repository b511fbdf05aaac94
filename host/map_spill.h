// The per-row and per-group maps of the streamed checkpoint quantizer between its two passes
// (checkpoint_stream.cpp), private to it.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "nuq/error.h"
#include "nuq/quantize_table.h"

namespace nuq {

// Per-row and per-group maps, kept in an unnamed temporary file rather than in memory: a checkpoint
// of 8 GB at groups of 128 has 32 million of them. Written in pass 1, read back by ranges in pass 2.
class MapSpill {
 public:
  MapSpill() : file_(std::tmpfile()) {
    NUQ_REQUIRE(file_, "cannot create a temporary file for the per-row statistics: ", std::strerror(errno));
  }
  ~MapSpill() { std::fclose(file_); }
  MapSpill(const MapSpill&) = delete;
  MapSpill& operator=(const MapSpill&) = delete;

  std::uint64_t size() const { return size_; }
  void append(const std::vector<Affine>& maps) {
    transfer(::pwrite, const_cast<Affine*>(maps.data()), maps.size(), size_);
    size_ += maps.size();
  }
  std::vector<Affine> read(std::uint64_t first, std::size_t count) const {
    std::vector<Affine> maps(count);
    transfer(::pread, maps.data(), count, first);
    return maps;
  }

 private:
  template <typename Io>
  void transfer(Io io, Affine* maps, std::size_t count, std::uint64_t first) const {
    static_assert(sizeof(Affine) == 2 * sizeof(double), "maps are stored as they are in memory");
    auto* bytes = reinterpret_cast<char*>(maps);
    std::size_t left = count * sizeof(Affine);
    off_t at = off_t(first * sizeof(Affine));
    while (left > 0) {
      const ssize_t n = io(::fileno(file_), bytes, left, at);
      if (n < 0 && errno == EINTR) continue;
      NUQ_REQUIRE(n > 0, "the temporary file of per-row statistics: ", n == 0 ? "short read" : std::strerror(errno));
      bytes += n;
      left -= std::size_t(n);
      at += n;
    }
  }
  std::FILE* file_;
  std::uint64_t size_ = 0;
};

}  // namespace nuq
