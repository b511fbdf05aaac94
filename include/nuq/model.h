// The papers' two networks and their parameters.
//   MLP: 784 -> 512 -> 512 -> 10, ReLU, dropout 0.2 after each hidden layer (669,706 parameters).
//   CNN: conv 16 filters 3x3 (valid) -> ReLU -> max-pool 2x2 -> flatten (16 x 13 x 13, channel
//        first) -> 512 -> 512 -> 10, dropout 0.5 after each hidden layer (1,652,906 parameters).
// Parameters are named as PyTorch would name them (fc1.weight [out, in], conv.weight
// [16, 1, 3, 3], ...), so a saved model opens in PyTorch's safetensors loader.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "nuq/io/safetensors.h"
#include "nuq/stats.h"

namespace nuq {

enum class Architecture { Mlp, Cnn };

std::string to_string(Architecture architecture);
Architecture parse_architecture(const std::string& name);  // "mlp" or "cnn"

struct Parameter {
  std::string name;
  std::vector<std::int64_t> shape;
  std::vector<float> values;
  io::DType stored_as = io::DType::F32;  // as its file stored it: F16 and BF16 widen exactly to values
};

struct Model {
  Architecture architecture = Architecture::Mlp;
  std::vector<Parameter> parameters;  // in the order of the forward pass
  // The data set it was trained on ("mnist" or "fashion"; empty when unknown): saved as
  // nuq.dataset so that `nuq eval` tests it on the right images without being told.
  std::string dataset;
  // Where it was trained (nuq/platform.h summary; empty when unknown), saved as nuq.trained_on:
  // the same seed reproduces the weights bit for bit only on the same OpenBLAS kernel.
  std::string trained_on;
  // How it was trained (train.h's training_record: epochs, batch, learning rate, seed; empty when
  // unknown), saved as nuq.training: `nuq reproduce` reuses a cached model only for the same.
  std::string training;
  // Every other key of its file's __metadata__ (user_metadata: a user's notes, another tool's
  // keys), written again into every file made from it: quantized, and restored from that.
  std::map<std::string, std::string> metadata{};

  Parameter& at(const std::string& name);
  const Parameter& at(const std::string& name) const;
  std::size_t parameter_count() const;
  double dropout() const { return architecture == Architecture::Mlp ? 0.2 : 0.5; }
};

// Glorot-uniform weights and zero biases (Keras' defaults, as the paper used), seeded.
Model make_model(Architecture architecture, std::uint64_t seed);

// The network a file records in nuq.architecture; throws nuq::Error naming `name` when there is
// none (`otherwise` says what the file then is) or it is unknown.
Architecture recorded_architecture(const io::TensorFile& file, const std::string& name, const std::string& otherwise);

// The data set a file records in nuq.dataset ("mnist" or "fashion"), or "" when it records none.
// Throws nuq::Error naming `name` for any other value of nuq.dataset. A training checkpoint that
// predates that key is read for the data set its run's settings name, where they name mnist or
// fashion (anything else there is no record).
std::string recorded_dataset(const io::TensorFile& file, const std::string& name);

// A file of one of nuq's networks (a model, a quantized model, a training checkpoint) read whole,
// once its header records nuq.architecture (else the error recorded_architecture gives, with
// `otherwise`) and its size is one that such a file can have (every parameter in F64 beside Adam's
// two moments, tables of 256 levels per row or of 65,536 per tensor, 64 MiB of header and shuffle
// order): another tool's checkpoint, or a network file grown by GBs of other tensors, is refused
// from its header rather than read into memory first.
io::TensorFile read_network_file(const std::string& path, const std::string& otherwise);

// Whether `input` is one of nuq's own networks (a single file whose header records
// nuq.architecture), which commands take whole through Algorithm 1; anything else (another file, a
// folder of shards, an index) is a checkpoint. Only the header is read.
bool is_nuq_network(const std::string& input);
// The metadata of `input` when it is one of nuq's networks (as is_nuq_network), else none: for
// callers that go on to ask what the network file is (is_training_checkpoint) without reading its
// header again.
std::optional<std::map<std::string, std::string>> nuq_network_metadata(const std::string& input);
// The same from the header's metadata, already read (a file given as `input`, not a folder or an
// index, whose header records nuq.architecture).
bool is_nuq_network(const std::string& input, const std::map<std::string, std::string>& metadata);

// Whether a file's metadata is that of nuq train's checkpoint (a network's parameters beside Adam's
// moments and the shuffle order, written after every epoch): `nuq eval` and `bitrate --model` read
// its parameters, while `nuq quantize` takes the model nuq train saves when it finishes.
bool is_training_checkpoint(const std::map<std::string, std::string>& metadata);

// safetensors with {"format": "pt", "nuq.architecture": "mlp"|"cnn", "nuq.dataset": ...}; load validates every
// parameter's presence, shape and finiteness. Both throw nuq::Error naming the file.
void save_model(const std::string& path, const Model& model);
// Reads a model written by save_model. A NaN or Inf parameter is an error naming the tensor and
// the index unless `nonfinite` is Skip (the caller handles them: quantize_model saturates them).
Model load_model(const std::string& path, NonFinite nonfinite = NonFinite::Reject);
// The keys of `metadata` that are neither nuq's own (nuq.*) nor "format": what files made from a
// model carry over as they were.
std::map<std::string, std::string> user_metadata(const std::map<std::string, std::string>& metadata);
Model model_from_file(const io::TensorFile& file, const std::string& name, NonFinite nonfinite = NonFinite::Reject);

}  // namespace nuq
