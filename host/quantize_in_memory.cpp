#include "nuq/quantize_in_memory.h"

#include <limits>

#include "nuq/error.h"
#include "nuq/grouped.h"
#include "nuq/io/widen.h"
#include "nuq/packed.h"
#include "nuq/quantize_table.h"
#include "nuq/quantized_file.h"

namespace nuq {
namespace {

// The [rows, cols] view that is quantized: the tensor's [shape[0], rest]; grouped, [groups, G].
struct View {
  std::size_t rows = 0, cols = 0;
};

View quantized_view(const TensorInMemory& t, int bits, const InMemoryOptions& o) {
  NUQ_REQUIRE(io::is_floating(t.dtype), t.name, ": ", io::to_string(t.dtype),
              " cannot be quantized (float32, float16 or bfloat16)");
  std::size_t count = 1;
  for (std::int64_t dim : t.shape) {
    NUQ_REQUIRE(dim >= 0 && (dim == 0 || count <= std::numeric_limits<std::size_t>::max() / std::size_t(dim)), t.name,
                ": bad shape");
    count *= std::size_t(dim);
  }
  NUQ_REQUIRE(t.data || count == 0, t.name, ": no data");
  require_storable(o.normalisation, bits, t.name, o.group_size);
  NUQ_REQUIRE(!o.group_size || o.normalisation == Normalisation::PerChannel, t.name,
              ": a group size gives each group its own scale; it cannot be combined with normalisation ",
              to_string(o.normalisation), " (groups take per-channel)");
  const auto [rows, cols] = matrix_view(t.shape, count);
  if (!o.group_size) return {rows, cols};
  require_groupable(o.group_size, cols, bits, t.name);
  return {rows * (cols / o.group_size), o.group_size};
}

// `count` elements from element `first`, as the backend takes them: where they lie when it reads
// the tensor's dtype (F32 always; the CPU also F16 and BF16), otherwise widened to floats in
// `scratch`. The two give the same results bit for bit (the widening is exact).
WeightView weights_at(const TensorInMemory& t, std::size_t first, std::size_t count, float* scratch, Backend& backend) {
  const auto* bytes = static_cast<const std::uint8_t*>(t.data) + first * io::dtype_size(t.dtype);
  const WeightType type = io::weight_type(t.dtype);
  if (backend.reads(type)) return {bytes, type};
  io::widen_to_f32(t.dtype, bytes, count, scratch);
  return {scratch, WeightType::F32};
}

// Scratch for a piece to widen (none when the backend reads the dtype), grown, never shrunk.
float* scratch_for(const TensorInMemory& t, const Piece& p, std::vector<float>& scratch, Backend& backend) {
  if (!backend.reads(io::weight_type(t.dtype)) && scratch.size() < p.rows * p.cols) scratch.resize(p.rows * p.cols);
  return scratch.data();
}

// Where share `s` of piece `p` widens to in the piece's scratch: none where nothing is widened
// (the scratch is then empty, and an offset from its null pointer would be undefined).
float* share_scratch(float* piece_scratch, const Piece& p, const Piece& s) {
  return piece_scratch ? piece_scratch + (s.row - p.row) * p.cols : nullptr;
}

std::string where_of(const TensorInMemory& t, const Piece& p) {
  return t.name + " (from row " + std::to_string(p.row) + ")";
}

// A share and the piece it was cut from.
struct Share {
  std::size_t piece;
  Piece rows;
};

// The shares of pieces [first, window_end(first)) are worked on in one fork and join: every piece
// of whole rows where the backend reads the weights where they lie and may be called from every
// thread (the CPU), so that all the cores have shares to take (a piece makes at most 8); else one
// piece at a time (its widened scratch holds one piece, and a long row's map comes first). The
// cut, and so every sum joined share by share, is the same either way.
std::vector<Share> window_shares(const std::vector<Piece>& pieces, std::size_t first, std::size_t end,
                                 bool concurrent) {
  std::vector<Share> shares;
  for (std::size_t p = first; p < end; ++p)
    for (const Piece& s : shares_of(pieces[p], concurrent)) shares.push_back({p, s});
  return shares;
}

bool whole_window(const TensorInMemory& t, const std::vector<Piece>& pieces, std::size_t cols, Backend& backend) {
  return backend.concurrent_calls() && backend.reads(io::weight_type(t.dtype)) &&
         (pieces.empty() || pieces[0].cols == cols);
}

}  // namespace

WeightStats in_memory_stats(const TensorInMemory& t, const Codebook& codebook, const InMemoryOptions& o,
                            Backend& backend) {
  const View view = quantized_view(t, storage_bits(codebook), o);
  return tensor_stats(t, view.rows, view.cols, o, backend);
}

WeightStats tensor_stats(const TensorInMemory& t, std::size_t rows, std::size_t cols, const InMemoryOptions& o,
                         Backend& backend) {
  const View view{rows, cols};
  WeightStats own;
  std::vector<float> scratch;
  const std::vector<Piece> pieces = pieces_of(view.rows, view.cols, o.piece_bytes);  // as the streamed pass 1
  const bool whole = whole_window(t, pieces, view.cols, backend);
  for (std::size_t first = 0; first < pieces.size();) {
    const std::size_t end = whole ? pieces.size() : first + 1;
    float* piece_scratch = scratch_for(t, pieces[first], scratch, backend);
    const std::vector<Share> shares = window_shares(pieces, first, end, backend.concurrent_calls());
    std::vector<WeightStats> share_stats(shares.size());
    for_each_share(shares.size(), [&](std::size_t i) {
      const Piece& s = shares[i].rows;
      const WeightView w = weights_at(t, s.row * view.cols + s.col, s.rows * s.cols,
                                   share_scratch(piece_scratch, pieces[shares[i].piece], s), backend);
      share_stats[i] = locating_nonfinite(t.name, t.shape, view.cols, s, [&] {
        return backend.stats_as(w.data, w.type, s.rows * s.cols, t.name, o.nonfinite);
      });
    });
    // Each piece's shares joined first, then the piece, as the streamed pass 1 joins them: Chan's
    // combination is not associative in floating point (the last digits of a tensor's statistics).
    for (std::size_t i = 0; i < shares.size();) {
      WeightStats piece;
      for (const std::size_t p = shares[i].piece; i < shares.size() && shares[i].piece == p; ++i)
        piece = combine(piece, share_stats[i]);
      own = combine(own, piece);
    }
    first = end;
  }
  return own;
}

QuantizedTensor quantize_in_memory(const TensorInMemory& t, const Codebook& codebook, const WeightStats& global,
                                   const WeightStats& own, const InMemoryOptions& o, Backend& backend,
                                   QuantizeTotals* totals) {
  const int bits = storage_bits(codebook);
  const View view = quantized_view(t, bits, o);
  NUQ_REQUIRE(o.normalisation != Normalisation::Global || global.stddev() > 0.0, t.name,
              ": every weight has the same value; zero variance cannot be normalised");
  const bool per_row = o.normalisation == Normalisation::PerChannel;  // groups are rows of their own
  const std::size_t row_bytes = packed_row_bytes(view.cols, bits);
  QuantizedTensor q;
  q.shape = t.shape;
  q.group_size = o.group_size;
  q.matrix.codes = {view.rows, view.cols, bits, std::vector<std::uint8_t>(view.rows * row_bytes)};
  QuantizeTable shared;
  if (per_row) {  // the description records the tensor's own statistics; each row's map is in its table
    q.mean = own.mean;
    q.stddev = own.stddev();
  } else {
    const std::vector<Affine> maps =
        normalise_tensor(o.normalisation, nullptr, view.rows, view.cols, global, own, t.name, o.nonfinite, backend).maps;
    shared = make_quantize_table(codebook, bits, maps, t.name);
    q.matrix.levels = shared.levels;
    q.mean = maps[0].mean;
    q.stddev = maps[0].scale;
  }
  std::vector<float> scratch;
  Affine long_row;  // a row longer than a piece: its map, from the statistics of all its pieces
  QuantizeTotals sum;
  const std::vector<Piece> pieces = pieces_of(view.rows, view.cols, o.piece_bytes);
  const bool whole = whole_window(t, pieces, view.cols, backend);
  for (std::size_t i = 0; i < pieces.size();) {
    const std::size_t end = whole ? pieces.size() : i + 1;
    const Piece& p = pieces[i];
    if (per_row && p.cols < view.cols && p.col == 0) {  // as the streamed pass 1: the row's pieces combined
      WeightStats row;
      for (std::size_t j = i; j < pieces.size() && pieces[j].row == p.row; ++j) {
        const WeightView w = weights_at(t, p.row * view.cols + pieces[j].col, pieces[j].cols,
                                     scratch_for(t, pieces[j], scratch, backend), backend);
        row = combine(row, locating_nonfinite(t.name, t.shape, view.cols, pieces[j], [&] {
                        return backend.stats_as(w.data, w.type, pieces[j].cols, t.name, o.nonfinite);
                      }));
      }
      long_row = row_map(row, own);
    }
    // Shares of the pieces as the streamed pass cuts them, each with its rows' maps and table.
    float* piece_scratch = scratch_for(t, p, scratch, backend);
    const std::vector<Share> shares = window_shares(pieces, i, end, backend.concurrent_calls());
    std::vector<std::vector<Affine>> share_maps(shares.size());
    std::vector<std::vector<float>> share_levels(shares.size());
    std::vector<QuantizeTotals> share_totals(shares.size());
    for_each_share(shares.size(), [&](std::size_t k) {
      const Piece& s = shares[k].rows;
      const WeightView w = weights_at(t, s.row * view.cols + s.col, s.rows * s.cols,
                                   share_scratch(piece_scratch, pieces[shares[k].piece], s), backend);
      std::vector<Affine>& maps = share_maps[k];
      if (per_row)
        maps = s.cols < view.cols ? std::vector<Affine>{long_row}
                                  : normalise_tensor(Normalisation::PerChannel, w.data, w.type, s.rows, s.cols, global,
                                                     own, where_of(t, s), o.nonfinite, backend).maps;
      if (o.group_size)
        for (Affine& m : maps) m = group_map(m, own.mean);
      const QuantizeTable table = o.group_size ? grouped_quantize_table(codebook, bits, maps, t.name)
                                  : per_row    ? make_quantize_table(codebook, bits, maps, t.name)
                                               : QuantizeTable{};
      if (per_row && !o.group_size) share_levels[k] = table.levels;
      std::uint8_t* codes = q.matrix.codes.bytes.data() + s.row * row_bytes + s.col * std::size_t(bits) / 8;
      share_totals[k] = backend.quantize_as(w.data, w.type, s.rows, s.cols, per_row ? table : shared, codes);
    });
    for (std::size_t k = 0; k < shares.size(); ++k) {
      const bool row_starts = shares[k].rows.col == 0;
      if (o.group_size && row_starts)
        for (const Affine& m : share_maps[k]) q.scales.push_back(float(m.scale));
      if (row_starts) q.matrix.levels.insert(q.matrix.levels.end(), share_levels[k].begin(), share_levels[k].end());
      sum = combine(sum, share_totals[k]);
    }
    i = end;
  }
  if (o.group_size) {
    q.normalised_levels = normalised_levels(codebook, bits);
  } else if (per_row && view.rows == 0) {  // an empty tensor still has one (unused) table
    q.matrix.levels = make_quantize_table(codebook, bits,
                                          normalise_tensor(Normalisation::PerChannel, nullptr, 0, view.cols, global,
                                                           own, t.name, o.nonfinite, backend).maps)
                          .levels;
  }
  if (totals) *totals = combine(*totals, sum);
  return q;
}

}  // namespace nuq
