// The streamed checkpoint quantizer's progress line on a terminal (checkpoint_stream.cpp), private
// to it.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ostream>
#include <string>

#include "nuq/terminal_text.h"

namespace nuq {

// A progress line for a terminal: what is being done, how far, how fast, how long still.
class Progress {
 public:
  Progress(std::ostream* out, std::uint64_t total) : out_(out), total_(total), start_(now()) {}
  void advance(const std::string& pass, const std::string& tensor, std::uint64_t bytes) {
    done_ += bytes;
    if (!out_ || now() - last_ < 0.25) return;
    last_ = now();
    const double seconds = last_ - start_, rate = seconds > 0 ? double(done_) / seconds : 0.0;
    char line[512];  // (a name of escaped control bytes is longer)
    std::snprintf(line, sizeof line, "\r\033[K%s %s: %.2f / %.2f GB, %.2f GB/s, ETA %.0f s", pass.c_str(),
                  terminal_text(tensor).c_str(), double(done_) / 1e9, double(total_) / 1e9, rate / 1e9,
                  rate > 0 ? double(total_ - std::min(done_, total_)) / rate : 0.0);
    *out_ << line << std::flush;
  }
  void restart(std::uint64_t total) {
    done_ = 0;
    total_ = total;
    start_ = now();
  }
  void close() {
    if (out_) *out_ << "\r\033[K" << std::flush;
  }

 private:
  static double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }
  std::ostream* out_;
  std::uint64_t total_, done_ = 0;
  double start_, last_ = 0.0;
};

}  // namespace nuq
