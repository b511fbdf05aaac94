// Any safetensors checkpoint (a PyTorch state dict: F32, F16 or BF16 tensors of any names and
// shapes), quantized tensor by tensor with one codebook, and back, in the one quantized format
// (quantized_file.h, docs/format.md). Tensors that are not floating point (integer buffers, step
// counters) are copied unchanged.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nuq/backend.h"
#include "nuq/codebook.h"
#include "nuq/io/safetensors.h"
#include "nuq/io/safetensors_stream.h"
#include "nuq/ptq.h"
#include "nuq/quantized_file.h"
#include "nuq/sharded_checkpoint.h"

namespace nuq {

// One floating tensor (`values`, `shape`) quantized as quantize_checkpoint quantizes each: codes of
// the [shape[0], rest] view at storage_bits(codebook), levels in the tensor's units under
// `normalisation` (`global`: the statistics every tensor is normalised with; `own`: this tensor's,
// both from backend.stats). The map recorded in mean/stddev is the tensor's (per-channel: its own
// statistics). Adds the pass's totals to `totals` when given. `where` names the tensor in errors.
QuantizedTensor quantize_tensor(const float* values, const std::vector<std::int64_t>& shape, const Codebook& codebook,
                                Normalisation normalisation, const WeightStats& global, const WeightStats& own,
                                const std::string& where, NonFinite nonfinite, Backend& backend,
                                QuantizeTotals* totals = nullptr);

struct CheckpointReport {
  WeightStats stats;                 // of every floating weight together
  std::vector<TensorReport> tensors;  // the quantized ones, in name order
  std::vector<std::string> copied;    // tensors kept as they were (not floating point)
  double sqnr_ex_db = 0.0;            // over all quantized weights
  double within = 0.0;                // % inside the support region
};

// The in-memory reference: the whole checkpoint held at once (tests build files with it;
// `nuq quantize` streams with checkpoint_stream.h, tested byte for byte against this).
// Normalisation::Global uses the statistics of all floating tensors together (Algorithm 1),
// PerTensor each tensor's own, PerChannel each row's own, None the weights as they are. `name` names the input in errors.
io::TensorFile quantize_checkpoint(const io::TensorFile& checkpoint, const std::string& name, const Codebook& codebook,
                                   Normalisation normalisation, NonFinite nonfinite, Backend& backend,
                                   CheckpointReport* report = nullptr);

struct DequantizeReport {
  std::vector<std::string> restored;  // quantized tensors restored (as F32, or as asked)
  std::vector<std::string> copied;    // tensors that were stored as they were
};

// The FP32 checkpoint back from a quantized one (every quantized tensor as F32 in its original
// shape, copied tensors unchanged). Validates the file like load_quantized (exact layouts, finite
// levels, no quantized tensor left undescribed): errors name `name`.
io::TensorFile dequantize_checkpoint(const io::TensorFile& quantized, const std::string& name,
                                     DequantizeReport* report = nullptr);

// A quantized file read a tensor at a time: its layout from the header alone (quantized_layout of
// the reader's tensors), then one quantized tensor's stored tensors and description, read and
// checked as read_quantized_checkpoint checks a whole file (the result holds that tensor alone, no
// metadata). Errors name the reader's path.
QuantizedLayout quantized_layout_of(const io::SafetensorsReader& reader);
QuantizedCheckpoint read_quantized_tensor(const io::SafetensorsReader& reader, const QuantizedLayout& layout,
                                          const std::string& tensor);
// Rows [first, first + count) of a quantized tensor with at least two rows (its [shape[0], rest]
// view), read and checked as a tensor of `count` rows: its codes, scales and per-row tables narrowed
// to those rows, a shared table or grid whole. nullopt where the stored tensors are not laid out by
// the rows its description gives (read_quantized_tensor then reports what is wrong). Errors name
// the rows.
std::optional<QuantizedCheckpoint> read_quantized_rows(const io::SafetensorsReader& reader,
                                                       const QuantizedLayout& layout, const std::string& tensor,
                                                       std::size_t first, std::size_t count);
// read_quantized_rows, except that rows that do not read (a damaged file) are read again as the
// whole tensor, so that the error names what is wrong as the file has it (a shape, a table, a
// width of the whole tensor, not of the band); the band's own error where the whole reads.
std::optional<QuantizedCheckpoint> read_quantized_band(const io::SafetensorsReader& reader,
                                                       const QuantizedLayout& layout, const std::string& tensor,
                                                       std::size_t first, std::size_t count);

// The same from file to file: the header first, then each quantized tensor a band of rows at a time
// (about `band_bytes` of floats and stored bytes, a row at least: read_quantized_rows) read,
// checked as read_quantized_checkpoint checks a whole file, restored and written, and the copied
// tensors streamed across. The bytes are those of writing dequantize_checkpoint's result; peak
// memory is a band and the largest shared table, whatever the tensors' sizes. `output` is written
// atomically (nothing is left there on an error).
// Quantized tensors are restored as `dtype` (F32, BF16 or F16, each weight the nearest value, ties
// to even), or with no dtype given each as the dtype its description records (what it was before
// quantizing); a restored weight beyond BF16's or F16's range is an error naming it, never an
// infinity.
constexpr std::size_t kDequantizeBandBytes = std::size_t{16} << 20;
struct DequantizeFileOptions {
  std::optional<io::DType> dtype = io::DType::F32;
  std::size_t band_bytes = kDequantizeBandBytes;
};
// With `unfinished`, the output is not renamed into place but handed back there, every byte written,
// for the caller to sync and rename with the other shards of its checkpoint (ShardedCheckpoint::hold).
DequantizeReport dequantize_checkpoint_file(const std::string& input, const std::string& output,
                                            const DequantizeFileOptions& options = {},
                                            std::unique_ptr<io::SafetensorsWriter>* unfinished = nullptr);

// The shards of one `nuq quantize` run share its codebook, normalisation, group sizes and
// statistics: a folder of shards from two runs (one interrupted over an older output) would
// restore a mixed model. And each tensor is in one shard: a shard copied under another shard's
// name would restore its tensors twice. Throws nuq::Error naming the shard otherwise, or one that
// is not quantized.
void require_one_quantize_run(const std::vector<std::string>& shards);
// The same over shards already open.
void require_one_quantize_run(const ShardReaders& shards);

}  // namespace nuq
