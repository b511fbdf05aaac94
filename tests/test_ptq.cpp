// Statistics, models, the training step and Algorithm 1 on synthetic data.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <utility>

#include <nlohmann/json.hpp>

#include "bf16_tensor.h"
#include "nuq/design.h"
#include "nuq/error.h"
#include "nuq/experiment.h"
#include "nuq/io/safetensors.h"
#include "nuq/network.h"
#include "nuq/laplace.h"
#include "nuq/ptq.h"
#include "nuq/quantized_file.h"
#include "nuq/stats.h"
#include "nuq/train.h"
#include "temp_dir.h"

namespace nuq {
namespace {

// Ten classes told apart by which horizontal band of the image is bright, plus noise.
io::Dataset synthetic(std::size_t count, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> noise(0.0f, 0.3f);
  io::Dataset d;
  d.count = count;
  d.rows = d.cols = 28;
  d.images.resize(count * 784);
  d.labels.resize(count);
  for (std::size_t n = 0; n < count; ++n) {
    d.labels[n] = static_cast<std::uint8_t>(n % 10);
    for (std::size_t p = 0; p < 784; ++p) {
      const bool band = (p / 28) / 3 == d.labels[n] || (p / 28) / 3 == d.labels[n] + 1u;
      d.images[n * 784 + p] = std::min(1.0f, (band ? 0.7f : 0.0f) + noise(rng));
    }
  }
  return d;
}

TEST(Stats, WelfordMatchesTwoPassAndCombines) {
  std::mt19937 rng(1);
  std::normal_distribution<float> g(3.0f, 0.01f);
  std::vector<float> a(100001), b(777);
  for (auto& v : a) v = g(rng);
  for (auto& v : b) v = g(rng) * 5.0f;
  WeightStats s;
  accumulate(s, a, "a");
  accumulate(s, b, "b");
  double mean = 0.0, m2 = 0.0;
  for (float v : a) mean += v;
  for (float v : b) mean += v;
  mean /= double(a.size() + b.size());
  for (float v : a) m2 += (v - mean) * (v - mean);
  for (float v : b) m2 += (v - mean) * (v - mean);
  EXPECT_EQ(s.count, a.size() + b.size());
  EXPECT_NEAR(s.mean, mean, 1e-12 * std::abs(mean));
  EXPECT_NEAR(s.variance(), m2 / double(s.count), 1e-9 * m2 / double(s.count));
  try {
    accumulate(s, {1.0f, NAN}, "fc2.bias");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fc2.bias: element 1"), std::string::npos) << e.what();
  }
}

TEST(Model, ParameterCountsAreThePapers) {
  EXPECT_EQ(make_model(Architecture::Mlp, 1).parameter_count(), 669706u);
  EXPECT_EQ(make_model(Architecture::Cnn, 1).parameter_count(), 1652906u);
}

TEST(Model, SavesAndLoadsAndRejectsBadFiles) {
  test::TempDir dir;
  Model m = make_model(Architecture::Cnn, 7);
  save_model(dir.file("m.safetensors"), m);
  const Model back = load_model(dir.file("m.safetensors"));
  EXPECT_EQ(back.at("conv.weight").values, m.at("conv.weight").values);
  EXPECT_EQ(back.at("fc3.bias").values, m.at("fc3.bias").values);
  m.at("fc1.bias").values[3] = NAN;
  save_model(dir.file("nan.safetensors"), m);
  EXPECT_THROW(load_model(dir.file("nan.safetensors")), Error);
}

// A nuq model saved in half precision (nuq.save of float16 or bfloat16 arrays keeps the metadata)
// loads as the F32 model of the same values: BF16 is the top half of each F32 (truncated here, so
// exactly representable), and every F32 parameter of the file is kept.
TEST(Model, AModelStoredInBf16LoadsAsTheSameValuesInF32) {
  test::TempDir dir;
  Model m = make_model(Architecture::Mlp, 5);
  save_model(dir.file("m.safetensors"), m);
  io::TensorFile file = io::read_safetensors(dir.file("m.safetensors"));
  io::Tensor& fc1 = file.tensors.at("fc1.weight");
  std::vector<float>& expected = m.at("fc1.weight").values;
  fc1 = test::bf16_tensor(fc1.shape, expected);  // expected truncated, as the file holds it
  io::write_safetensors(dir.file("bf16.safetensors"), file);
  const Model back = load_model(dir.file("bf16.safetensors"));
  EXPECT_EQ(back.at("fc1.weight").values, expected);
  EXPECT_EQ(back.at("fc2.weight").values, m.at("fc2.weight").values);
  // Quantized, the file records each tensor's original dtype (docs/format.md).
  save_quantized(dir.file("q.safetensors"), quantize_model(back, design(DesignSpec{}).codebook));
  const QuantizedCheckpoint q = read_quantized_checkpoint(io::read_safetensors(dir.file("q.safetensors")), "q");
  EXPECT_EQ(q.dtypes.at("fc1.weight"), io::DType::BF16);
  EXPECT_EQ(q.dtypes.at("fc2.weight"), io::DType::F32);
  file.tensors.at("fc1.weight").dtype = io::DType::I16;  // the same bytes as integers: not weights
  io::write_safetensors(dir.file("i16.safetensors"), file);
  EXPECT_THROW(load_model(dir.file("i16.safetensors")), Error);
}

TEST(Network, GradientsMatchFiniteDifferences) {
  for (Architecture architecture : {Architecture::Mlp, Architecture::Cnn}) {
    Model model = make_model(architecture, 3);
    const io::Dataset data = synthetic(8, 4);
    Network network(model);
    network.forward(data.images.data(), data.count, false);
    network.backward(data.labels.data());
    const auto gradients = network.gradients();
    std::mt19937 rng(2);
    for (std::size_t k = 0; k < model.parameters.size(); ++k) {
      // The entry with the largest gradient of each parameter, nudged both ways.
      const auto& g = gradients[k];
      const std::size_t i = std::max_element(g.begin(), g.end(), [](float a, float b) { return std::abs(a) < std::abs(b); }) - g.begin();
      float& w = model.parameters[k].values[i];
      const float saved = w, h = 1e-3f;
      auto loss = [&] { network.forward(data.images.data(), data.count, false); return network.backward(data.labels.data()); };
      w = saved + h;
      const double up = loss();
      w = saved - h;
      const double down = loss();
      w = saved;
      EXPECT_NEAR((up - down) / (2.0 * h), g[i], 2e-2 * std::abs(g[i]) + 1e-4)
          << to_string(architecture) << " " << model.parameters[k].name << "[" << i << "]";
    }
  }
}

TEST(Training, TinyRunReachesALowLossAndIsReproducible) {
  const io::Dataset data = synthetic(600, 5);
  TrainConfig config;
  config.epochs = 3;
  config.batch = 32;
  Model a = make_model(Architecture::Mlp, 11), b = make_model(Architecture::Mlp, 11);
  const auto log = train(a, data, config);
  train(b, data, config);
  EXPECT_LT(log.back().loss, 0.05);
  EXPECT_LT(log.back().loss, log.front().loss);
  EXPECT_EQ(a.at("fc2.weight").values, b.at("fc2.weight").values);  // same seed, same model
  EXPECT_GT(accuracy(a, synthetic(200, 6)), 99.0);
}

// A trained model records how (nuq.training), and nuq reproduce reuses a cached model only when
// it was trained as the run asks: one of other epochs is trained anew (here, with no data in the
// data folder, that fails naming the data) rather than reported as the run's.
TEST(Training, ACachedModelIsReusedOnlyForTheSameTrainingSettings) {
  test::TempDir dir;
  TrainConfig config;
  config.epochs = 1;
  config.batch = 32;
  Model model = make_model(Architecture::Mlp, 11);
  train(model, synthetic(64, 5), config);
  EXPECT_EQ(nlohmann::json::parse(model.training),
            (nlohmann::json{{"epochs", 1}, {"batch", 32}, {"learning_rate", 1e-3}, {"seed", 1}}));
  model.dataset = "mnist";
  std::filesystem::create_directories(dir.file("out/models"));
  const std::string cached = dir.file("out/models/mnist-mlp-seed1-epochs1.safetensors");  // not the default 10 epochs
  EXPECT_EQ(cached_model_path(dir.file("out"), "mnist", "mlp", config), cached);
  EXPECT_EQ(cached_model_path("out", "fashion", "cnn", TrainConfig{}), "out/models/fashion-cnn-seed1.safetensors");
  save_model(cached, model);
  EXPECT_EQ(load_model(cached).training, model.training);
  ExperimentOptions options;
  options.data_root = dir.file("no-data");
  options.out_dir = dir.file("out");
  options.train = config;
  const TrainedModel same = load_or_train("mnist", "mlp", options);
  EXPECT_FALSE(same.trained);
  EXPECT_EQ(same.model.at("fc1.weight").values, model.at("fc1.weight").values);
  options.train.epochs = 2;
  try {
    load_or_train("mnist", "mlp", options);
    ADD_FAILURE() << "the one-epoch model was reused for two epochs";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no-data"), std::string::npos) << e.what();
  }
  // The same network trained for one epoch with another batch, under its name: trained anew.
  options.train.epochs = 1;
  options.train.batch = 64;
  EXPECT_THROW(load_or_train("mnist", "mlp", options), Error);
  model.training.clear();  // cached before nuq.training existed: taken as it is
  save_model(cached, model);
  EXPECT_FALSE(load_or_train("mnist", "mlp", options).trained);
}

// A run interrupted after epoch 1 and resumed from its checkpoint ends bit for bit where the
// uninterrupted run does: parameters, Adam's state, shuffle order and dropout all carry over.
TEST(Training, ResumesFromItsCheckpointExactly) {
  const io::Dataset data = synthetic(300, 7);
  test::TempDir dir;
  TrainConfig config;
  config.epochs = 3;
  config.batch = 32;
  Model whole = make_model(Architecture::Mlp, 12);
  const auto whole_log = train(whole, data, config);

  TrainConfig first = config;
  first.epochs = 1;
  first.checkpoint = dir.file("run.checkpoint");
  Model resumed = make_model(Architecture::Mlp, 12);
  train(resumed, data, first);
  ASSERT_TRUE(std::filesystem::exists(first.checkpoint));
  TrainConfig rest = config;
  rest.checkpoint = first.checkpoint;
  rest.resume = true;
  Model fresh_start = make_model(Architecture::Mlp, 99);  // overwritten by the checkpoint
  const auto resumed_log = train(fresh_start, data, rest);
  ASSERT_EQ(resumed_log.size(), 3u);
  for (std::size_t k = 0; k < whole.parameters.size(); ++k)
    EXPECT_EQ(fresh_start.parameters[k].values, whole.parameters[k].values) << whole.parameters[k].name;
  for (std::size_t e = 0; e < 3; ++e) EXPECT_EQ(resumed_log[e].loss, whole_log[e].loss) << "epoch " << e + 1;

  // A checkpoint of another run is refused with the setting that differs.
  TrainConfig other = rest;
  other.batch = 64;
  Model m = make_model(Architecture::Mlp, 12);
  try {
    train(m, data, other);
    ADD_FAILURE() << "a checkpoint with batch 32 was resumed with batch 64";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("batch = 32"), std::string::npos) << e.what();
  }
  // Nor is one of another data set (by name, or by its labels at the same size), one past this
  // run's epochs, or one whose optimizer state is not a run's.
  const auto refused = [&](TrainConfig c, const io::Dataset& d, const std::string& why) {
    Model model = make_model(Architecture::Mlp, 12);
    try {
      train(model, d, c);
      ADD_FAILURE() << "resumed although " << why;
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(why), std::string::npos) << message;
      // What to do is said once: a refusal that advises is not given the damaged file's advice too.
      const std::size_t advice = message.find("train anew");
      EXPECT_TRUE(advice != std::string::npos && message.find("train anew", advice + 1) == std::string::npos) << message;
    }
  };
  TrainConfig named = rest;
  named.dataset = "fashion";
  refused(named, data, "made with dataset = \"\", this run has \"fashion\"");
  io::Dataset relabelled = data;
  std::swap(relabelled.labels[0], relabelled.labels[1]);
  refused(rest, relabelled, "made with labels = ");
  TrainConfig shorter = rest;
  shorter.epochs = 2;
  refused(shorter, data, "at epoch 3, beyond this run's 2 epochs");
  io::TensorFile file = io::read_safetensors(rest.checkpoint);
  nlohmann::json meta = nlohmann::json::parse(file.metadata.at("nuq.checkpoint"));
  for (const nlohmann::json& steps : {nlohmann::json(2147483647), nlohmann::json(-5), nlohmann::json(1.5)}) {
    meta["adam_steps"] = steps;
    file.metadata["nuq.checkpoint"] = meta.dump();
    io::write_safetensors(rest.checkpoint, file);
    refused(rest, data, steps.is_number_integer() ? "should both be 30" : "must be integers");
  }
  meta["adam_steps"] = 30;  // 10 batches of 32 an epoch, 3 epochs
  const std::string words = meta["rng"].get<std::string>();
  for (const std::string& rng : {words + " 7", "-" + words, words.substr(0, words.size() / 2)}) {
    meta["rng"] = rng;  // a word more, a sign, half the words: another state, or none
    file.metadata["nuq.checkpoint"] = meta.dump();
    io::write_safetensors(rest.checkpoint, file);
    refused(rest, data, "the random generator's state");
  }
  meta["rng"] = words;
  for (const nlohmann::json& epoch : {nlohmann::json(std::uint64_t(-1)), nlohmann::json(-2)}) {
    meta["epoch"] = epoch;
    file.metadata["nuq.checkpoint"] = meta.dump();
    io::write_safetensors(rest.checkpoint, file);
    refused(rest, data, epoch.is_number_unsigned() ? "at epoch 18446744073709551615, beyond" : "epoch -2 is negative");
  }
  meta["epoch"] = 3;
  file.metadata["nuq.checkpoint"] = meta.dump();
  file.tensors.at("adam.v.fc1.weight").data[3] = 0xff;  // a negative (or NaN) second moment
  io::write_safetensors(rest.checkpoint, file);
  refused(rest, data, "adam.v.fc1.weight element 0 is ");
  // A weight that is not finite: the run diverged (or the file was damaged); quantize's option to
  // saturate such weights is no answer here.
  file = io::read_safetensors(rest.checkpoint);
  file.tensors.at("adam.v.fc1.weight").data[3] = 0;
  const float inf = std::numeric_limits<float>::infinity();
  std::memcpy(file.tensors.at("fc2.bias").data.data() + 4 * 5, &inf, 4);
  io::write_safetensors(rest.checkpoint, file);
  refused(rest, data, "tensor 'fc2.bias' element 5 is inf; training from it cannot continue");
  // A file cut short (a full disk, a copy interrupted): the reader's message, and what to do.
  std::filesystem::resize_file(rest.checkpoint, 1000);
  refused(rest, data, "runs past the end of the file (1000 bytes) (a damaged training checkpoint: remove it, or train anew");
}

TEST(Ptq, QuantizesEveryParameterToItsNearestCell) {
  Model model = make_model(Architecture::Mlp, 2);
  std::mt19937 rng(8);
  std::normal_distribution<float> bias(0.05f, 0.02f);
  for (auto& v : model.at("fc1.bias").values) v = bias(rng);
  DesignSpec spec;
  spec.method = Method::Msptq;
  const Codebook codebook = design(spec).codebook;
  PtqReport report;
  const QuantizedModel q = quantize_model(model, codebook, &report);
  const Model dq = dequantize_model(q);
  const WeightStats stats = model_stats(model);
  double signal = 0.0, noise = 0.0;
  std::size_t inside = 0;
  ASSERT_EQ(report.tensors.size(), model.parameters.size());
  for (std::size_t k = 0; k < model.parameters.size(); ++k) {
    // Each tensor's own measures (docs/report.md), from its weights in double.
    const std::vector<float>& values = model.parameters[k].values;
    double own_signal = 0.0, own_noise = 0.0, mean = 0.0, m2 = 0.0, m4 = 0.0;
    std::size_t own_inside = 0;
    for (float v : values) mean += v;
    mean /= double(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) {
      const double w = values[i];
      const double normalised = (w - stats.mean) / stats.stddev();
      const float expected = float(stats.mean + stats.stddev() * codebook.quantize(normalised));
      ASSERT_EQ(dq.parameters[k].values[i], expected) << model.parameters[k].name << "[" << i << "]";
      own_signal += w * w;
      own_noise += (w - expected) * (w - expected);
      own_inside += std::abs(normalised) <= codebook.xmax();
      m2 += (w - mean) * (w - mean);
      m4 += (w - mean) * (w - mean) * (w - mean) * (w - mean);
    }
    const TensorReport& t = report.tensors[k];
    const double n = double(values.size()), sigma = std::sqrt(m2 / n);
    EXPECT_NEAR(t.within, 100.0 * double(own_inside) / n, 1e-9) << t.name;
    if (m2 == 0.0) {  // the zero biases of an untrained MLP: no signal, some error, no kurtosis
      EXPECT_EQ(t.sqnr_ex_db, -std::numeric_limits<double>::infinity()) << t.name;
      EXPECT_EQ(t.sqnr_th_db, -std::numeric_limits<double>::infinity()) << t.name;
      EXPECT_TRUE(std::isnan(t.excess_kurtosis)) << t.name;
    } else {
      EXPECT_NEAR(t.sqnr_ex_db, 10.0 * std::log10(own_signal / own_noise), 1e-4) << t.name;
      EXPECT_NEAR(t.excess_kurtosis, n * m4 / (m2 * m2) - 3.0, 1e-5 * (1.0 + std::abs(t.excess_kurtosis))) << t.name;
      // Under global normalisation each tensor meets the codebook at its own sigma in global units.
      EXPECT_NEAR(t.sqnr_th_db, laplace_sqnr_db(codebook, sigma / stats.stddev()), 1e-6 * std::abs(t.sqnr_th_db))
          << t.name;
    }
    signal += own_signal;
    noise += own_noise;
    inside += own_inside;
  }
  // The fast pass sums blocks of weights in float: under 4e-6 of each sum, 4e-5 dB at most.
  EXPECT_NEAR(report.sqnr_ex_db, 10.0 * std::log10(signal / noise), 4e-5);
  EXPECT_NEAR(report.within, 100.0 * double(inside) / double(stats.count), 1e-12);
  EXPECT_NEAR(report.sqnr_th_db, 7.5165, 1e-4);
  EXPECT_EQ(report.tensors.size(), model.parameters.size());
  EXPECT_EQ(report.tensors.front().bytes_after, 512u * 196u + 16u);  // 784 two-bit codes = 196 bytes a row
}

// A network of `architecture` trained for one epoch on `data` (weights worth quantizing).
Model trained_once(Architecture architecture, std::uint64_t seed, const io::Dataset& data) {
  Model model = make_model(architecture, seed);
  TrainConfig config;
  config.epochs = 1;
  config.batch = 50;
  train(model, data, config);
  return model;
}

TEST(Ptq, PackedEvaluationEqualsTheDequantizedModelAndSurvivesTheFile) {
  test::TempDir dir;
  const io::Dataset data = synthetic(300, 9);
  Model model = trained_once(Architecture::Cnn, 4, data);
  DesignSpec spec;
  model.trained_on = "a test's processor";  // where it was trained stays with the quantized model
  const QuantizedModel q = quantize_model(model, design(spec).codebook);
  save_quantized(dir.file("q.safetensors"), q);
  const QuantizedModel loaded = load_quantized(dir.file("q.safetensors"));
  EXPECT_EQ(loaded.trained_on, "a test's processor");
  Model dq = dequantize_model(loaded);
  EXPECT_EQ(predict(dq, data), [&] {
    Model skeleton = dequantize_model(q);
    Network packed(skeleton, &loaded);
    return predict(packed, data);
  }());
  EXPECT_NEAR(quantized_accuracy(loaded, data), accuracy(dq, data), 1e-12);
  EXPECT_THROW(load_model(dir.file("q.safetensors")), Error);  // a quantized file is not an FP32 model
}

// Another writer may keep some of a network's parameters as they were (FP32 biases beside packed
// weights, or a whole layer): nuq eval runs the file as written, the kept layer through FP32 gemm,
// and the file survives another save and load.
TEST(Ptq, ParametersAFileKeepsAsTheyWereRunAsTheyAre) {
  test::TempDir dir;
  const io::Dataset data = synthetic(200, 11);
  const Model model = trained_once(Architecture::Mlp, 5, data);
  DesignSpec spec;
  QuantizedModel q = quantize_model(model, design(spec).codebook);
  for (const char* name : {"fc1.bias", "fc2.weight"}) {
    q.plain[name] = model.at(name).values;
    q.tensors.erase(name);
  }
  save_quantized(dir.file("mixed.safetensors"), q);
  const io::TensorFile file = io::read_safetensors(dir.file("mixed.safetensors"));
  EXPECT_EQ(file.tensors.at("fc2.weight").dtype, io::DType::F32);  // stored as it was, not described
  EXPECT_FALSE(file.tensors.count("fc2.weight.codes"));
  const QuantizedModel loaded = load_quantized(dir.file("mixed.safetensors"));
  ASSERT_EQ(loaded.plain.size(), 2u);
  EXPECT_EQ(loaded.plain.at("fc2.weight"), model.at("fc2.weight").values);
  Model expected = dequantize_model(quantize_model(model, design(spec).codebook));
  for (const char* name : {"fc1.bias", "fc2.weight"}) expected.at(name).values = model.at(name).values;
  EXPECT_EQ(quantized_predictions(loaded, data), predict(expected, data));
  EXPECT_EQ(dequantize_model(loaded).at("fc2.weight").values, model.at("fc2.weight").values);
  // A kept tensor must still be the parameter it stands for.
  io::TensorFile wrong = file;
  wrong.tensors.at("fc1.bias").shape = {2, 256};
  EXPECT_THROW(quantized_from_file(wrong, "wrong"), Error);
}

// The design in a network file's description is optional (docs/format.md): another writer may
// record none, and nuq eval runs the file from the levels its tensors hold, as it would with it.
TEST(Ptq, ANetworkFileWithoutItsDesignRunsFromTheLevelsItHolds) {
  test::TempDir dir;
  const io::Dataset data = synthetic(200, 12);
  const Model model = trained_once(Architecture::Mlp, 6, data);
  const QuantizedModel q = quantize_model(model, design(DesignSpec{}).codebook);
  save_quantized(dir.file("q.safetensors"), q);
  io::TensorFile file = io::read_safetensors(dir.file("q.safetensors"));
  nlohmann::json description = nlohmann::json::parse(file.metadata.at("nuq.quantized"));
  ASSERT_EQ(description.erase("codebook"), 1u);
  file.metadata["nuq.quantized"] = description.dump();
  const QuantizedModel bare = quantized_from_file(file, "bare");
  EXPECT_FALSE(bare.codebook);
  const std::vector<std::uint8_t> expected = quantized_predictions(q, data);
  EXPECT_EQ(quantized_predictions(bare, data), expected);
  save_quantized(dir.file("bare.safetensors"), bare);  // written again, still without a design
  const QuantizedModel again = load_quantized(dir.file("bare.safetensors"));
  EXPECT_FALSE(again.codebook);
  EXPECT_EQ(quantized_predictions(again, data), expected);
}

// Checks every dequantized weight against its group's two-pass statistics (a group is a tensor,
// or a row of its [rows, cols] view with per-channel normalisation) and returns the extremes of
// the normalised weights in `range`.
void check_against_group_statistics(const Model& model, const Model& dq, const Codebook& codebook, bool per_channel,
                                    WeightRange& range) {
  range = {INFINITY, -INFINITY};
  for (std::size_t k = 0; k < model.parameters.size(); ++k) {
    const Parameter& p = model.parameters[k];
    const std::size_t rows = per_channel && p.shape.size() > 1 ? std::size_t(p.shape[0]) : 1;
    const std::size_t cols = p.values.size() / rows;
    for (std::size_t r = 0; r < rows; ++r) {
      const float* w = p.values.data() + r * cols;
      double mean = 0.0, square = 0.0;
      for (std::size_t i = 0; i < cols; ++i) mean += w[i];
      mean /= double(cols);
      for (std::size_t i = 0; i < cols; ++i) square += (w[i] - mean) * (w[i] - mean);
      const double stddev = std::sqrt(square / double(cols));
      for (std::size_t i = 0; i < cols; ++i) {
        const float got = dq.parameters[k].values[r * cols + i];
        if (stddev == 0.0) {  // stored exactly, no division by zero
          ASSERT_EQ(got, w[i]) << p.name << " row " << r;
          continue;
        }
        const double normalised = (w[i] - mean) / stddev;
        range.min = std::min(range.min, normalised), range.max = std::max(range.max, normalised);
        ASSERT_NEAR(got, mean + stddev * codebook.quantize(normalised), 1e-6 + 1e-6 * stddev)
            << p.name << " row " << r << " [" << i << "]";
      }
    }
  }
}

TEST(Ptq, PerTensorNormalisationUsesEachTensorsOwnStatistics) {
  test::TempDir dir;
  Model model = make_model(Architecture::Cnn, 3);
  std::mt19937 rng(21);
  std::normal_distribution<float> wide(0.4f, 0.9f);  // a tensor far out in the global distribution
  for (auto& v : model.at("conv.weight").values) v = wide(rng);
  std::fill(model.at("fc2.bias").values.begin(), model.at("fc2.bias").values.end(), -0.125f);  // constant
  DesignSpec spec;
  spec.method = Method::Sptq;
  const Codebook codebook = design(spec).codebook;
  PtqReport report;
  const QuantizedModel q = quantize_model(model, codebook, &report, Normalisation::PerTensor);
  save_quantized(dir.file("q.safetensors"), q);
  const QuantizedModel loaded = load_quantized(dir.file("q.safetensors"));
  EXPECT_EQ(loaded.normalisation, Normalisation::PerTensor);
  WeightRange expected;
  check_against_group_statistics(model, dequantize_model(loaded), codebook, false, expected);
  EXPECT_NEAR(report.w_min, expected.min, 1e-9);
  EXPECT_NEAR(report.w_max, expected.max, 1e-9);
  const WeightRange range = normalised_range(model, Normalisation::PerTensor);
  EXPECT_NEAR(range.min, expected.min, 1e-9);
  // The conv tensor's outliers are clipped hard by the global normalisation and not by its own.
  PtqReport global;
  quantize_model(model, codebook, &global, Normalisation::Global);
  EXPECT_LT(report.tensors.front().rmse, 0.5 * global.tensors.front().rmse);
  EXPECT_EQ(report.tensors.front().name, "conv.weight");
  EXPECT_THROW(parse_normalisation("layer"), Error);
}

TEST(Ptq, PerChannelNormalisationUsesEachRowsOwnStatistics) {
  test::TempDir dir;
  Model model = make_model(Architecture::Cnn, 5);
  // fc1's output channels at scales from 0.1 to 10: one map per tensor fits none of them well.
  Parameter& fc1 = model.at("fc1.weight");
  const std::size_t cols = fc1.values.size() / 512;
  for (std::size_t r = 0; r < 512; ++r)
    for (std::size_t c = 0; c < cols; ++c) fc1.values[r * cols + c] *= float(std::pow(10.0, double(r % 5) / 2.0 - 1.0));
  std::fill_n(model.at("fc2.weight").values.begin() + 3 * 512, 512, 0.3f);  // a constant row
  DesignSpec spec;
  spec.method = Method::Msptq;
  const Codebook codebook = design(spec).codebook;
  PtqReport report;
  const QuantizedModel q = quantize_model(model, codebook, &report, Normalisation::PerChannel);
  EXPECT_EQ(q.tensors.at("fc1.weight").matrix.levels.size(), 512u * 4u);  // a table per row
  EXPECT_EQ(q.tensors.at("fc1.bias").matrix.levels.size(), 4u);            // a vector is one row
  save_quantized(dir.file("q.safetensors"), q);
  const QuantizedModel loaded = load_quantized(dir.file("q.safetensors"));
  EXPECT_EQ(loaded.normalisation, Normalisation::PerChannel);
  EXPECT_EQ(io::read_safetensors(dir.file("q.safetensors")).tensors.at("fc1.weight.codebook").shape,
            (std::vector<std::int64_t>{512, 4}));
  Model dq = dequantize_model(loaded);
  WeightRange expected;
  check_against_group_statistics(model, dq, codebook, true, expected);
  EXPECT_NEAR(report.w_min, expected.min, 1e-9);
  EXPECT_NEAR(report.w_max, expected.max, 1e-9);
  const WeightRange range = normalised_range(model, Normalisation::PerChannel);
  EXPECT_NEAR(range.max, expected.max, 1e-9);
  // Each scale gets its own cells: fc1's rows at scale 0.1 keep their signal, while the tensor's
  // map (set by the rows at scale 10) rounds them all to its innermost levels.
  const Model per_tensor = dequantize_model(quantize_model(model, codebook, nullptr, Normalisation::PerTensor));
  const auto small_rows_sqnr_db = [&](const Model& quantized) {
    double signal = 0.0, noise = 0.0;
    for (std::size_t r = 0; r < 512; r += 5)
      for (std::size_t c = 0; c < cols; ++c) {
        const double w = fc1.values[r * cols + c], e = w - quantized.at("fc1.weight").values[r * cols + c];
        signal += w * w, noise += e * e;
      }
    return 10.0 * std::log10(signal / noise);
  };
  EXPECT_GT(small_rows_sqnr_db(dq), 6.0);  // a Laplacian codebook on uniform rows: about 8.6 dB
  EXPECT_LT(small_rows_sqnr_db(per_tensor), 1.0);
  // The packed network takes each row's table (qgemm) and agrees with the dequantized one.
  const io::Dataset data = synthetic(200, 4);
  EXPECT_NEAR(quantized_accuracy(loaded, data), accuracy(dq, data), 1e-12);
  // 16-bit codes would need 65536 levels per row: refused, naming the choice to make instead.
  spec.method = Method::Uniform;
  spec.bits = 12;
  try {
    quantize_model(model, design(spec).codebook, nullptr, Normalisation::PerChannel);
    ADD_FAILURE() << "12-bit per-channel codes were accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("per-tensor"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("stored at 16 bits: 65536 levels per row"), std::string::npos) << e.what();
  }
}

TEST(Ptq, RejectsModelsThatCannotBeNormalised) {
  Model flat = make_model(Architecture::Mlp, 1);
  for (auto& p : flat.parameters) std::fill(p.values.begin(), p.values.end(), 0.25f);
  DesignSpec spec;
  EXPECT_THROW(quantize_model(flat, design(spec).codebook), Error);
  Model broken = make_model(Architecture::Mlp, 1);
  broken.at("fc3.weight").values[17] = INFINITY;
  EXPECT_THROW(quantize_model(broken, design(spec).codebook), Error);
}

}  // namespace
}  // namespace nuq
