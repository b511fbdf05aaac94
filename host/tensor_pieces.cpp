#include "nuq/tensor_pieces.h"

#include <algorithm>

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

}  // namespace nuq
