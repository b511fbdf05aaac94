#include "piece_reader.h"

#include <algorithm>

#include "nuq/io/widen.h"
#include "nuq/stats.h"

#include "omp_threads.h"

namespace nuq {
namespace {

// Keeps the kernel reading the file this far ahead of the window being worked on: a checkpoint on
// disk is read while the pieces before are worked on (and in large requests).
constexpr std::size_t kReadAheadBytes = std::size_t{64} << 20;

// Scratch buffers only grow: a vector grown again after shrinking would zero the bytes it regains.
template <typename T>
void grow(std::vector<T>& buffer, std::size_t size) {
  if (buffer.size() < size) buffer.resize(size);
}

}  // namespace

PieceReader::PieceReader(const io::SafetensorsReader& reader, const io::TensorEntry& entry, std::size_t cols,
                         const std::vector<Piece>& pieces, Backend& backend, PieceBuffers& buffers,
                         std::optional<Affine> fourth_about)
    : reader_(reader), entry_(entry), cols_(cols), pieces_(pieces), type_(io::weight_type(entry.dtype)),
      concurrent_(backend.concurrent_calls()), as_stored_(concurrent_ && backend.reads(type_)),
      fourth_about_(fourth_about), buffers_(buffers), element_(io::dtype_size(entry.dtype)) {
  if (buffers_.size() < std::size_t(cpu_threads())) buffers_.resize(std::size_t(cpu_threads()));
}

PieceReader::~PieceReader() {
  if (pending_.valid()) pending_.wait();
}

std::uint64_t PieceReader::offset_of(const Piece& p) const { return (p.row * cols_ + p.col) * element_; }

void PieceReader::prefetch(const Piece& p) const { reader_.prefetch(entry_.begin + offset_of(p), kReadAheadBytes); }

// Reads piece `p` into `raw` and widens it to floats in `values` (each sized for it by the caller);
// with `fourth`, adds the piece's sum of ((w - mean) / sigma)^4 to it. Outside a parallel region (the device
// path's read-ahead thread) each thread reads and widens its own blocks; inside one (a share of a
// window) the calling thread does it all.
const float* PieceReader::read_widened(const Piece& p, std::uint8_t* raw, float* values, double* fourth) const {
  constexpr std::size_t kBlock = 65536;  // weights read and widened at a time
  const std::size_t count = p.rows * p.cols;
  const std::uint64_t first = offset_of(p);
  const std::size_t blocks = (count + kBlock - 1) / kBlock;
  std::vector<double> block_fourth(fourth ? blocks : 0);
  for_each_share(blocks, [&](std::size_t b) {
    const std::size_t at = b * kBlock, n = std::min(kBlock, count - at);
    reader_.read(entry_, first + at * element_, n * element_, raw + at * element_);
    io::widen_to_f32(entry_.dtype, raw + at * element_, n, values + at);
    if (fourth)  // while in cache
      block_fourth[b] = fourth_moment(values + at, WeightType::F32, n, fourth_about_->mean, fourth_about_->scale);
  });
  if (fourth)
    for (double f : block_fourth) *fourth += f;
  return values;
}

PieceWindow PieceReader::start(std::size_t first) {
  PieceWindow window;
  window.first = first;
  if (!concurrent_) {  // one piece, one share, read ahead on the second thread
    if (first == 0) read_ahead(0);
    pending_.get();  // waits, and rethrows the read's error
    if (first + 1 < pieces_.size()) read_ahead(first + 1);
    window.last = first + 1;
    window.items = {{first, pieces_[first]}};
    return window;
  }
  // Pieces of several shares join the window while it has room; a piece of one share stays alone.
  for (std::size_t k = first; k < pieces_.size() && k - first < kWindowPieces; ++k) {
    const std::vector<Piece> shares = shares_of(pieces_[k], true);
    if (k > first && shares.size() == 1) break;
    for (const Piece& share : shares) window.items.push_back({k, share});
    window.last = k + 1;
    if (shares.size() == 1) break;
  }
  prefetch(pieces_[first]);
  return window;
}

WeightView PieceReader::weights(const PieceWindow& window, std::size_t i, double* fourth) {
  NUQ_ASSERT(!fourth == !fourth_about_, "the fourth moment is asked for when the reader is made");
  const PieceWindow::Item& item = window.items[i];
  if (!concurrent_) {
    if (fourth) *fourth += ahead_fourth_[item.piece % 2];
    return {ahead_[item.piece % 2].values.data(), WeightType::F32};
  }
  const Piece& share = item.share;
  const std::size_t count = share.rows * share.cols;
  PieceBuffer& mine = buffers_[std::size_t(thread_index())];
  grow(mine.raw, count * element_);
  std::uint8_t* raw = mine.raw.data();
  if (!as_stored_) {
    grow(mine.values, count);
    return {read_widened(share, raw, mine.values.data(), fourth), WeightType::F32};
  }
  reader_.read(entry_, offset_of(share), count * element_, raw);
  if (fourth) *fourth += fourth_moment(raw, type_, count, fourth_about_->mean, fourth_about_->scale);
  return {raw, type_};
}

void PieceReader::read_ahead(std::size_t k) {
  PieceBuffer& b = ahead_[k % 2];
  const Piece& p = pieces_[k];
  grow(b.raw, p.rows * p.cols * element_);
  grow(b.values, p.rows * p.cols);
  double& fourth = ahead_fourth_[k % 2];
  fourth = 0.0;
  pending_ = std::async(std::launch::async, [this, &b, &p, &fourth] {
    prefetch(p);
    read_widened(p, b.raw.data(), b.values.data(), fourth_about_ ? &fourth : nullptr);
  });
}

}  // namespace nuq
