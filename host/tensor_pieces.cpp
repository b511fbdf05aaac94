#include "nuq/tensor_pieces.h"

#include <algorithm>


namespace nuq {

namespace {
std::size_t weights_per_piece(std::size_t piece_bytes) { return std::max<std::size_t>(1, piece_bytes / sizeof(float)); }
}  // namespace

// A piece of columns holds 64 at least (whole bytes at every width), so rows of up to 64 are whole
// in any pieces.
bool whole_rows(std::size_t cols, std::size_t piece_bytes) {
  return cols <= std::max<std::size_t>(weights_per_piece(piece_bytes), 64);
}

std::vector<Piece> pieces_of(std::size_t rows, std::size_t cols, std::size_t piece_bytes) {
  std::vector<Piece> pieces;
  const std::size_t per_piece = weights_per_piece(piece_bytes);
  if (whole_rows(cols, piece_bytes)) {
    const std::size_t rows_per_piece = std::max<std::size_t>(1, per_piece / std::max<std::size_t>(cols, 1));
    for (std::size_t r = 0; r < rows; r += rows_per_piece) pieces.push_back({r, std::min(rows_per_piece, rows - r), 0, cols});
    return pieces;
  }
  const std::size_t cols_per_piece = std::max<std::size_t>(64, per_piece / 64 * 64);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; c += cols_per_piece) pieces.push_back({r, 1, c, std::min(cols_per_piece, cols - c)});
  return pieces;
}

std::vector<Piece> shares_of(const Piece& p, bool concurrent) {
  // Cut by the piece's size alone, never by the core count: statistics are joined share by share,
  // so the same cut on every machine gives the same sums. A 4 MiB piece makes 8 shares, which the
  // threads take as they come free (the streamed quantizer works on 8 pieces at once); 32 shares
  // of 32 Ki weights cost a quarter more time on 2 cores than 8.
  constexpr std::size_t kMinShare = 32768, kMaxShares = 8;  // weights; shares
  const std::size_t threads = concurrent ? std::min({kMaxShares, p.rows, p.rows * p.cols / kMinShare}) : 1;
  if (threads <= 1) return {p};
  std::vector<Piece> shares;
  for (std::size_t i = 0; i < threads; ++i) {
    const std::size_t first = p.rows * i / threads, last = p.rows * (i + 1) / threads;
    shares.push_back({p.row + first, last - first, p.col, p.cols});
  }
  return shares;
}

std::string element_place(const std::vector<std::int64_t>& shape, std::size_t flat) {
  std::vector<std::size_t> place(shape.size());
  for (std::size_t d = shape.size(); d-- > 0;) {
    const auto extent = static_cast<std::size_t>(shape[d]);  // not 0: the tensor holds element `flat`
    place[d] = flat % extent;
    flat /= extent;
  }
  std::string text = "[";
  for (std::size_t d = 0; d < place.size(); ++d) text += (d ? ", " : "") + std::to_string(place[d]);
  return text + "]";
}

}  // namespace nuq
