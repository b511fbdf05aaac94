// Training the papers' networks on the CPU: Adam (Keras' defaults: lr 1e-3, beta 0.9/0.999,
// epsilon 1e-7), batch 128, 10 epochs, shuffled each epoch; seeded and reproducible.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <vector>

#include "nuq/io/dataset.h"
#include "nuq/model.h"

namespace nuq {

struct TrainConfig {
  int epochs = 10;
  std::size_t batch = 128;
  double learning_rate = 1e-3;
  std::uint64_t seed = 1;
};

struct EpochLog {
  int epoch = 0;
  double loss = 0.0;            // mean training cross-entropy over the epoch
  double train_accuracy = 0.0;  // percent, with dropout active (as Keras reports it)
  double seconds = 0.0;
};

// Trains `model` in place. With `progress`, prints a bar per epoch and a line per finished epoch.
std::vector<EpochLog> train(Model& model, const io::Dataset& data, const TrainConfig& config,
                            std::ostream* progress = nullptr);

}  // namespace nuq
