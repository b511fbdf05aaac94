// The streamed checkpoint quantizer (checkpoint_stream.h) on the CUDA backend: each piece read
// and widened on a second thread while the device works on the one before, then statistics and
// the fused pass on the device. Against the CPU backend on the same sharded checkpoint, in every
// normalisation and with groups of 128: the same files, tensors, shapes and kept bytes, and the
// same codes but for weights within rounding of a threshold (the device's sums differ from the
// CPU's in their last bits, so a map may too). Labelled `gpu`; skipped where no CUDA device is
// visible, never passed without running.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "../backend_cases.h"
#include "../temp_dir.h"
#include "nuq/checkpoint.h"
#include "nuq/checkpoint_stream.h"
#include "nuq/cuda.h"
#include "nuq/design.h"
#include "nuq/io/safetensors.h"

namespace nuq {
namespace {

namespace fs = std::filesystem;

class CheckpointStreamGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::devices().empty()) GTEST_SKIP() << cuda::unavailable_reason();
  }
};

io::Tensor bf16_tensor(std::vector<std::int64_t> shape, const std::vector<float>& values) {
  io::Tensor t{io::DType::BF16, std::move(shape), {}};
  for (float v : values) {  // truncated to BF16: the top half of the float
    std::uint32_t bits;
    std::memcpy(&bits, &v, 4);
    t.data.push_back(std::uint8_t(bits >> 16));
    t.data.push_back(std::uint8_t(bits >> 24));
  }
  return t;
}

// Two LLM-like shards: BF16 and F32 matrices of several scales, one with rows longer than a piece
// (cut into column pieces), a norm and an integer buffer that stay as they are.
void write_checkpoint(const std::string& folder) {
  fs::create_directories(folder);
  nlohmann::json weight_map = nlohmann::json::object();
  for (int s = 1; s <= 2; ++s) {
    const std::string prefix = "model.layers." + std::to_string(s) + ".";
    io::TensorFile f;
    f.tensors[prefix + "mlp.up_proj.weight"] =
        bf16_tensor({512, 1024}, test::draw(test::Law::Laplace, 512 * 1024, 0.0, 0.02 * s, 10 * s));
    f.tensors[prefix + "self_attn.q_proj.weight"] =
        io::f32_tensor({300, 640}, test::draw(test::Law::Laplace, 300 * 640, 0.001, 0.05, 10 * s + 1));
    f.tensors[prefix + "mlp.down_proj.weight"] =
        bf16_tensor({8, 40960}, test::draw(test::Law::Gauss, 8 * 40960, 0.0, 0.01, 10 * s + 2));
    f.tensors[prefix + "input_layernorm.weight"] = io::f32_tensor({640}, std::vector<float>(640, 1.0f));
    f.tensors[prefix + "step"] = io::Tensor{io::DType::I64, {1}, std::vector<std::uint8_t>(8, 3)};
    const std::string file = "model-0000" + std::to_string(s) + "-of-00002.safetensors";
    io::write_safetensors(folder + "/" + file, f);
    for (const auto& [name, tensor] : f.tensors) weight_map[name] = file;
  }
  std::ofstream(folder + "/model.safetensors.index.json") << nlohmann::json{{"weight_map", weight_map}}.dump();
}

TEST_F(CheckpointStreamGpu, ShardsLikeTheCpusInEveryNormalisation) {
  test::TempDir dir;
  write_checkpoint(dir.file("in"));
  DesignSpec spec;
  spec.method = Method::Msptq;
  const Codebook codebook = design(spec).codebook;
  // Small device chunks as well as small pieces: many uploads per tensor, and the read-ahead
  // thread working through every tensor.
  const std::unique_ptr<Backend> gpu = cuda::make_backend(0, std::size_t{1} << 18);
  struct Case {
    Normalisation normalisation;
    std::size_t group_size;
  };
  for (const Case c : {Case{Normalisation::Global, 0}, Case{Normalisation::PerTensor, 0},
                       Case{Normalisation::PerChannel, 0}, Case{Normalisation::PerChannel, 128}}) {
    const std::string what = to_string(c.normalisation) + " groups " + std::to_string(c.group_size);
    StreamOptions options;
    options.normalisation = c.normalisation;
    options.group_size = c.group_size;
    options.piece_bytes = std::size_t{1} << 16;  // 16 Ki floats: 32 rows of up_proj, column pieces of down_proj
    const std::string on_gpu = dir.file("gpu-" + std::to_string(int(c.normalisation)) + "-" + std::to_string(c.group_size));
    const std::string on_cpu = dir.file("cpu-" + std::to_string(int(c.normalisation)) + "-" + std::to_string(c.group_size));
    const StreamReport g = quantize_checkpoint_files(dir.file("in"), on_gpu, codebook, options, *gpu);
    const StreamReport r = quantize_checkpoint_files(dir.file("in"), on_cpu, codebook, options, cpu_backend());

    ASSERT_EQ(g.tensors.size(), 6u) << what;
    ASSERT_EQ(g.tensors.size(), r.tensors.size()) << what;
    EXPECT_EQ(g.kept, r.kept) << what;
    EXPECT_EQ(g.stats.count, r.stats.count) << what;
    EXPECT_NEAR(g.stats.mean, r.stats.mean, 1e-9 * r.stats.stddev()) << what;
    EXPECT_NEAR(g.stats.stddev(), r.stats.stddev(), 1e-9 * r.stats.stddev()) << what;
    EXPECT_NEAR(g.sqnr_ex_db, r.sqnr_ex_db, 1e-3) << what;
    EXPECT_NEAR(g.within, r.within, 1e-3) << what;
    for (std::size_t t = 0; t < r.tensors.size(); ++t) {
      EXPECT_EQ(g.tensors[t].tensor.name, r.tensors[t].tensor.name) << what;
      EXPECT_NEAR(g.tensors[t].tensor.sqnr_ex_db, r.tensors[t].tensor.sqnr_ex_db, 1e-3) << what << " " << r.tensors[t].tensor.name;
      EXPECT_NEAR(g.tensors[t].tensor.excess_kurtosis, r.tensors[t].tensor.excess_kurtosis, 1e-6) << what;
    }
    EXPECT_EQ(nlohmann::json::parse(std::ifstream(on_gpu + "/model.safetensors.index.json"))["weight_map"],
              nlohmann::json::parse(std::ifstream(on_cpu + "/model.safetensors.index.json"))["weight_map"])
        << what;

    for (int s = 1; s <= 2; ++s) {
      const std::string file = "/model-0000" + std::to_string(s) + "-of-00002.safetensors";
      const io::TensorFile a = io::read_safetensors(on_gpu + file), b = io::read_safetensors(on_cpu + file);
      ASSERT_EQ(a.tensors.size(), b.tensors.size()) << what << file;
      for (const auto& [name, expected] : b.tensors) {
        const io::Tensor& got = a.tensors.at(name);
        ASSERT_EQ(got.dtype, expected.dtype) << what << " " << name;
        ASSERT_EQ(got.shape, expected.shape) << what << " " << name;
        ASSERT_EQ(got.data.size(), expected.data.size()) << what << " " << name;
        const bool codes = name.size() > 6 && name.compare(name.size() - 6, 6, ".codes") == 0;
        const bool derived = name.find(".codebook") != std::string::npos || name.find(".scales") != std::string::npos ||
                             name.find(".grid") != std::string::npos;
        if (codes) {  // four codes a byte: a byte differs where a weight sat on a threshold
          std::size_t differing = 0;
          for (std::size_t i = 0; i < got.data.size(); ++i) differing += got.data[i] != expected.data[i];
          EXPECT_LE(differing, 2 + got.data.size() / 20000) << what << " " << name;
        } else if (derived) {  // from the maps: equal to float rounding
          const std::vector<float> x = io::to_floats(got, name), y = io::to_floats(expected, name);
          for (std::size_t i = 0; i < x.size(); ++i)
            ASSERT_NEAR(x[i], y[i], 1e-5 * std::abs(y[i]) + 1e-30) << what << " " << name << "[" << i << "]";
        } else {  // kept as it was
          EXPECT_EQ(got.data, expected.data) << what << " " << name;
        }
      }
      // Each GPU shard is a whole quantized file: it dequantizes on the CPU.
      const io::TensorFile restored = dequantize_checkpoint(a, on_gpu + file);
      EXPECT_EQ(restored.tensors.at("model.layers." + std::to_string(s) + ".mlp.up_proj.weight").shape,
                (std::vector<std::int64_t>{512, 1024}))
          << what;
    }
  }
}

}  // namespace
}  // namespace nuq
