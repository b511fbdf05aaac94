// Where the weights of a tensor's pieces come from in the streamed checkpoint quantizer
// (checkpoint_stream.cpp, stream_run.cpp), and how its pieces meet the backend: private to the library.
//
// With a concurrent backend (the CPU), pieces are taken a window at a time: up to kWindowPieces
// consecutive pieces, every share of each (shares_of, the cut the in-memory quantizer makes too),
// worked on in one parallel region with a dynamic schedule. Each share is read by the thread that
// works on it, into its part of one buffer, as the file stores it when the backend reads the dtype
// (the CPU widens BF16 and F16 in registers) or else widened to floats, into a buffer of the
// thread's own that stays in its cache (one buffer for the whole window was measured slower), while
// the kernel reads the file ahead. One fork and join per window rather than per piece, and a thread that finishes its
// share early takes the next rather than waiting: the results are kept per share and joined in
// order afterwards, so they do not depend on which thread did what.
//
// A piece of one share (one row, or under 64 Ki weights) is a window of its own, worked on outside
// any parallel region, so that the backend spreads it over the cores itself as the in-memory
// quantizer does.
//
// With a device backend every window is one piece of one share: piece k + 1 is read and widened on
// a second thread, into the other of two buffers, while the backend works on piece k.
#pragma once

#include <cstddef>
#include <cstdint>
#include <future>
#include <optional>
#include <string>
#include <vector>

#include "nuq/backend.h"
#include "nuq/error.h"
#include "nuq/io/safetensors_stream.h"
#include "nuq/tensor_pieces.h"
#include "nuq/weight_type.h"

namespace nuq {

// Pieces taken together in one parallel region at most: enough to spread the serial work between
// windows (writing, read-ahead advice, progress) and the threads' uneven finishes thin, few enough
// that the window's buffer stays a few MiB.
constexpr std::size_t kWindowPieces = 8;

// A share's raw bytes and, when the backend takes floats, its weights widened: scratch that only
// grows, one per thread (PieceBuffers).
struct PieceBuffer {
  std::vector<std::uint8_t> raw;
  std::vector<float> values;
};

// Consecutive pieces [first, last) and their shares, piece after piece.
struct PieceWindow {
  struct Item {
    std::size_t piece;  // index into the tensor's pieces
    Piece share;
  };
  std::size_t first = 0, last = 0;
  std::vector<Item> items;
};

// One PieceBuffer per thread, kept from tensor to tensor.
using PieceBuffers = std::vector<PieceBuffer>;

class PieceReader {
 public:
  // The pieces of a [rows, cols] tensor `entry` of `reader`. With `fourth_about` (the tensor's mean and
  // sigma), each share's sum of ((w - mean) / sigma)^4 is taken as it is read (pass 2).
  PieceReader(const io::SafetensorsReader& reader, const io::TensorEntry& entry, std::size_t cols,
              const std::vector<Piece>& pieces, Backend& backend, PieceBuffers& buffers,
              std::optional<Affine> fourth_about = std::nullopt);
  ~PieceReader();
  PieceReader(const PieceReader&) = delete;
  PieceReader& operator=(const PieceReader&) = delete;

  // Readies the window that begins at piece `first` (0, then each window's `last`).
  PieceWindow start(std::size_t first);
  // The weights of item i of the window, as stored or as floats, valid until the calling thread
  // asks for another item's or the next window starts (called from the item's thread), and with `fourth` the share's sum of ((w - mean) / sigma)^4.
  WeightView weights(const PieceWindow& window, std::size_t i, double* fourth = nullptr);

 private:
  void read_ahead(std::size_t k);
  std::uint64_t offset_of(const Piece& p) const;
  const float* read_widened(const Piece& p, std::uint8_t* raw, float* values, double* fourth) const;
  void prefetch(const Piece& p) const;

  const io::SafetensorsReader& reader_;
  const io::TensorEntry& entry_;
  const std::size_t cols_;
  const std::vector<Piece>& pieces_;
  const WeightType type_;
  const bool concurrent_, as_stored_;
  const std::optional<Affine> fourth_about_;  // mean and sigma: the terms are of normalised weights
  PieceBuffers& buffers_;
  const std::size_t element_;
  PieceBuffer ahead_[2];
  double ahead_fourth_[2] = {0.0, 0.0};
  std::future<void> pending_;
};

}  // namespace nuq
