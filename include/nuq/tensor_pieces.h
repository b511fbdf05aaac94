// How a tensor is cut into bounded pieces of rows, shared by the streamed checkpoint quantizer
// (checkpoint_stream.h) and the in-memory one (quantize_in_memory.h). Statistics combined across
// pieces depend, in their last bits, on where the tensor was cut; both cut it here, the same way,
// so that the Python binding's codes are those `nuq quantize` writes, byte for byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "nuq/cpu_threads.h"
#include "nuq/error.h"

namespace nuq {

// The widened (float) bytes processed at a time unless a caller asks otherwise: small enough that
// widening, statistics, quantization and the fourth moment find a piece in the processor's cache,
// large enough for every core.
constexpr std::size_t kPieceBytes = std::size_t{4} << 20;

// Rows [row, row + rows) and, for rows too long for one piece, columns [col, col + cols) of a
// single row (col a multiple of 64, so that every code width packs whole bytes).
struct Piece {
  std::size_t row, rows, col, cols;
};

// Whether pieces_of(rows, cols, piece_bytes) holds every row whole (else each row is cut into
// pieces of columns).
bool whole_rows(std::size_t cols, std::size_t piece_bytes);

// The pieces of a [rows, cols] matrix, in order, each at most `piece_bytes` of floats (at least one
// row, or 64 columns of one).
std::vector<Piece> pieces_of(std::size_t rows, std::size_t cols, std::size_t piece_bytes);

// A piece cut into shares of whole rows when the backend may be called from several threads at
// once (Backend::concurrent_calls): each share is read, widened and worked on by one thread, in its
// own cache (for_each_share: the in-memory quantizer forks and joins per piece, the streamed one
// per window of pieces, host/piece_reader.h). Shares hold at least 32 Ki weights and are at most
// 8, cut by the piece's size alone (never the core count), so that statistics joined share by
// share are the same on every machine. A piece of one row, a piece under 64 Ki weights (a fork and
// join would cost more than it saves) or a backend that is not concurrent is one share, and the
// backend spreads it over the cores itself.
// Statistics are combined share by share in this order, by both quantizers.
std::vector<Piece> shares_of(const Piece& piece, bool concurrent);

// The place of element `flat` (in row-major order) in a tensor of `shape`: "[1, 97]", "[]" for a
// scalar.
std::string element_place(const std::vector<std::int64_t>& shape, std::size_t flat);

// work(), with a NaN or Inf it meets among the weights of `share` named by its place in the whole
// tensor, after `where` (the file and the tensor). The share's weights are contiguous rows of
// share.cols from (share.row, share.col) of a [rows, cols] view of a tensor of `shape` (a grouped
// view too: its rows are the tensor's in order), so a backend's index within them says where.
template <typename Work>
auto locating_nonfinite(const std::string& where, const std::vector<std::int64_t>& shape, std::size_t cols,
                        const Piece& share, const Work& work) -> decltype(work()) {
  try {
    return work();
  } catch (const NonFiniteWeight& e) {
    const std::size_t flat = share.row * cols + share.col + e.index / share.cols * cols + e.index % share.cols;
    throw NonFiniteWeight(where, flat, e.value, element_place(shape, flat));
  }
}

// Runs work(i) for i in [0, count), spread over the threads when count > 1 (so a backend called
// inside runs on the calling thread alone), each thread taking the next i when done (callers keep
// a result per i and join them in order, so nothing depends on which thread took which), and
// rethrows the exception of the lowest i that failed, as it was thrown (a NonFiniteWeight stays
// one, which a caller may treat apart from a failed read): the one a serial loop would have met.
template <typename Work>
void for_each_share(std::size_t count, const Work& work) {
  std::exception_ptr error;
  auto failed = static_cast<std::ptrdiff_t>(count);
#pragma omp parallel for schedule(dynamic, 1) if (count > 1) num_threads(cpu_threads())
  for (std::ptrdiff_t i = 0; i < std::ptrdiff_t(count); ++i) {
    try {
      work(std::size_t(i));
    } catch (...) {
#pragma omp critical(nuq_share_error)
      if (i < failed) failed = i, error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace nuq
