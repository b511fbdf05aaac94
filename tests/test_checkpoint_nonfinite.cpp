// NaN and Inf in streamed and in-memory checkpoints (checkpoint_stream.h, quantize_in_memory.h):
// a tensor of no finite weight refused by name, a row or group of none restored as the tensor's
// mean, and an error naming the element's place in the tensor however the pieces cut it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "backend_cases.h"
#include "bf16_tensor.h"
#include "checkpoint_cases.h"
#include "nuq/checkpoint.h"
#include "nuq/checkpoint_stream.h"
#include "nuq/error.h"
#include "nuq/io/safetensors.h"
#include "nuq/quantize_in_memory.h"
#include "temp_dir.h"

namespace nuq {
namespace {

using test::msptq2;

// A tensor of no finite weight among finite ones is refused by name even with NonFinite::Skip, by
// the streamed and the in-memory quantizer, in every mode, and nothing is written; one NaN row of a
// tensor is not (it comes back as the tensor's mean, below).
TEST(CheckpointStream, ATensorOfNoFiniteWeightIsRefusedByName) {
  test::TempDir dir;
  io::TensorFile file;
  std::vector<float> nan(8 * 64, std::numeric_limits<float>::quiet_NaN());
  file.tensors["a.weight"] = io::f32_tensor({8, 64}, test::draw(test::Law::Laplace, 8 * 64, 0.0, 0.05, 3));
  file.tensors["b.weight"] = io::f32_tensor({8, 64}, nan);
  io::write_safetensors(dir.file("in.safetensors"), file);
  const std::string named = "in.safetensors: tensor 'b.weight': every one of its 512 weights is NaN or infinite";
  for (Normalisation n : {Normalisation::Global, Normalisation::PerTensor, Normalisation::PerChannel, Normalisation::None}) {
    StreamOptions options;
    options.normalisation = n;
    options.nonfinite = NonFinite::Skip;
    try {
      quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("s.safetensors"), msptq2(), options, cpu_backend());
      ADD_FAILURE() << to_string(n) << ": quantized";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(named), std::string::npos) << e.what();
    }
    EXPECT_FALSE(std::filesystem::exists(dir.file("s.safetensors")));
    try {
      quantize_checkpoint(file, "in.safetensors", msptq2(), n, NonFinite::Skip, cpu_backend());
      ADD_FAILURE() << to_string(n) << ": quantized in memory";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(named), std::string::npos) << e.what();
    }
  }
  std::fill(nan.begin() + 64, nan.end(), 0.5f);  // one row of NaN, the others constant
  file.tensors["b.weight"] = io::f32_tensor({8, 64}, nan);
  io::write_safetensors(dir.file("in.safetensors"), file);
  StreamOptions per_channel;
  per_channel.normalisation = Normalisation::PerChannel;
  per_channel.nonfinite = NonFinite::Skip;
  const StreamReport report = quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("s.safetensors"), msptq2(),
                                                        per_channel, cpu_backend());
  EXPECT_EQ(report.tensors.at(1).tensor.nonfinite, 64u);
}

// Under NonFinite::Skip a row or group of no finite weight has no statistics of its own: it comes
// back as the tensor's mean (its table, or its group's scale about that mean, 0), per channel and
// in groups, in rows a piece holds and in rows longer than a piece, streamed and in memory alike.
TEST(CheckpointStream, ARowOrGroupOfNoFiniteWeightComesBackAsTheTensorsMean) {
  test::TempDir dir;
  constexpr float kNaN = std::numeric_limits<float>::quiet_NaN(), kInf = std::numeric_limits<float>::infinity();
  const std::size_t rows = 6, cols = 4096;
  std::vector<float> w = test::draw(test::Law::Laplace, rows * cols, 0.25, 0.05, 5);
  std::fill(w.begin() + 2 * cols, w.begin() + 3 * cols, kNaN);  // row 2
  w[2 * cols + 7] = kInf;
  std::fill(w.begin() + 4 * cols + 64, w.begin() + 4 * cols + 128, -kInf);  // row 4's second group of 64
  double sum = 0.0;
  std::size_t finite = 0;
  for (float x : w)
    if (std::isfinite(x)) sum += x, ++finite;
  const double mean = sum / double(finite);
  io::TensorFile file;
  file.tensors["w"] = io::f32_tensor({std::int64_t(rows), std::int64_t(cols)}, w);
  io::write_safetensors(dir.file("in.safetensors"), file);
  for (const std::size_t group_size : {std::size_t{0}, std::size_t{64}})
    for (const std::size_t piece_bytes : {kPieceBytes, std::size_t{4 * 1024}}) {  // rows whole, or in 4 pieces
      StreamOptions options;
      options.normalisation = Normalisation::PerChannel;
      options.nonfinite = NonFinite::Skip;
      options.group_size = group_size;
      options.piece_bytes = piece_bytes;
      const std::string what = "groups " + std::to_string(group_size) + " pieces of " + std::to_string(piece_bytes);
      const StreamReport report =
          quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("s.safetensors"), msptq2(), options, cpu_backend());
      EXPECT_EQ(report.tensors.at(0).tensor.nonfinite, cols + 64) << what;
      const io::TensorFile back = dequantize_checkpoint(io::read_safetensors(dir.file("s.safetensors")), "s");
      std::vector<float> restored(rows * cols);
      std::memcpy(restored.data(), back.tensors.at("w").data.data(), restored.size() * sizeof(float));
      for (std::size_t c = 0; c < cols; ++c)
        ASSERT_NEAR(restored[2 * cols + c], mean, 1e-6) << what << ": row 2, column " << c;
      if (group_size) {  // a group of -Inf in a row of finite weights: as the NaN row
        for (std::size_t c = 64; c < 128; ++c) ASSERT_NEAR(restored[4 * cols + c], mean, 1e-6) << what << ": row 4";
      }
      // The in-memory quantizer (the Python binding's) gives the same codes, scales and tables.
      InMemoryOptions in_memory;
      in_memory.normalisation = Normalisation::PerChannel;
      in_memory.nonfinite = NonFinite::Skip;
      in_memory.group_size = group_size;
      in_memory.piece_bytes = piece_bytes;
      const io::Tensor& tensor = file.tensors.at("w");
      const TensorInMemory t{tensor.data.data(), tensor.dtype, tensor.shape, "w"};
      const WeightStats own = in_memory_stats(t, msptq2(), in_memory, cpu_backend());
      const QuantizedTensor q = quantize_in_memory(t, msptq2(), own, own, in_memory, cpu_backend());
      const QuantizedCheckpoint streamed =
          read_quantized_checkpoint(io::read_safetensors(dir.file("s.safetensors")), "s");
      const QuantizedTensor& s = streamed.quantized.at("w");
      EXPECT_EQ(q.matrix.codes.bytes, s.matrix.codes.bytes) << what;
      EXPECT_EQ(q.scales, s.scales) << what;
      EXPECT_EQ(q.matrix.levels, s.matrix.levels) << what;
    }
}

// A NaN or Inf is named by its place in the tensor, wherever the pieces cut it: in a row longer
// than a piece (its index within the piece said nothing), in a share of rows that does not start
// the tensor, and in a grouped view; by the streamed and the in-memory quantizer alike.
TEST(CheckpointStream, ANonFiniteWeightIsNamedByItsPlaceInTheTensor) {
  test::TempDir dir;
  struct Case {
    std::vector<std::int64_t> shape;
    std::size_t at;
    const char* place;
    std::size_t piece_bytes;
  };
  const Case cases[] = {
      {{2, 3, 40000}, 1 * 120000 + 2 * 40000 + 33333, "[1, 2, 33333]", 4 * 20000},  // rows of 7 pieces
      {{600, 1024}, 517 * 1024 + 1000, "[517, 1000]", 4 * 20000},  // a piece of 19 rows, one share
      {{300, 4096}, 299 * 4096 + 4095, "[299, 4095]", kPieceBytes}};  // the last of a piece's 5 shares of rows
  for (const Case& c : cases) {
    std::size_t count = 1;
    for (std::int64_t d : c.shape) count *= std::size_t(d);
    std::vector<float> w = test::draw(test::Law::Laplace, count, 0.0, 0.05, 11);
    w[c.at] = -std::numeric_limits<float>::infinity();
    for (const bool bf16 : {false, true}) {
      io::TensorFile file;
      file.tensors["conv.weight"] = bf16 ? test::bf16_tensor(c.shape, w) : io::f32_tensor(c.shape, w);
      io::write_safetensors(dir.file("in.safetensors"), file);
      const std::string named = std::string("tensor 'conv.weight': element ") + c.place + " is -inf; weights must be finite";
      for (const std::size_t group_size : {std::size_t{0}, std::size_t{64}}) {
        StreamOptions options;
        options.normalisation = group_size ? Normalisation::PerChannel : Normalisation::Global;
        options.group_size = group_size;
        options.piece_bytes = c.piece_bytes;
        const std::string what = std::string(c.place) + (bf16 ? " bf16" : " f32") + " groups " + std::to_string(group_size);
        try {
          quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("s.safetensors"), msptq2(), options, cpu_backend());
          ADD_FAILURE() << what << ": quantized";
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("in.safetensors: " + named), std::string::npos) << what << ": " << e.what();
        }
        InMemoryOptions in_memory;
        in_memory.normalisation = options.normalisation;
        in_memory.group_size = group_size;
        in_memory.piece_bytes = options.piece_bytes;
        const io::Tensor& tensor = file.tensors.at("conv.weight");
        const TensorInMemory t{tensor.data.data(), tensor.dtype, tensor.shape, "tensor 'conv.weight'"};
        try {
          in_memory_stats(t, msptq2(), in_memory, cpu_backend());
          ADD_FAILURE() << what << ": quantized in memory";
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find(named), std::string::npos) << what << ": " << e.what();
        }
      }
    }
  }
}

}  // namespace
}  // namespace nuq
