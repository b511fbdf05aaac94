// A short fingerprint of bytes, to tell in a file's metadata whether two things are the same (the
// quantize run a restored shard came from, the labels a training checkpoint was trained on):
// 64-bit FNV-1a as 16 hex digits. Not a cryptographic hash: it guards against mistakes, not
// against forgery.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace nuq {

inline std::string fingerprint(const void* data, std::size_t size) {
  std::uint64_t hash = 0xcbf29ce484222325ull;
  const auto* bytes = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < size; ++i) hash = (hash ^ bytes[i]) * 0x100000001b3ull;
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(hash));
  return text;
}

inline std::string fingerprint(const std::string& text) { return fingerprint(text.data(), text.size()); }

}  // namespace nuq
