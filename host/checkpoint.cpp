#include "nuq/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "nuq/error.h"
#include "nuq/io/safetensors.h"
#include "nuq/io/safetensors_stream.h"
#include "nuq/io/widen.h"
#include "nuq/json_numbers.h"
#include "nuq/packed.h"
#include "nuq/quantize_table.h"
#include "nuq/sharded_checkpoint.h"
#include "nuq/tensor_pieces.h"

namespace nuq {

QuantizedTensor quantize_tensor(const float* values, const std::vector<std::int64_t>& shape, const Codebook& codebook,
                                Normalisation normalisation, const WeightStats& global, const WeightStats& own,
                                const std::string& where, NonFinite nonfinite, Backend& backend,
                                QuantizeTotals* totals) {
  const int bits = storage_bits(codebook);
  require_storable(normalisation, bits, where);
  NUQ_REQUIRE(normalisation != Normalisation::Global || global.stddev() > 0.0, where,
              ": every weight has the same value; zero variance cannot be normalised");
  const auto [rows, cols] = matrix_view(shape, io::element_count(shape));
  const TensorNormalisation maps =
      normalise_tensor(normalisation, values, rows, cols, global, own, where, nonfinite, backend);
  const QuantizeTable table = make_quantize_table(codebook, bits, maps.maps, where);
  // What the metadata records: the tensor's map, or its own statistics when each row has one.
  const Affine map = normalisation == Normalisation::PerChannel ? Affine{own.mean, own.stddev()} : maps.maps[0];
  QuantizedTensor q;
  q.shape = shape;
  q.matrix.codes = {rows, cols, bits, std::vector<std::uint8_t>(rows * packed_row_bytes(cols, bits))};
  const QuantizeTotals t = backend.quantize(values, rows, cols, table, q.matrix.codes.bytes.data());
  if (totals) *totals = combine(*totals, t);
  q.matrix.levels = table.levels;
  q.mean = map.mean;
  q.stddev = map.scale;
  return q;
}

io::TensorFile quantize_checkpoint(const io::TensorFile& checkpoint, const std::string& name, const Codebook& codebook,
                                   Normalisation normalisation, NonFinite nonfinite, Backend& backend,
                                   CheckpointReport* report) {
  require_storable(normalisation, storage_bits(codebook), name);
  // Pass 1: each floating tensor's statistics (and all of them together).
  std::map<std::string, std::vector<float>> values;
  std::map<std::string, WeightStats> own;
  WeightStats global;
  CheckpointReport r;
  QuantizedCheckpoint q;
  q.codebook = codebook;
  q.normalisation = normalisation;
  q.metadata = checkpoint.metadata;
  q.metadata.erase(kRestoredFromKey);  // a quantized file is not a restored one
  for (const auto& [tensor_name, t] : checkpoint.tensors) {
    if (!io::is_floating(t.dtype)) {
      q.copied[tensor_name] = t;
      r.copied.push_back(tensor_name);
      continue;
    }
    const std::string where = name + ": tensor '" + tensor_name + "'";
    std::vector<float>& v = values[tensor_name] = io::widened(t, where);
    own[tensor_name] = locating_nonfinite(where, t.shape, v.size(), Piece{0, 1, 0, v.size()}, [&] {
      return backend.stats(v.data(), v.size(), where, nonfinite);
    });
    require_finite_weights(own[tensor_name], where);
    global = combine(global, own[tensor_name]);
  }
  NUQ_REQUIRE(!values.empty(), name, ": no F32, F16 or BF16 tensor to quantize");
  NUQ_REQUIRE(global.count > 0, name, ": no finite weight to quantize");
  NUQ_REQUIRE(normalisation != Normalisation::Global || global.stddev() > 0.0, name,
              ": every weight has the same value; zero variance cannot be normalised");
  // Pass 2: the fused pass per tensor, against the codebook in that tensor's units.
  QuantizeTotals all;
  for (auto& [tensor_name, v] : values) {
    const io::Tensor& source = checkpoint.tensors.at(tensor_name);
    QuantizeTotals t;
    const QuantizedTensor& quantized = q.quantized[tensor_name] =
        quantize_tensor(v.data(), source.shape, codebook, normalisation, global, own.at(tensor_name),
                        name + ": tensor '" + tensor_name + "'", nonfinite, backend, &t);
    q.dtypes[tensor_name] = source.dtype;
    all = combine(all, t);
    const std::size_t finite = v.size() - t.nonfinite;
    r.tensors.push_back({tensor_name, source.shape, quantized.matrix.codes.bits, source.data.size(),
                         quantized.matrix.codes.bytes.size() + quantized.matrix.levels.size() * sizeof(float),
                         finite ? std::sqrt(t.noise / double(finite)) : 0.0, t.max_error, t.nonfinite});
    v = {};  // the widened copy is no longer needed
  }
  q.mean = global.mean;
  q.stddev = global.stddev() > 0.0 ? global.stddev() : 1.0;
  r.stats = global;
  r.sqnr_ex_db = all.noise > 0.0 ? 10.0 * std::log10(all.signal / all.noise) : std::numeric_limits<double>::infinity();
  r.within = 100.0 * double(all.inside) / double(global.count);
  io::TensorFile out = to_tensor_file(q, name);
  if (report) *report = std::move(r);
  return out;
}

io::TensorFile dequantize_checkpoint(const io::TensorFile& quantized, const std::string& name, DequantizeReport* report) {
  const QuantizedCheckpoint checkpoint = read_quantized_checkpoint(quantized, name);
  io::TensorFile out;
  out.metadata = restored_metadata(quantized.metadata, name);  // as dequantize_checkpoint_file writes it
  out.tensors = {checkpoint.copied.begin(), checkpoint.copied.end()};
  DequantizeReport r;
  for (const auto& [tensor_name, q] : checkpoint.quantized) {
    out.tensors[tensor_name] = io::f32_tensor(q.shape, dequantize(q));
    r.restored.push_back(tensor_name);
  }
  for (const auto& [tensor_name, t] : checkpoint.copied) r.copied.push_back(tensor_name);
  if (report) *report = std::move(r);
  return out;
}

QuantizedLayout quantized_layout_of(const io::SafetensorsReader& reader) {
  std::vector<std::string> names;
  for (const auto& [name, entry] : reader.layout().tensors) names.push_back(name);
  return quantized_layout(reader.layout().metadata, names, reader.path());
}

QuantizedCheckpoint read_quantized_tensor(const io::SafetensorsReader& reader, const QuantizedLayout& layout,
                                          const std::string& tensor) {
  const QuantizedLayout::Described& described = layout.quantized.at(tensor);
  io::TensorFile part;
  for (const std::string& stored : described.stored) {
    const io::TensorEntry& entry = reader.layout().tensors.at(stored);
    io::Tensor& t = part.tensors[stored] = io::Tensor{entry.dtype, entry.shape, {}};
    t.data.resize(entry.end - entry.begin);
    reader.read(entry, 0, t.data.size(), t.data.data());
  }
  return read_quantized_one(layout, tensor, nlohmann::json::parse(described.description), part, reader.path());
}

std::optional<QuantizedCheckpoint> read_quantized_rows(const io::SafetensorsReader& reader,
                                                       const QuantizedLayout& layout, const std::string& tensor,
                                                       std::size_t first, std::size_t count) {
  const QuantizedLayout::Described& described = layout.quantized.at(tensor);
  if (described.shape.size() < 2 || described.shape[0] < 2) return std::nullopt;
  const std::size_t rows = std::size_t(described.shape[0]);
  if (first > rows || count > rows - first || count == 0) return std::nullopt;
  nlohmann::json description = nlohmann::json::parse(described.description);
  const std::optional<std::int64_t> described_rows =
      description.contains("rows") ? json_integer(description["rows"]) : std::nullopt;
  if (!described_rows || *described_rows != std::int64_t(rows)) return std::nullopt;
  const bool grouped = description.contains("group_size");
  io::TensorFile part;
  for (const std::string& stored : described.stored) {
    const io::TensorEntry& entry = reader.layout().tensors.at(stored);
    const std::uint64_t bytes = entry.end - entry.begin;
    // Row by row: the codes, the scales, and a table per row; a shared table and a grid whole. (A
    // grouped tensor's table is always shared: read whole, so that a damaged one is refused whole.)
    const bool table = stored == tensor + ".codebook";  // (whatever the name: '' has '.codebook')
    const bool by_row = stored == tensor + ".codes" || stored == tensor + ".scales" ||
                        (table && !grouped && entry.shape.size() == 2 && entry.shape[0] == std::int64_t(rows));
    io::Tensor& t = part.tensors[stored] = io::Tensor{entry.dtype, entry.shape, {}};
    if (!by_row) {
      t.data.resize(bytes);
      reader.read(entry, 0, bytes, t.data.data());
      continue;
    }
    if (entry.shape.size() != 2 || entry.shape[0] != std::int64_t(rows) || bytes % rows) return std::nullopt;
    const std::uint64_t row_bytes = bytes / rows;
    t.shape[0] = std::int64_t(count);
    t.data.resize(count * row_bytes);
    reader.read(entry, first * row_bytes, t.data.size(), t.data.data());
  }
  description["shape"][0] = count;
  description["rows"] = count;
  try {
    return read_quantized_one(layout, tensor, description, part, reader.path());
  } catch (const Error& e) {
    throw Error(std::string(e.what()) + " (in rows " + std::to_string(first) + " to " +
                std::to_string(first + count - 1) + " of tensor '" + tensor + "')");
  }
}

std::optional<QuantizedCheckpoint> read_quantized_band(const io::SafetensorsReader& reader,
                                                       const QuantizedLayout& layout, const std::string& tensor,
                                                       std::size_t first, std::size_t count) {
  try {
    return read_quantized_rows(reader, layout, tensor, first, count);
  } catch (const Error&) {
    read_quantized_tensor(reader, layout, tensor);  // throws the whole tensor's error
    throw;  // (the whole reads where a band did not: the band's own error, which names its rows)
  }
}

DequantizeReport dequantize_checkpoint_file(const std::string& input, const std::string& output,
                                            const DequantizeFileOptions& options,
                                            std::unique_ptr<io::SafetensorsWriter>* unfinished) {
  NUQ_REQUIRE(!options.dtype || io::is_floating(*options.dtype), "dequantize: restores as F32, BF16 or F16, not ",
              to_string(*options.dtype));
  const io::SafetensorsReader reader(input);
  const io::Layout& layout = reader.layout();
  const QuantizedLayout quantized = quantized_layout_of(reader);
  std::vector<std::pair<std::string, io::TensorEntry>> planned;
  std::map<std::string, io::DType> restore_as;
  for (const auto& [name, described] : quantized.quantized) {
    // A shape no file could hold is the input's fault: named so before the output is planned.
    io::checked_element_count(described.shape, input + ": tensor '" + name + "'");
    io::DType dtype = options.dtype.value_or(io::DType::F32);
    if (!options.dtype) {  // the tensor's own, as its description records it (F32 when it records none)
      const nlohmann::json d = nlohmann::json::parse(described.description);
      const std::string recorded = d.contains("dtype") && d["dtype"].is_string() ? d["dtype"].get<std::string>() : "F32";
      const std::optional<io::DType> named = io::dtype_named(recorded);
      NUQ_REQUIRE(named && io::is_floating(*named), input, ": tensor '", name, "': dtype '", recorded,
                  "' is not one nuq quantizes (F32, F16 or BF16)");
      dtype = *named;
    }
    restore_as[name] = dtype;
    planned.push_back({name, io::TensorEntry{dtype, described.shape}});
  }
  for (const std::string& name : quantized.copied) {
    const io::TensorEntry& entry = layout.tensors.at(name);
    planned.push_back({name, io::TensorEntry{entry.dtype, entry.shape}});
  }
  auto written = std::make_unique<io::SafetensorsWriter>(output, restored_metadata(layout.metadata, input), planned);
  io::SafetensorsWriter& writer = *written;
  DequantizeReport report;
  constexpr std::size_t kPiece = std::size_t{16} << 20;  // copied tensors go across in pieces
  std::vector<std::uint8_t> piece;
  std::vector<std::uint8_t> narrowed;
  // Appends a band's weights, which start at weight `at` of the tensor, as the dtype asked for.
  const auto restore = [&](const QuantizedCheckpoint& one, const std::string& name, std::uint64_t at) {
    const std::vector<float> values = dequantize(one.quantized.at(name));
    const io::DType dtype = restore_as.at(name);
    if (dtype == io::DType::F32) {
      writer.append(values.data(), values.size() * sizeof(float));
      return values.size();
    }
    narrowed.resize(values.size() * io::dtype_size(dtype));
    const std::size_t overflow = io::narrow_from_f32(dtype, values.data(), values.size(), narrowed.data());
    NUQ_REQUIRE(overflow == values.size(), input, ": tensor '", name, "': restored weight ",
                element_place(quantized.quantized.at(name).shape, std::size_t(at + overflow)), " (", values[overflow],
                ") lies beyond ", to_string(dtype), "'s range; restore it as F32 (--dtype f32)");
    writer.append(narrowed.data(), narrowed.size());
    return values.size();
  };
  for (const auto& [name, entry] : writer.order()) {
    if (!quantized.quantized.count(name)) {  // copied as it is
      const io::TensorEntry& source = layout.tensors.at(name);
      for (std::uint64_t at = 0; at < source.end - source.begin; at += kPiece) {
        piece.resize(std::min<std::uint64_t>(kPiece, source.end - source.begin - at));
        reader.read(source, at, piece.size(), piece.data());
        writer.append(piece.data(), piece.size());
      }
      report.copied.push_back(name);
      continue;
    }
    // A band of rows at a time (about band_bytes of floats, a row at least), so that memory holds
    // a band, not the tensor: a 2-billion-weight embedding restores to 8 GB. A tensor whose stored
    // tensors are not laid out by its rows is read whole, and refused as such.
    const std::vector<std::int64_t>& shape = quantized.quantized.at(name).shape;
    const std::uint64_t floats = (entry.end - entry.begin) / io::dtype_size(entry.dtype);
    const std::size_t rows = shape.size() >= 2 && shape[0] > 0 ? std::size_t(shape[0]) : 1;
    std::uint64_t row_bytes = floats / rows * sizeof(float);  // restored (as floats first), and stored
    for (const std::string& stored : quantized.quantized.at(name).stored) {
      const io::TensorEntry& part = layout.tensors.at(stored);
      if (part.shape.size() == 2 && part.shape[0] == std::int64_t(rows)) row_bytes += (part.end - part.begin) / rows;
    }
    // (A tensor of no weights, [2^60, 0] say, is read whole: bands of its empty rows would be 2^34.)
    const std::size_t band =
        floats == 0 ? rows
                    : std::size_t(std::max<std::uint64_t>(1, options.band_bytes / std::max<std::uint64_t>(1, row_bytes)));
    std::uint64_t restored = 0;
    const std::string& tensor = name;  // (a structured binding cannot be captured in C++17)
    const auto band_of = [&](std::size_t first) {
      return read_quantized_band(reader, quantized, tensor, first, std::min(band, rows - first));
    };
    std::optional<QuantizedCheckpoint> first_band = band < rows ? band_of(0) : std::nullopt;
    if (!first_band) {
      restored = restore(read_quantized_tensor(reader, quantized, name), name, 0);
    } else {
      restored = restore(*first_band, name, 0);
      first_band.reset();
      for (std::size_t at = band; at < rows; at += band) {
        const std::optional<QuantizedCheckpoint> rows_read = band_of(at);
        NUQ_REQUIRE(rows_read, input, ": tensor '", name, "': its stored tensors' rows changed");  // cannot happen
        restored += restore(*rows_read, name, restored);
      }
    }
    NUQ_REQUIRE(restored == floats, input, ": tensor '", name, "': its codes restore ", restored,
                " weights, its shape holds ", floats);
    report.restored.push_back(name);
  }
  if (unfinished) *unfinished = std::move(written);
  else writer.finish();
  std::sort(report.restored.begin(), report.restored.end());
  std::sort(report.copied.begin(), report.copied.end());
  return report;
}

namespace {

// require_one_quantize_run, a shard at a time.
class OneQuantizeRun {
 public:
  void add(const io::SafetensorsReader& reader) {
    const std::string& shard = reader.path();
    const std::string run = quantized_run(reader.layout().metadata, shard);
    if (first_shard_.empty()) first_shard_ = shard, first_run_ = run;
    NUQ_REQUIRE(run == first_run_, shard, ": quantized by another run than ", first_shard_,
                " (another codebook, normalisation, group size or statistics): the shards do not make one model");
    for (const auto& [name, entry] : reader.layout().tensors) {
      const auto [held, added] = shard_of_.emplace(name, shard);
      if (!added) throw tensor_in_two_shards(shard, name, held->second);
    }
  }

 private:
  std::string first_shard_, first_run_;
  std::map<std::string, std::string> shard_of_;  // stored tensor -> the shard holding it
};

}  // namespace

void require_one_quantize_run(const std::vector<std::string>& shards) {
  OneQuantizeRun one;
  for (const std::string& shard : shards) one.add(io::SafetensorsReader(shard));  // one header held at a time
}

void require_one_quantize_run(const ShardReaders& shards) {
  OneQuantizeRun one;
  for (const auto& reader : shards) one.add(*reader);
}

}  // namespace nuq
