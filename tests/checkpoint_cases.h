// Inputs shared by the streamed-checkpoint tests: a small LLM-like shard, the two-bit MSPTQ
// codebook they quantize with, and a file's bytes for byte-for-byte comparisons.
#pragma once

#include <cmath>
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

// Two shards of a folder checkpoint (`folder`/model-0000{1,2}-of-00002.safetensors), each with a
// 64 x 96 F32 matrix `layers.<s>.mlp.weight` and a 1-D norm of ones `layers.<s>.norm.weight`.
inline void write_two_shards(const std::string& folder) {
  for (int s = 1; s <= 2; ++s) {
    io::TensorFile shard;
    std::vector<float> w(64 * 96);
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = float(std::sin(double(i * (s + 2)))) * 0.05f;
    shard.tensors["layers." + std::to_string(s) + ".mlp.weight"] = io::f32_tensor({64, 96}, w);
    shard.tensors["layers." + std::to_string(s) + ".norm.weight"] = io::f32_tensor({96}, std::vector<float>(96, 1.0f));
    io::write_safetensors(folder + "/model-0000" + std::to_string(s) + "-of-00002.safetensors", shard);
  }
}

// The file's bytes in one read (an istreambuf_iterator takes them a character at a time, which the
// sanitizer build makes slow enough to matter in tests that compare folders before and after).
inline std::string bytes_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  std::string bytes(in ? std::size_t(in.tellg()) : 0, '\0');
  in.seekg(0);
  in.read(bytes.data(), std::streamsize(bytes.size()));
  return bytes;
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
