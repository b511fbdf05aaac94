// BF16 tensors for tests: weights truncated to BF16 (each float's top half, so exactly the values
// the file holds) and stored as the format stores them.
#pragma once

#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "nuq/io/safetensors.h"

namespace nuq::test {

// The BF16 tensor of `values`, which are truncated to BF16 in place (the values a reader restores).
inline io::Tensor bf16_tensor(std::vector<std::int64_t> shape, std::vector<float>& values) {
  io::Tensor t{io::DType::BF16, std::move(shape), {}};
  t.data.reserve(2 * values.size());
  for (float& v : values) {
    std::uint32_t bits;
    std::memcpy(&bits, &v, 4);
    bits &= 0xFFFF0000u;
    std::memcpy(&v, &bits, 4);
    t.data.push_back(std::uint8_t(bits >> 16));
    t.data.push_back(std::uint8_t(bits >> 24));
  }
  return t;
}

}  // namespace nuq::test
