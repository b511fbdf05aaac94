// One tensor held in memory in its own dtype (F32, F16 or BF16: a numpy array, a PyTorch tensor)
// quantized as the streamed checkpoint quantizer (checkpoint_stream.h) quantizes one of a file:
// the same pieces of rows (tensor_pieces.h), widened to float one piece at a time, the same
// statistics, maps, tables and group scales, so the codes, levels and scales are those
// `nuq quantize` writes. F32 is read where it lies; beyond the codes, the memory used is one
// widened piece (F16/BF16) and the per-row tables. The Python binding's path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "nuq/backend.h"
#include "nuq/codebook.h"
#include "nuq/io/safetensors.h"
#include "nuq/normalisation.h"
#include "nuq/ptq.h"
#include "nuq/tensor_pieces.h"

namespace nuq {

// Where a tensor's elements lie (C order, little-endian, aligned to their size) and what they are.
struct TensorInMemory {
  const void* data = nullptr;
  io::DType dtype = io::DType::F32;
  std::vector<std::int64_t> shape;
  std::string name;  // names the tensor in errors
};

struct InMemoryOptions {
  Normalisation normalisation = Normalisation::Global;
  NonFinite nonfinite = NonFinite::Reject;
  // 0, or groups of this many weights along a row, each with its own scale (grouped.h); takes
  // per-channel normalisation, as `nuq quantize --group-size` does.
  std::size_t group_size = 0;
  std::size_t piece_bytes = kPieceBytes;
};

// Pass 1: the tensor's statistics, combined over its pieces as the streamed pass 1 combines them.
// Checks what pass 2 would refuse (dtype, a storable width, the group size) before any work.
WeightStats in_memory_stats(const TensorInMemory& tensor, const Codebook& codebook, const InMemoryOptions& options,
                            Backend& backend);

// The statistics of `tensor` read as the [rows, cols] matrix, combined over its pieces as the
// streamed pass 1 combines them: every path that quantizes the same weights (a checkpoint streamed,
// a state dict from Python, a nuq model's parameters) gets the same bits. No checks of pass 2.
WeightStats tensor_stats(const TensorInMemory& tensor, std::size_t rows, std::size_t cols,
                         const InMemoryOptions& options, Backend& backend);

// Pass 2: the tensor's codes under `global` (every tensor quantized together: Normalisation::Global)
// and `own` (in_memory_stats of this one). Adds the pass's totals to `totals` when given.
QuantizedTensor quantize_in_memory(const TensorInMemory& tensor, const Codebook& codebook, const WeightStats& global,
                                   const WeightStats& own, const InMemoryOptions& options, Backend& backend,
                                   QuantizeTotals* totals = nullptr);

}  // namespace nuq
