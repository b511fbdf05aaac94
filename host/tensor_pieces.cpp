#include "nuq/tensor_pieces.h"

#include <algorithm>

#include "omp_threads.h"

namespace nuq {

std::vector<Piece> pieces_of(std::size_t rows, std::size_t cols, std::size_t piece_bytes) {
  std::vector<Piece> pieces;
  const std::size_t per_piece = std::max<std::size_t>(1, piece_bytes / sizeof(float));
  if (cols <= per_piece) {
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
  constexpr std::size_t kMinShare = 32768;  // weights
  const auto cores = std::size_t(max_threads());
  const std::size_t threads = concurrent ? std::min({cores, p.rows, p.rows * p.cols / kMinShare}) : 1;
  if (threads <= 1) return {p};
  std::vector<Piece> shares;
  for (std::size_t i = 0; i < threads; ++i) {
    const std::size_t first = p.rows * i / threads, last = p.rows * (i + 1) / threads;
    shares.push_back({p.row + first, last - first, p.col, p.cols});
  }
  return shares;
}

}  // namespace nuq
