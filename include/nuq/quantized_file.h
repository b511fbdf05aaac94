// The one quantized format (docs/format.md): what `nuq quantize` writes for nuq's own models and
// for any safetensors checkpoint alike, what `dequantize`, `eval` and the Python package read.
//
// A safetensors file. Per quantized tensor <name>:
//   <name>.codes     U8 [rows, packed row bytes] at 1, 2, 4 or 8 bits (packed.h: LSB-first, each row
//                    byte-aligned), U16 [rows, cols] at 16 bits, over the [shape[0], rest] view;
//   <name>.codebook  F32 [1, 2^bits] (one table) or [rows, 2^bits] (a table per row): the level of
//                    each code in the tensor's own units; or, for a uniform grid at 16 bits,
//   <name>.grid      F64 [2]: level(code) = offset + scale * code.
// Tensors that were not quantized are stored as they were. __metadata__["nuq.quantized"] is JSON:
//   {"version": 1, "codebook": the design (every threshold and level up to 256 levels; a uniform,
//    mu-law or Lloyd-Max design beyond, by its parameters alone), "normalisation", "mean", "stddev" (the statistics global
//    normalisation used), "tensors": {name: {shape, dtype, rows, cols, bits, mean, stddev}}}
// nuq's own networks add "nuq.architecture" (and "nuq.dataset", "nuq.trained_on"). Every tensor
// lies at an offset that is a multiple of its element size (io::serialize_safetensors).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "nuq/codebook.h"
#include "nuq/io/safetensors.h"
#include "nuq/normalisation.h"
#include "nuq/ptq.h"

namespace nuq {

// The newest format version this nuq reads and writes. A file records the lowest version that
// reads it (describe_quantized): 4 where a Lloyd-Max codebook of more than 256 levels is recorded
// by its parameters; 3 where a mu-law one is; 2 where a file keeps tensors under names nuq's own stored tensors end with (a
// GPTQ `scales`, an AQLM `codes`): its description lists them (`kept`), and a reader of version 1
// must not take them for parts of a quantized tensor. Otherwise 1, as before.
constexpr int kQuantizedFormatVersion = 4;

// A quantized file as tensors rather than file entries.
struct QuantizedCheckpoint {
  std::optional<Codebook> codebook;  // absent only in files that did not record one
  Normalisation normalisation = Normalisation::Global;
  double mean = 0.0, stddev = 1.0;  // the statistics global normalisation used
  std::map<std::string, QuantizedTensor> quantized;
  std::map<std::string, io::DType> dtypes;      // each quantized tensor's dtype before quantization
  std::map<std::string, io::Tensor> copied;     // tensors kept as they were
  std::map<std::string, std::string> metadata;  // the rest of __metadata__
};

// The pieces of the format, for writers that stream (checkpoint_stream.h) as for to_tensor_file.
struct TensorDescription {
  std::vector<std::int64_t> shape;  // the original tensor's
  io::DType dtype = io::DType::F32;
  std::size_t rows = 0, cols = 0;
  int bits = 0;  // the stored code width
  double mean = 0.0, stddev = 1.0;
  std::size_t group_size = 0;  // 0, or per-group scales (.scales) and a normalised .codebook
};
// __metadata__["nuq.quantized"] for these tensors, with `kept` the names of the tensors stored as
// they were (those a reader could take for a quantized tensor's parts are listed) and
// `run_group_sizes` the distinct group sizes (0: none) of every tensor the run quantized, in this
// file and its other shards: recorded as "group_sizes" where any is above 0, so that a shard
// without a quantized tensor still says which run it belongs to (quantized_run).
std::string describe_quantized(const std::optional<Codebook>& codebook, Normalisation normalisation, double mean,
                               double stddev, const std::map<std::string, TensorDescription>& tensors,
                               const std::vector<std::string>& kept, const std::set<std::size_t>& run_group_sizes);
// The tensors that store one quantized tensor `name`: .codes, and .codebook with `tables` rows
// (1, or `rows` per channel) or, when `grid`, .grid; grouped: .codes, .codebook [1, 2^bits] and
// .scales F32 [rows, cols / group_size].
std::vector<std::pair<std::string, io::TensorEntry>> stored_tensors(const std::string& name, const TensorDescription& d,
                                                                    std::size_t tables, bool grid);
// Whether `group_size` can group the rows of a [rows, cols] tensor at `bits` bits: a whole number
// of bytes per group, whole groups per row, codebooks of up to 8 bits. Throws naming `where`.
void require_groupable(std::size_t group_size, std::size_t cols, int bits, const std::string& where);
// The level of a code in a group, as every reader computes it: mean + scale * normalised level.
inline float group_level(double mean, float scale, float normalised) {
  return static_cast<float>(mean + double(scale) * double(normalised));
}

// (offset, scale) of a .grid: the uniform codebook's levels under the tensor's map.
std::pair<double, double> grid_map(const Codebook& codebook, double mean, double stddev);

// Whether `bits`-bit codes of `codebook` are stored with an affine map (.grid) instead of a table:
// 16-bit codes of a uniform grid.
bool stores_grid(const Codebook& codebook, int bits);
// Whether a file stores quantized tensor `q` of a run of `codebook` with a .grid: 16-bit codes of a
// uniform grid, one table of 65,536 levels (to_tensor_file; Python's nbytes counts the same).
bool stores_grid_of(const std::optional<Codebook>& codebook, const QuantizedTensor& q);

// Whether a file holds quantized tensors in this format (or the two layouts before version 1:
// nuq models' "nuq.quantized" and checkpoints' "nuq.checkpoint", told from a training checkpoint's
// by its tensors), from the file's metadata.
bool is_quantized_file(const std::map<std::string, std::string>& metadata);

// One tensor a file stores of a quantized tensor (its codes, its tables or grid, its scales): the
// entry (dtype and shape), and the bytes, the codes viewed where they lie, the small parts made.
struct StoredPart {
  std::string name;
  io::TensorEntry entry;
  const std::vector<std::uint8_t>* lying = nullptr;  // the codes: never copied
  std::vector<std::uint8_t> made;                    // otherwise
  const std::vector<std::uint8_t>& bytes() const { return lying ? *lying : made; }
};
// What a file stores of `quantized` beside the tensors `kept` as they were, as a run of `run`'s
// codebook, normalisation, mean and stddev, each tensor with its dtype before quantizing from
// `run.dtypes` (F32 where absent; run's own tensors are not read): __metadata__'s "nuq.quantized"
// and every part, in name order. Throws naming `name` where a part's name is taken.
struct QuantizedParts {
  std::string description;
  std::vector<StoredPart> parts;
};
QuantizedParts quantized_parts(const QuantizedCheckpoint& run,
                               const std::map<std::string, const QuantizedTensor*>& quantized,
                               const std::set<std::string>& kept, const std::string& name);

// The file's tensors and metadata, its parts and kept tensors copied into one TensorFile (a writer
// that streams, as Python's nuq.save, writes quantized_parts() as they lie instead); errors (a name
// taken twice) name `name`.
io::TensorFile to_tensor_file(const QuantizedCheckpoint& checkpoint, const std::string& name);

// Validates everything it reads (exact layouts, finite levels, shapes against rows x cols, no
// quantized tensor left undescribed); errors name `name` and the field.
QuantizedCheckpoint read_quantized_checkpoint(const io::TensorFile& file, const std::string& name);

// For readers that take a quantized file a tensor at a time (dequantize_checkpoint_file), from its
// header alone: each described tensor's stored names (those present) and original shape, and the
// tensors copied as they are. A stored name without a description is an error, as in
// read_quantized_checkpoint. Errors name `name`.
struct QuantizedLayout {
  struct Described {
    std::vector<std::string> stored;   // `<name>.codes` and its tables, those present
    std::vector<std::int64_t> shape;   // the original tensor's
    std::string description;           // its entry in the description (JSON)
  };
  std::map<std::string, Described> quantized;
  std::vector<std::string> copied;
  std::string key;                             // the metadata key of the description
  std::shared_ptr<const nlohmann::json> run;  // the description, its tensors and `kept` left out
};
QuantizedLayout quantized_layout(const std::map<std::string, std::string>& metadata,
                                 const std::vector<std::string>& names, const std::string& name);
// What read_quantized_checkpoint reads and checks of a file of the layout's run that holds `stored`
// (one tensor's stored tensors, or a band of their rows) and describes `tensor` alone by
// `tensor_description`; the result's metadata left empty. The run's description is not parsed again.
QuantizedCheckpoint read_quantized_one(const QuantizedLayout& layout, const std::string& tensor,
                                       const nlohmann::json& tensor_description, const io::TensorFile& stored,
                                       const std::string& name);
// What every shard of one quantize run shares: its description without the tensors (codebook,
// normalisation, statistics), as text to compare. Throws naming `name` when it has none.
std::string quantized_run(const std::map<std::string, std::string>& metadata, const std::string& name);
// The metadata without nuq's description.
std::map<std::string, std::string> plain_metadata(std::map<std::string, std::string> metadata);
// What a file `nuq dequantize` restores keeps: the plain metadata and, under kRestoredFromKey, a
// fingerprint of the quantize run it came from (quantized_run), so that a folder of restored shards
// from two runs (one dequantize interrupted over an older output) is recognised.
constexpr const char* kRestoredFromKey = "nuq.restored_from";
std::map<std::string, std::string> restored_metadata(const std::map<std::string, std::string>& metadata,
                                                     const std::string& name);

// The `.codebook` tensor of a quantized tensor with `rows` rows of `bits`-bit codes: F32
// [1, 2^bits] or [rows, 2^bits], every level finite. Throws nuq::Error naming `where`.
std::vector<float> read_levels_table(const io::Tensor& tensor, std::size_t rows, int bits, const std::string& where);

}  // namespace nuq
