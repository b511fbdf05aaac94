// Which tensors the streamed checkpoint quantizer keeps as they are (host/kept_tensors.h): tensors
// without elements, a peer's 8- and 4-bit float weights, codes and their modules' scales, and those
// --skip names, however long their names.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint_cases.h"
#include "nuq/checkpoint.h"
#include "nuq/checkpoint_stream.h"
#include "nuq/error.h"
#include "nuq/io/safetensors.h"
#include "nuq/normalisation.h"
#include "nuq/stats.h"
#include "temp_dir.h"

namespace nuq {
namespace {

using test::msptq2;
using test::shard;
namespace fs = std::filesystem;

// Tensors without elements beside others, in groups and per channel: kept as they are (nothing to
// quantize; a [2^40, 0] tensor of a hostile header would otherwise cost a map per empty row).
TEST(CheckpointStream, TensorsWithoutElementsAreKept) {
  test::TempDir dir;
  io::TensorFile file;
  file.tensors["empty.weight"] = io::f32_tensor({0, 256}, {});
  file.tensors["tall.weight"] = io::Tensor{io::DType::F32, {std::int64_t{1} << 40, 0}, {}};
  file.tensors["mlp.weight"] = io::f32_tensor({8, 256}, test::draw(test::Law::Laplace, 8 * 256, 0.0, 0.1, 3));
  io::write_safetensors(dir.file("in.safetensors"), file);
  for (std::size_t group_size : {std::size_t{0}, std::size_t{128}}) {
    StreamOptions options;
    options.normalisation = Normalisation::PerChannel;
    options.group_size = group_size;
    const StreamReport report =
        quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("q.safetensors"), msptq2(), options, cpu_backend());
    EXPECT_EQ(report.tensors.size(), 1u);
    EXPECT_EQ(report.kept, (std::vector<std::string>{"empty.weight", "tall.weight"}));
    EXPECT_LT(fs::file_size(dir.file("q.safetensors")), 4096u);
    const io::TensorFile back = dequantize_checkpoint(io::read_safetensors(dir.file("q.safetensors")), "q");
    EXPECT_EQ(back.tensors.at("empty.weight").shape, (std::vector<std::int64_t>{0, 256})) << group_size;
    EXPECT_EQ(back.tensors.at("tall.weight").shape, file.tensors.at("tall.weight").shape) << group_size;
    EXPECT_EQ(back.tensors.at("mlp.weight").shape, (std::vector<std::int64_t>{8, 256})) << group_size;
  }
}

// A peer's FP8/MX/GPTQ checkpoint: its 8-bit float weights, packed 4-bit blocks, I32 codes and
// complex buffers, and the floating scales of those modules (2-D, yet not weights), are carried
// through quantizing and dequantizing byte for byte; only the plain matrices are quantized.
TEST(CheckpointStream, PeersEightAndFourBitFloatsAreKeptAsTheyAre) {
  test::TempDir dir;
  io::TensorFile file = shard(5, "");
  auto bytes = [](io::DType dtype, std::vector<std::int64_t> shape, std::size_t count, int seed) {
    io::Tensor t{dtype, std::move(shape), std::vector<std::uint8_t>(count)};
    for (std::size_t i = 0; i < count; ++i) t.data[i] = std::uint8_t(i * 37 + seed);
    return t;
  };
  file.tensors["mlp.down_proj.weight"] = bytes(io::DType::F8_E4M3, {64, 32}, 64 * 32, 1);
  file.tensors["mlp.down_proj.weight_scale_inv"] = io::f32_tensor({1, 1}, {0.01f});
  file.tensors["experts.gate_up_proj_blocks"] = bytes(io::DType::F4, {16, 30}, 16 * 30 / 2, 2);
  file.tensors["experts.gate_up_proj_scales"] = bytes(io::DType::F8_E8M0, {16, 1}, 16, 3);
  file.tensors["rotary.freqs"] = bytes(io::DType::C64, {4}, 4 * 8, 4);
  file.tensors["o_proj.qweight"] = bytes(io::DType::I32, {4, 64}, 4 * 64 * 4, 5);
  file.tensors["o_proj.scales"] = io::f32_tensor({2, 64}, std::vector<float>(128, 0.5f));
  io::write_safetensors(dir.file("in.safetensors"), file);
  const StreamReport report =
      quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("q.safetensors"), msptq2(), StreamOptions{}, cpu_backend());
  EXPECT_EQ(report.tensors.size(), 2u);  // q_proj and up_proj
  const std::vector<std::string> peers = {"experts.gate_up_proj_blocks", "experts.gate_up_proj_scales",
                                          "mlp.down_proj.weight",        "mlp.down_proj.weight_scale_inv",
                                          "o_proj.qweight",              "o_proj.scales",
                                          "rotary.freqs"};
  for (const std::string& name : peers)
    EXPECT_NE(std::find(report.kept.begin(), report.kept.end(), name), report.kept.end()) << name;
  // Index and counter buffers (I64, BOOL) say nothing of another tool: their modules' floats are
  // quantized (with --quantize-vectors, BatchNorm's too); a U8 weight's own sub-tensors
  // (bitsandbytes' `<m>.weight.absmax`) are its module and are kept.
  io::TensorFile plain;
  plain.tensors["bn.weight"] = io::f32_tensor({16}, test::draw(test::Law::Laplace, 16, 1.0, 0.1, 7));
  plain.tensors["bn.num_batches_tracked"] = io::Tensor{io::DType::I64, {}, std::vector<std::uint8_t>(8, 0)};
  plain.tensors["attn.relative_position_index"] = bytes(io::DType::I64, {9, 9}, 81 * 8, 8);
  plain.tensors["attn.relative_position_bias_table"] = io::f32_tensor({25, 4}, test::draw(test::Law::Laplace, 100, 0.0, 0.1, 9));
  plain.tensors["attn.mask"] = bytes(io::DType::BOOL, {8, 8}, 64, 0);
  plain.tensors["bnb.weight"] = bytes(io::DType::U8, {16, 8}, 128, 10);
  plain.tensors["bnb.weight.absmax"] = io::f32_tensor({4}, {1.f, 2.f, 3.f, 4.f});
  io::write_safetensors(dir.file("plain.safetensors"), plain);
  StreamOptions vectors;
  vectors.quantize_vectors = true;
  const StreamReport mixed =
      quantize_checkpoint_files(dir.file("plain.safetensors"), dir.file("pq.safetensors"), msptq2(), vectors, cpu_backend());
  std::vector<std::string> quantized;
  for (const auto& t : mixed.tensors) quantized.push_back(t.tensor.name);
  std::sort(quantized.begin(), quantized.end());
  EXPECT_EQ(quantized, (std::vector<std::string>{"attn.relative_position_bias_table", "bn.weight"}));

  dequantize_checkpoint_file(dir.file("q.safetensors"), dir.file("d.safetensors"));
  for (const char* out : {"q.safetensors", "d.safetensors"}) {
    const io::TensorFile back = io::read_safetensors(dir.file(out));
    for (const std::string& name : peers) {
      EXPECT_EQ(back.tensors.at(name).dtype, file.tensors.at(name).dtype) << out << " " << name;
      EXPECT_EQ(back.tensors.at(name).shape, file.tensors.at(name).shape) << out << " " << name;
      EXPECT_EQ(back.tensors.at(name).data, file.tensors.at(name).data) << out << " " << name;
    }
  }
}

// --skip is matched by std::regex, which recurses a level a character: the longest name it takes
// (2048 characters) matches backtracking patterns, a longer one is refused with a message, never
// a stack overflow (a 50,000-character name crashed the matcher).
TEST(CheckpointStream, SkipMatchesLongNamesOrRefusesThem) {
  test::TempDir dir;
  io::TensorFile file;
  const std::string longest = "model.layers." + std::string(2048 - 20, 'x') + ".weight";
  ASSERT_EQ(longest.size(), 2048u);
  file.tensors[longest] = io::f32_tensor({8, 8}, test::draw(test::Law::Laplace, 64, 0.0, 0.1, 5));
  file.tensors["b.weight"] = io::f32_tensor({8, 8}, test::draw(test::Law::Laplace, 64, 0.0, 0.1, 6));
  io::write_safetensors(dir.file("in.safetensors"), file);
  for (const char* pattern : {".*lm_head", "(n|m)*x", "^model\\..*\\.weight$"}) {
    StreamOptions options;
    options.skip = skip_pattern(pattern);
    const StreamReport report =
        quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("q.safetensors"), msptq2(), options, cpu_backend());
    EXPECT_EQ(report.kept.size(), std::string(pattern) == ".*lm_head" ? 0u : 1u) << pattern;
  }
  file.tensors[longest + "x"] = file.tensors.at(longest);
  io::write_safetensors(dir.file("longer.safetensors"), file);
  StreamOptions options;
  options.skip = skip_pattern("(n|m)*x");
  try {
    quantize_checkpoint_files(dir.file("longer.safetensors"), dir.file("q2.safetensors"), msptq2(), options, cpu_backend());
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("2049 characters is too long to match --skip"), std::string::npos) << e.what();
  }
}

// A --skip pattern is matched in polynomial time: patterns that backtrack exponentially in
// std::regex's default (depth-first) executor finish at once on the longest name, the syntax
// people write keeps its meaning, and what would overflow the compiler's stack (groups 30,000
// deep crashed it) is refused with a message.
TEST(CheckpointStream, SkipPatternsMatchInPolynomialTimeAndDeepOnesAreRefused) {
#if !defined(__GLIBCXX__)
  GTEST_SKIP() << "polynomial matching is libstdc++'s";
#endif
  test::TempDir dir;
  io::TensorFile file;
  const std::string as(2048, 'a');
  file.tensors[as] = io::f32_tensor({8, 8}, test::draw(test::Law::Laplace, 64, 0.0, 0.1, 5));
  file.tensors["model.layers.10.self_attn.q_proj.weight"] = io::f32_tensor({8, 8}, test::draw(test::Law::Laplace, 64, 0.0, 0.1, 6));
  file.tensors["model.layers.2.mlp.up_proj.weight"] = io::f32_tensor({8, 8}, test::draw(test::Law::Laplace, 64, 0.0, 0.1, 7));
  io::write_safetensors(dir.file("in.safetensors"), file);
  const std::pair<const char*, std::size_t> cases[] = {
      {"(.*)*X", 0}, {"([a-z_.0-9]|\\w)*X", 0}, {"(a|a)*c", 0}, {"(a*)*b", 0},  // exponential when backtracking
      {"^(a|a)*$", 1}, {"q_proj|up_proj", 2}, {"layers\\.1[0-9]\\.", 1}, {"^model\\..*\\.weight$", 2},
      {"\\d+\\.mlp", 1}, {"^(?!model)", 1}, {"Q_PROJ", 0}};
  for (const auto& [pattern, kept] : cases) {
    StreamOptions options;
    options.skip = skip_pattern(pattern);
    const StreamReport report =
        quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("q.safetensors"), msptq2(), options, cpu_backend());
    EXPECT_EQ(report.kept.size(), kept) << pattern;
  }
  const auto refused = [](const std::string& pattern, const std::string& why) {
    try {
      skip_pattern(pattern);
      ADD_FAILURE() << pattern.substr(0, 40) << ": compiled";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
  };
  refused(std::string(30000, '(') + "a" + std::string(30000, ')'), "a pattern of 60001 characters");
  refused(std::string(65, '(') + "a" + std::string(65, ')'), "groups nested 65 deep; at most 64");
  refused("[(((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((]((a)", "not a regular expression");
  refused("(a)\\1", "not a regular expression");
  EXPECT_NO_THROW(skip_pattern(std::string(64, '(') + "a" + std::string(64, ')')));
  EXPECT_NO_THROW(skip_pattern("[(((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((]\\(a\\)"));
}

// Masks stored as floats, in any floating dtype: GPT-2's causal `h.N.attn.bias` (F32 [1, 1, n, n]
// of 0 and 1) and additive ones (Swin's `attn_mask` of 0 and -100, 0 and float's lowest). They are
// kept byte for byte and said so, and the weights' codes are those of the checkpoint without them
// (with global normalisation the masks would otherwise set every weight's scale), in one file and
// shard by shard; `nuq inspect`'s plan says the same. A tensor with a third value, of zeros alone,
// or of two other values (a checkerboard of +-0.02) is quantized; masks alone are refused.
TEST(CheckpointStream, MasksAreKeptAndLeaveTheWeightsAlone) {
  test::TempDir dir;
  const auto causal = [](std::int64_t n) {
    std::vector<float> v(std::size_t(n * n));
    for (std::int64_t r = 0; r < n; ++r)
      for (std::int64_t c = 0; c <= r; ++c) v[std::size_t(r * n + c)] = 1.0f;
    return v;
  };
  std::vector<float> bf16_mask = causal(8);
  std::vector<float> almost = causal(8);
  almost[3] = 0.5f;
  io::TensorFile weights = shard(7, "");
  weights.tensors["zeros.weight"] = io::f32_tensor({4, 4}, std::vector<float>(16, 0.0f));
  weights.tensors["almost.mask"] = io::f32_tensor({8, 8}, almost);
  std::vector<float> checker(64);
  for (std::size_t i = 0; i < checker.size(); ++i) checker[i] = (i / 8 + i % 8) % 2 ? 0.02f : -0.02f;
  weights.tensors["checker.weight"] = io::f32_tensor({8, 8}, checker);
  // 128 KiB between the first tensors and the masks: the plan's window of first values moves.
  weights.tensors["big.weight"] = io::f32_tensor({128, 256}, test::draw(test::Law::Laplace, 128 * 256, 0.0, 0.02, 9));
  io::TensorFile with_masks = weights;
  with_masks.tensors["h.0.attn.mask"] = io::f32_tensor({1, 1, 16, 16}, causal(16));
  with_masks.tensors["h.1.attn.mask"] = test::bf16_tensor({1, 1, 8, 8}, bf16_mask);
  std::vector<float> additive = causal(7), lowest = causal(9);
  for (float& v : additive) v = v == 1.0f ? 0.0f : -100.0f;
  for (float& v : lowest) v = v == 1.0f ? 0.0f : std::numeric_limits<float>::lowest();
  with_masks.tensors["layers.0.attn_mask"] = io::f32_tensor({1, 7, 7}, additive);
  with_masks.tensors["layers.1.attn_mask"] = io::f32_tensor({9, 9}, lowest);
  io::write_safetensors(dir.file("weights.safetensors"), weights);
  io::write_safetensors(dir.file("masks.safetensors"), with_masks);

  // The quantized outputs of `a` and `b` hold the same tensors but for `b`'s masks, byte for byte.
  const auto same_but_masks = [&](const std::string& a, const std::string& b, const io::TensorFile& masks_from) {
    const io::TensorFile x = io::read_safetensors(a), y = io::read_safetensors(b);
    EXPECT_EQ(x.tensors.size() + masks_from.tensors.size() - weights.tensors.size(), y.tensors.size()) << b;
    for (const auto& [name, t] : x.tensors) {
      ASSERT_TRUE(y.tensors.count(name)) << b << ": " << name;
      EXPECT_EQ(y.tensors.at(name).data, t.data) << b << ": " << name;
    }
    for (const auto& [mask, t] : masks_from.tensors) {
      if (weights.tensors.count(mask)) continue;
      EXPECT_EQ(y.tensors.at(mask).dtype, t.dtype) << mask;
      EXPECT_EQ(y.tensors.at(mask).data, t.data) << mask;
    }
  };
  StreamOptions options;
  std::ostringstream told;
  options.warnings = &told;
  const StreamReport report =
      quantize_checkpoint_files(dir.file("masks.safetensors"), dir.file("qm.safetensors"), msptq2(), options, cpu_backend());
  quantize_checkpoint_files(dir.file("weights.safetensors"), dir.file("qw.safetensors"), msptq2(), StreamOptions{}, cpu_backend());
  same_but_masks(dir.file("qw.safetensors"), dir.file("qm.safetensors"), with_masks);
  EXPECT_EQ(report.kept, (std::vector<std::string>{"h.0.attn.mask", "h.1.attn.mask", "layers.0.attn_mask",
                                                   "layers.1.attn_mask", "norm.weight", "step"}));
  EXPECT_EQ(report.tensors.size(), 6u);  // q_proj, up_proj, zeros, big, checker and almost.mask
  ASSERT_EQ(report.warnings.size(), 1u);
  EXPECT_EQ(report.warnings[0], dir.file("masks.safetensors") +
                                    ": 4 mask(s) kept as they are (only 0 and 1, as GPT-2's causal attn.bias, or 0 "
                                    "and one value <= -100 or -inf, added to attention scores; not weights): 'h.0.attn.mask', "
                                    "'h.1.attn.mask', 'layers.0.attn_mask' and 1 more");
  EXPECT_EQ(told.str(), "nuq: warning: " + report.warnings[0] + "\n");
  StreamOptions small_pieces;  // masks read in many pieces, by the plan and by a run
  small_pieces.piece_bytes = 512;
  for (const StreamOptions& o : {StreamOptions{}, small_pieces})
    for (const TensorPlan& t : plan_checkpoint(dir.file("masks.safetensors"), o).tensors) {
      const bool mask = t.name.find("attn") != std::string::npos;
      EXPECT_EQ(t.kept == "a mask (only 0 and 1, or 0 and one value <= -100 or -inf), not weights", mask)
          << t.name << ": " << t.kept;
    }
  quantize_checkpoint_files(dir.file("masks.safetensors"), dir.file("qm2.safetensors"), msptq2(), small_pieces, cpu_backend());
  quantize_checkpoint_files(dir.file("weights.safetensors"), dir.file("qw2.safetensors"), msptq2(), small_pieces,
                            cpu_backend());
  same_but_masks(dir.file("qw2.safetensors"), dir.file("qm2.safetensors"), with_masks);

  // Shard by shard (per tensor, two shards): the masks of the first are kept when its pass 1 ends.
  for (const char* folder : {"w", "m"}) fs::create_directories(dir.file(folder));
  io::TensorFile second = shard(8, "b.");
  for (const char* folder : {"w", "m"}) {
    io::write_safetensors(dir.file(folder) + "/model-00001-of-00002.safetensors", folder[0] == 'm' ? with_masks : weights);
    io::write_safetensors(dir.file(folder) + "/model-00002-of-00002.safetensors", second);
  }
  options.normalisation = Normalisation::PerTensor;
  options.warnings = nullptr;
  const StreamReport sharded =
      quantize_checkpoint_files(dir.file("m"), dir.file("qm"), msptq2(), options, cpu_backend());
  quantize_checkpoint_files(dir.file("w"), dir.file("qw"), msptq2(), options, cpu_backend());
  same_but_masks(dir.file("qw") + "/model-00001-of-00002.safetensors", dir.file("qm") + "/model-00001-of-00002.safetensors",
                 with_masks);
  EXPECT_EQ(test::bytes_of(dir.file("qw") + "/model-00002-of-00002.safetensors"),
            test::bytes_of(dir.file("qm") + "/model-00002-of-00002.safetensors"));
  EXPECT_EQ(sharded.tensors.size(), 8u);
  ASSERT_EQ(sharded.warnings.size(), 1u);
  EXPECT_EQ(sharded.warnings[0].rfind(dir.file("m") + "/model-00001-of-00002.safetensors: 4 mask(s) kept", 0),
            0u) << sharded.warnings[0];

  io::TensorFile masks_alone;
  masks_alone.tensors["h.0.attn.mask"] = with_masks.tensors.at("h.0.attn.mask");
  masks_alone.tensors["ln.weight"] = io::f32_tensor({16}, std::vector<float>(16, 1.0f));
  io::write_safetensors(dir.file("alone.safetensors"), masks_alone);
  try {
    quantize_checkpoint_files(dir.file("alone.safetensors"), dir.file("qa.safetensors"), msptq2(), StreamOptions{},
                              cpu_backend());
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no tensor to quantize: every one it would quantize is a mask"),
              std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir.file("qa.safetensors")));
}

// Additive masks of 0 and -inf (PyTorch's torch.full(..., -inf).triu(1)), F32 and BF16, are masks
// too: kept byte for byte, with the weights' codes those of the checkpoint without them, whether
// non-finite weights are refused (pass 1 meets the -inf and reads the tensor again) or skipped
// (--nonfinite saturate: every finite value 0), in one file and shard by shard; the plan says so.
// A tensor of 0 and +inf, or 0 and NaN, is no mask: refused, or quantized with its values skipped.
TEST(CheckpointStream, MasksOfZeroAndMinusInfinityAreKeptUnderEitherNonfiniteRule) {
  test::TempDir dir;
  const auto causal = [](std::int64_t n, float masked) {
    std::vector<float> v(std::size_t(n * n), 0.0f);
    for (std::int64_t r = 0; r < n; ++r)
      for (std::int64_t c = r + 1; c < n; ++c) v[std::size_t(r * n + c)] = masked;
    return v;
  };
  const float inf = std::numeric_limits<float>::infinity();
  const io::TensorFile weights = shard(11, "");
  io::TensorFile with_masks = weights;
  with_masks.tensors["h.0.attn.causal_mask"] = io::f32_tensor({1, 1, 16, 16}, causal(16, -inf));
  std::vector<float> bf16_mask = causal(8, -inf);  // (bf16_tensor truncates the floats it is given in place)
  with_masks.tensors["h.1.attn.causal_mask"] = test::bf16_tensor({8, 8}, bf16_mask);
  io::write_safetensors(dir.file("weights.safetensors"), weights);
  io::write_safetensors(dir.file("masks.safetensors"), with_masks);
  for (const StreamOptions& plan_options : {StreamOptions{}, [] {
                                              StreamOptions o;
                                              o.piece_bytes = 256;
                                              return o;
                                            }()})
    for (const TensorPlan& t : plan_checkpoint(dir.file("masks.safetensors"), plan_options).tensors)
      EXPECT_EQ(t.kept == "a mask (only 0 and 1, or 0 and one value <= -100 or -inf), not weights",
                t.name.find("causal_mask") != std::string::npos)
          << t.name << ": " << t.kept;
  for (NonFinite rule : {NonFinite::Reject, NonFinite::Skip})
    for (Normalisation normalisation : {Normalisation::Global, Normalisation::PerChannel}) {
      const std::string where = std::string(rule == NonFinite::Reject ? "refused" : "skipped") + ", " +
                                (normalisation == Normalisation::Global ? "global" : "per channel");
      StreamOptions options;
      options.nonfinite = rule;
      options.normalisation = normalisation;
      options.piece_bytes = 256;  // the masks' -inf met a few pieces in
      const StreamReport report = quantize_checkpoint_files(dir.file("masks.safetensors"), dir.file("qm.safetensors"),
                                                            msptq2(), options, cpu_backend());
      quantize_checkpoint_files(dir.file("weights.safetensors"), dir.file("qw.safetensors"), msptq2(), options,
                                cpu_backend());
      const io::TensorFile x = io::read_safetensors(dir.file("qw.safetensors"));
      const io::TensorFile y = io::read_safetensors(dir.file("qm.safetensors"));
      ASSERT_EQ(y.tensors.size(), x.tensors.size() + 2) << where;
      for (const auto& [name, t] : x.tensors) EXPECT_EQ(y.tensors.at(name).data, t.data) << where << ": " << name;
      for (const char* mask : {"h.0.attn.causal_mask", "h.1.attn.causal_mask"}) {
        EXPECT_EQ(y.tensors.at(mask).dtype, with_masks.tensors.at(mask).dtype) << where;
        EXPECT_EQ(y.tensors.at(mask).data, with_masks.tensors.at(mask).data) << where << ": " << mask;
        EXPECT_NE(std::find(report.kept.begin(), report.kept.end(), mask), report.kept.end()) << where << ": " << mask;
      }
    }
  // Shard by shard (per tensor): the first shard's mask is kept when its pass 1 ends.
  fs::create_directories(dir.file("m"));
  io::write_safetensors(dir.file("m") + "/model-00001-of-00002.safetensors", with_masks);
  io::write_safetensors(dir.file("m") + "/model-00002-of-00002.safetensors", shard(12, "b."));
  StreamOptions per_tensor;
  per_tensor.normalisation = Normalisation::PerTensor;
  const StreamReport sharded = quantize_checkpoint_files(dir.file("m"), dir.file("qm"), msptq2(), per_tensor, cpu_backend());
  EXPECT_EQ(std::count_if(sharded.kept.begin(), sharded.kept.end(),
                          [](const std::string& name) { return name.find("causal_mask") != std::string::npos; }),
            2);

  // 0 and +inf, 0 and NaN: weights with non-finite values, refused by default.
  for (float odd : {inf, std::numeric_limits<float>::quiet_NaN()}) {
    fs::remove(dir.file("qo.safetensors"));
    io::TensorFile file = weights;
    file.tensors["odd.weight"] = io::f32_tensor({8, 8}, causal(8, odd));
    io::write_safetensors(dir.file("odd.safetensors"), file);
    try {
      quantize_checkpoint_files(dir.file("odd.safetensors"), dir.file("qo.safetensors"), msptq2(), StreamOptions{},
                                cpu_backend());
      ADD_FAILURE() << odd << ": accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("odd.weight"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(dir.file("qo.safetensors")));
    StreamOptions skip;
    skip.nonfinite = NonFinite::Skip;
    const StreamReport report =
        quantize_checkpoint_files(dir.file("odd.safetensors"), dir.file("qo.safetensors"), msptq2(), skip, cpu_backend());
    EXPECT_EQ(std::find(report.kept.begin(), report.kept.end(), "odd.weight"), report.kept.end()) << odd;
  }
}

// Norms and biases are kept unless --quantize-vectors whatever their rank: a tensor of one dimension
// above 1 (ViT's cls_token [1, 1, d], a one-output head [1, d]) and a name ending in "bias"
// (gpt-oss's per-expert gate_up_proj_bias [E, 2I]; GPT-2's attn.bias, a mask either way).
TEST(CheckpointStream, VectorsAndBiasesOfAnyRankAreKeptUnlessAskedFor) {
  test::TempDir dir;
  io::TensorFile file;
  const auto laplace = [](std::vector<std::int64_t> shape, std::uint32_t seed) {
    std::size_t count = 1;
    for (std::int64_t d : shape) count *= std::size_t(d);
    return io::f32_tensor(shape, test::draw(test::Law::Laplace, count, 0.0, 0.02, seed));
  };
  file.tensors["cls_token"] = laplace({1, 1, 32}, 1);
  file.tensors["score.weight"] = laplace({1, 32}, 2);
  file.tensors["rwkv.time_mix_k"] = laplace({1, 1, 32, 1}, 3);
  file.tensors["mlp.experts.gate_up_proj_bias"] = laplace({4, 64}, 4);
  file.tensors["mlp.experts.gate_up_proj"] = laplace({4, 64, 32}, 5);
  file.tensors["mlp.dt_bias_scale"] = laplace({4, 8}, 6);  // "bias" inside the name: a weight
  std::vector<float> causal(64);
  for (std::size_t i = 0; i < causal.size(); ++i) causal[i] = i % 8 <= i / 8 ? 1.0f : 0.0f;
  file.tensors["h.0.attn.bias"] = io::f32_tensor({1, 1, 8, 8}, causal);
  io::write_safetensors(dir.file("in.safetensors"), file);
  const std::map<std::string, std::string> reasons = {
      {"cls_token", "a vector: one dimension above 1 (--quantize-vectors)"},
      {"score.weight", "a vector: one dimension above 1 (--quantize-vectors)"},
      {"rwkv.time_mix_k", "a vector: one dimension above 1 (--quantize-vectors)"},
      {"mlp.experts.gate_up_proj_bias", "a bias (--quantize-vectors)"},
      // A mask, which --quantize-vectors keeps too: said so, not "a bias" (which it would quantize).
      {"h.0.attn.bias", "a mask (only 0 and 1, or 0 and one value <= -100 or -inf), not weights"},
      {"mlp.experts.gate_up_proj", ""},
      {"mlp.dt_bias_scale", ""}};
  for (const TensorPlan& t : plan_checkpoint(dir.file("in.safetensors"), StreamOptions{}).tensors)
    EXPECT_EQ(t.kept, reasons.at(t.name)) << t.name;
  StreamReport report =
      quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("q.safetensors"), msptq2(), StreamOptions{}, cpu_backend());
  EXPECT_EQ(report.kept, (std::vector<std::string>{"cls_token", "h.0.attn.bias", "mlp.experts.gate_up_proj_bias",
                                                   "rwkv.time_mix_k", "score.weight"}));
  StreamOptions vectors;
  vectors.quantize_vectors = true;
  for (const TensorPlan& t : plan_checkpoint(dir.file("in.safetensors"), vectors).tensors)
    EXPECT_EQ(t.kept, t.name == "h.0.attn.bias" ? "a mask (only 0 and 1, or 0 and one value <= -100 or -inf), not weights" : "")
        << t.name;
  report = quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("q.safetensors"), msptq2(), vectors, cpu_backend());
  EXPECT_EQ(report.kept, (std::vector<std::string>{"h.0.attn.bias"}));
  EXPECT_EQ(report.tensors.size(), 6u);
}

// Under global normalisation, tensors far off the others' scale (buffers stored as weights: a rotary
// cache, a positional table, Mamba's A_log) set every weight's scale: named when they hold the
// sigma at 1.5 times or more of the rest's, each with an RMS 10 times the median tensor's or more.
TEST(CheckpointStream, TensorsThatSetEveryOthersScaleAreNamed) {
  using Named = std::vector<std::pair<std::string, WeightStats>>;
  const auto stats = [](std::size_t count, double sigma, std::uint32_t seed, double mean = 0.0) {
    WeightStats s;
    accumulate(s, test::draw(test::Law::Laplace, count, mean, sigma, seed), "t");
    return s;
  };
  const auto told = [](const Named& tensors) {
    WeightStats global;
    for (const auto& t : tensors) global = combine(global, t.second);
    return scale_setting_tensors(tensors, global);
  };
  Named weights;
  for (std::uint32_t i = 0; i < 10; ++i) weights.push_back({"layers." + std::to_string(i) + ".weight", stats(1000, 0.02, i)});
  EXPECT_EQ(told(weights), "");
  Named cache = weights;  // 50 values of RMS 1: sigma 3.7 times the rest's
  cache.push_back({"rotary.cos_cached", stats(50, 1.0, 11)});
  cache.push_back({"a.sin_cached", stats(50, 1.0, 12)});
  const std::string line = told(cache);
  EXPECT_EQ(line.rfind("with global normalisation 2 tensor(s) set every other's scale: 'a.sin_cached', "
                       "'rotary.cos_cached' (0.99% of the weights", 0), 0u) << line;
  WeightStats rest, global;
  for (const auto& t : weights) rest = combine(rest, t.second);
  for (const auto& t : cache) global = combine(global, t.second);
  char ratio[32];
  std::snprintf(ratio, sizeof ratio, "make sigma %.3g times", global.stddev() / rest.stddev());
  EXPECT_NE(line.find(ratio), std::string::npos) << line << " / " << ratio;
  Named offset = weights;  // an RMS about the global mean: a tensor far off the others' mean counts
  offset.push_back({"shifted", stats(100, 0.02, 13, 2.0)});
  EXPECT_NE(told(offset).find("'shifted'"), std::string::npos);
  for (int masks : {1, 2, 5}) {  // ones left as weights (prune.identity's masks): 9 %, 17 %, 33 % of them
    Named ones = weights;       // pull the global mean along: measured about it, none stood out
    for (int i = 0; i < masks; ++i) ones.push_back({"mask." + std::to_string(i), stats(1000, 0.0, 30, 1.0)});
    EXPECT_EQ(told(ones).rfind("with global normalisation " + std::to_string(masks) + " tensor(s) set every other's "
                               "scale: 'mask.0'", 0), 0u) << masks << ": " << told(ones);
  }
  Named near = weights;  // 5 times the median's RMS: another scale, not another kind
  near.push_back({"embed", stats(3000, 0.1, 14)});
  EXPECT_EQ(told(near), "");
  Named few = weights;  // 20 times, but two weights hardly move sigma
  few.push_back({"outliers", stats(2, 0.4, 15)});
  EXPECT_EQ(told(few), "");
  EXPECT_EQ(told({cache.back()}), "");
  Named constant;  // the rest without a spread have no scale to be set: tensors of one value
  for (int i = 0; i < 3; ++i) constant.push_back({"halves." + std::to_string(i), stats(1000, 0.0, 20, 0.5)});
  constant.push_back({"random", stats(100, 1.0, 21)});
  EXPECT_EQ(told(constant), "");
  EXPECT_EQ(told({}), "");

  // A run says so (global normalisation only); the file is written as ever.
  test::TempDir dir;
  io::TensorFile file = shard(9, "");
  std::vector<float> cosines(64 * 16);
  for (std::size_t i = 0; i < cosines.size(); ++i) cosines[i] = float(std::cos(double(i / 16) / std::pow(1e4, double(i % 16) / 16)));
  file.tensors["rotary_emb.cos_cached"] = io::f32_tensor({1, 1, 64, 16}, cosines);
  io::write_safetensors(dir.file("in.safetensors"), file);
  StreamOptions options;
  std::ostringstream warned;
  options.warnings = &warned;
  const StreamReport report =
      quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("q.safetensors"), msptq2(), options, cpu_backend());
  ASSERT_EQ(report.warnings.size(), 1u);
  EXPECT_EQ(report.warnings[0].rfind(dir.file("in.safetensors") + ": with global normalisation 1 tensor(s) set every "
                                     "other's scale: 'rotary_emb.cos_cached'", 0), 0u) << report.warnings[0];
  EXPECT_EQ(warned.str(), "nuq: warning: " + report.warnings[0] + "\n");
  options.normalisation = Normalisation::PerTensor;
  options.warnings = nullptr;
  EXPECT_TRUE(quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("q.safetensors"), msptq2(), options,
                                        cpu_backend()).warnings.empty());
}

// Per channel, a row's table (2^bits F32 levels) outweighs a short row: such tensors are named
// before the run (Mamba's conv1d.weight [d, 1, 4] comes out at 34 bits a weight); not in groups,
// and not per tensor.
TEST(CheckpointStream, RowsTooShortForTheirTablesAreToldOf) {
  test::TempDir dir;
  io::TensorFile file = shard(4, "");  // q_proj [96, 40] F32 and up_proj [24, 300] BF16: worth their tables
  file.tensors["conv1d.weight"] = io::f32_tensor({64, 1, 4}, test::draw(test::Law::Laplace, 256, 0.0, 0.02, 1));
  std::vector<float> short_rows = test::draw(test::Law::Laplace, 64 * 8, 0.0, 0.02, 2);
  file.tensors["dt_proj.weight"] = test::bf16_tensor({64, 8}, short_rows);  // 2 + 16 bytes a row against 16
  std::vector<float> mask(64 * 4);  // as short, but a mask: kept, not told of as coming out larger
  for (std::size_t i = 0; i < mask.size(); ++i) mask[i] = float(i % 4 <= i / 4 % 4);
  file.tensors["short.mask"] = io::f32_tensor({64, 4}, mask);
  io::write_safetensors(dir.file("in.safetensors"), file);
  StreamOptions options;
  options.normalisation = Normalisation::PerChannel;
  StreamReport report =
      quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("q.safetensors"), msptq2(), options, cpu_backend());
  ASSERT_EQ(report.warnings.size(), 2u);  // and the mask kept
  EXPECT_NE(report.warnings[1].find("1 mask(s) kept as they are"), std::string::npos) << report.warnings[1];
  EXPECT_EQ(report.warnings[0], dir.file("in.safetensors") + ": 2 tensor(s) of rows too short for a table of 4 levels "
                                    "each come out larger than they went in: 'conv1d.weight', 'dt_proj.weight' (--skip "
                                    "them, or use --group-size or --normalise per-tensor)");
  for (const auto& t : report.tensors)  // as the report counts them
    EXPECT_EQ(t.tensor.bytes_after >= t.tensor.bytes_before,
              t.tensor.name == "conv1d.weight" || t.tensor.name == "dt_proj.weight") << t.tensor.name;
  options.normalisation = Normalisation::PerTensor;
  EXPECT_EQ(quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("q.safetensors"), msptq2(), options,
                                      cpu_backend()).warnings.size(), 1u);  // the mask's
}

// What a user is told before a run of what is kept: F64 matrices (not quantized; named, four of
// them as three and "1 more", skipped ones left out) and a --skip that names no tensor.
TEST(CheckpointStream, KeepingF64MatricesOrSkippingNothingIsWarnedOf) {
  test::TempDir dir;
  io::TensorFile file = shard(6, "");
  for (const char* name : {"a.weight", "b.weight", "c.weight", "d.weight", "lm_head.weight"})
    file.tensors[name] = io::Tensor{io::DType::F64, {4, 8}, std::vector<std::uint8_t>(4 * 8 * 8, 0)};
  file.tensors["e.bias"] = io::Tensor{io::DType::F64, {8}, std::vector<std::uint8_t>(8 * 8, 0)};  // a vector: kept anyway
  io::write_safetensors(dir.file("in.safetensors"), file);
  StreamOptions options;
  options.skip = skip_pattern("lm_head");
  std::ostringstream told;
  options.warnings = &told;
  StreamReport report =
      quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("q.safetensors"), msptq2(), options, cpu_backend());
  ASSERT_EQ(report.warnings.size(), 1u);
  EXPECT_EQ(report.warnings[0], dir.file("in.safetensors") +
                                    ": 4 F64 tensor(s) kept as they are: nuq quantizes F32, F16 and BF16 (convert them "
                                    "to float32 to quantize them): 'a.weight', 'b.weight', 'c.weight' and 1 more");
  EXPECT_EQ(told.str(), "nuq: warning: " + report.warnings[0] + "\n");
  EXPECT_EQ(report.tensors.size(), 2u);  // q_proj and up_proj
  options.skip = skip_pattern("embed_token|lmhead");  // a typo: names nothing
  options.warnings = nullptr;
  report = quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("q.safetensors"), msptq2(), options, cpu_backend());
  ASSERT_EQ(report.warnings.size(), 2u);
  EXPECT_NE(report.warnings[0].find("5 F64 tensor(s)"), std::string::npos) << report.warnings[0];
  EXPECT_NE(report.warnings[1].find("--skip names no tensor"), std::string::npos) << report.warnings[1];
  options.skip.reset();
  file.tensors.erase("a.weight"), file.tensors.erase("b.weight"), file.tensors.erase("c.weight");
  file.tensors.erase("d.weight"), file.tensors.erase("lm_head.weight");
  // A peer's quantized module keeps its F64 scales with its I32 codes, whatever their dtype: not told.
  file.tensors["gptq.qweight"] = io::Tensor{io::DType::I32, {4, 4}, std::vector<std::uint8_t>(4 * 4 * 4, 1)};
  file.tensors["gptq.scales"] = io::Tensor{io::DType::F64, {4, 4}, std::vector<std::uint8_t>(4 * 4 * 8, 0)};
  io::write_safetensors(dir.file("in.safetensors"), file);
  report = quantize_checkpoint_files(dir.file("in.safetensors"), dir.file("q.safetensors"), msptq2(), options, cpu_backend());
  EXPECT_TRUE(report.warnings.empty());
}

}  // namespace
}  // namespace nuq
