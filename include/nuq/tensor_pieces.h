// How a tensor is cut into bounded pieces of rows, shared by the streamed checkpoint quantizer
// (checkpoint_stream.h) and the in-memory one (quantize_in_memory.h). Statistics combined across
// pieces depend, in their last bits, on where the tensor was cut; both cut it here, the same way,
// so that the Python binding's codes are those `nuq quantize` writes, byte for byte.
#pragma once

#include <cstddef>
#include <vector>

namespace nuq {

// The widened (float) bytes processed at a time unless a caller asks otherwise.
constexpr std::size_t kPieceBytes = std::size_t{32} << 20;

// Rows [row, row + rows) and, for rows too long for one piece, columns [col, col + cols) of a
// single row (col a multiple of 64, so that every code width packs whole bytes).
struct Piece {
  std::size_t row, rows, col, cols;
};

// The pieces of a [rows, cols] matrix, in order, each at most `piece_bytes` of floats (at least one
// row, or 64 columns of one).
std::vector<Piece> pieces_of(std::size_t rows, std::size_t cols, std::size_t piece_bytes);

}  // namespace nuq
