// Inputs shared by the streamed-checkpoint tests: a small LLM-like shard, the two-bit MSPTQ
// codebook they quantize with, and a file's bytes for byte-for-byte comparisons.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "backend_cases.h"
#include "bf16_tensor.h"
#include "nuq/design.h"
#include "nuq/io/safetensors.h"

namespace nuq::test {

inline std::string bytes_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A small LLM-like shard: two matrices (one of BF16), a norm vector and an integer buffer.
inline io::TensorFile shard(int seed, const std::string& prefix) {
  io::TensorFile file;
  std::vector<float> w = test::draw(test::Law::Laplace, 96 * 40, 0.0, 0.02, seed);
  file.tensors[prefix + "q_proj.weight"] = io::f32_tensor({96, 40}, w);
  std::vector<float> up = test::draw(test::Law::Laplace, 24 * 300, 0.001, 0.05, seed + 1);
  file.tensors[prefix + "up_proj.weight"] = bf16_tensor({24, 300}, up);
  file.tensors[prefix + "norm.weight"] = io::f32_tensor({40}, std::vector<float>(40, 1.0f));
  file.tensors[prefix + "step"] = io::Tensor{io::DType::I64, {1}, std::vector<std::uint8_t>(8, 3)};
  return file;
}

inline Codebook msptq2() {
  DesignSpec spec;
  spec.method = Method::Msptq;
  return design(spec).codebook;
}

}  // namespace nuq::test
