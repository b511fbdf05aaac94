// Training the papers' networks on the CPU: Adam (Keras' defaults: lr 1e-3, beta 0.9/0.999,
// epsilon 1e-7), batch 128, 10 epochs, shuffled each epoch; seeded and reproducible.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "nuq/io/dataset.h"
#include "nuq/model.h"

namespace nuq {

struct TrainConfig {
  int epochs = 10;
  std::size_t batch = 128;
  double learning_rate = 1e-3;
  std::uint64_t seed = 1;
  // The data set's name ("mnist", "fashion"): a checkpoint records it, and a resume on another
  // data set is refused (as one on other labels is).
  std::string dataset;
  // When set, the whole training state (parameters, Adam's moments and step, the shuffle order,
  // the random generator, the log) is written here atomically after every epoch.
  std::string checkpoint;
  // Continue from `checkpoint` when it exists: the result is bit for bit the uninterrupted run's.
  // The checkpoint must come from the same architecture, data set (name, size and labels), batch,
  // rate and seed, at an epoch no later than `epochs` (epochs may grow: training on from a
  // finished run is allowed).
  bool resume = false;
};

struct EpochLog {
  int epoch = 0;
  double loss = 0.0;            // mean training cross-entropy over the epoch
  double train_accuracy = 0.0;  // percent, with dropout active (as Keras reports it)
  double seconds = 0.0;
};
// JSON {"epoch", "loss", "train_accuracy", "seconds"}: reports, `nuq train --json`, checkpoints.
void to_json(nlohmann::json& j, const EpochLog& e);
void from_json(const nlohmann::json& j, EpochLog& e);

// Trains `model` in place. With `progress`, prints a bar per epoch and a line per finished epoch.
// Returns the log of every epoch, those before a resumed checkpoint included. The caller removes
// the checkpoint once it has saved the final model.
std::vector<EpochLog> train(Model& model, const io::Dataset& data, const TrainConfig& config,
                            std::ostream* progress = nullptr);

// What a model records of how it was trained (Model::training): the epochs, batch, learning rate
// and seed of `config`, as JSON text. train() sets it.
std::string training_record(const TrainConfig& config);

}  // namespace nuq
