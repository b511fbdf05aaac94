// nuq.load and nuq.save: safetensors files as numpy arrays and QuantizedTensors, and the dtypes
// an array is read and stored as (which quantize shares). Plain checkpoints are read a tensor at a
// time; the Python layer names what numpy cannot hold (bfloat16, 8-bit and packed floats).
#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <new>
#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include "binding.h"
#include "nuq/checkpoint.h"
#include "nuq/error.h"
#include "nuq/io/safetensors.h"
#include "nuq/io/safetensors_stream.h"
#include "nuq/io/widen.h"
#include "nuq/quantize_table.h"
#include "nuq/quantized_file.h"
#include "nuq/sharded_checkpoint.h"

namespace nuq::python {

using namespace pybind11::literals;

namespace {

// The numpy dtype of each safetensors dtype (BF16 has none: it is read as F32, exactly, tagged; the
// 8-bit and the packed F4 and F6 floats are read as their bytes, tagged).
const std::vector<std::pair<io::DType, const char*>>& numpy_dtypes() {
  static const std::vector<std::pair<io::DType, const char*>> table = {
      {io::DType::BOOL, "bool"},   {io::DType::U8, "uint8"},     {io::DType::I8, "int8"},
      {io::DType::U16, "uint16"},  {io::DType::I16, "int16"},    {io::DType::F16, "float16"},
      {io::DType::U32, "uint32"},  {io::DType::I32, "int32"},    {io::DType::F32, "float32"},
      {io::DType::U64, "uint64"},  {io::DType::I64, "int64"},    {io::DType::F64, "float64"},
      {io::DType::C64, "complex64"}};
  return table;
}

}  // namespace

ArrayDtype dtype_of(const py::array& a, const std::optional<std::string>& tag, const std::string& name) {
  if (tag) {  // the Python layer names what numpy cannot hold (BF16 as raw uint16, 8-bit and packed floats as bytes)
    const std::optional<io::DType> tagged = io::dtype_named(*tag);
    if (tagged == io::DType::BF16 && a.dtype().equal(py::dtype::of<float>())) return {io::DType::F32, io::DType::BF16};
    NUQ_REQUIRE(tagged && (*tagged == io::DType::BF16 ? a.itemsize() == 2
                                                      : a.itemsize() == 1 && io::dtype_bits(*tagged) <= 8 &&
                                                            *tagged != io::DType::U8 && *tagged != io::DType::I8 &&
                                                            *tagged != io::DType::BOOL),
                name, ": dtype tag '", *tag, "' does not fit numpy dtype ", std::string(py::str(a.dtype())));
    return {*tagged, *tagged};
  }
  for (const auto& [dtype, numpy] : numpy_dtypes())
    if (a.dtype().equal(py::dtype(numpy))) return {dtype, dtype};
  throw Error(name + ": numpy dtype " + std::string(py::str(a.dtype())) + " cannot be stored in safetensors");
}

std::vector<std::int64_t> shape_of(const py::array& a) {
  return std::vector<std::int64_t>(a.shape(), a.shape() + a.ndim());
}

namespace {

// One array save() writes, checked (with the GIL held); its bytes are read after the GIL is let go,
// while the caller's list still holds the array. Or, where `produce` is not None, one that must be
// copied first (a transposed view, a GPU tensor): `produce()` makes the copy as it is written, so
// that one copy is held at a time, not all of them (data is then null until it is made).
struct PlainArray {
  std::string name;
  const void* data;
  ArrayDtype dtype;
  std::vector<std::int64_t> shape;
  std::size_t bytes;  // in memory (dtype.read)
  py::object produce, template_array;  // None, or what makes the copy and an empty array of its dtype
};

// `use(a)`, with `a`'s bytes where they lie; or, where `a` is made as it is written, with the copy
// a.produce() makes, checked against the entry the header planned for it, and dropped (with the
// GIL) before the next is made. Called with the GIL let go.
void with_bytes(const PlainArray& a, const std::string& where, const std::function<void(const PlainArray&)>& use) {
  if (a.produce.is_none()) return use(a);
  struct HeldCopy {  // let go with the GIL held, however the write ends
    py::object array;
    ~HeldCopy() {
      const py::gil_scoped_acquire gil;
      array = py::object();
    }
  } copy;
  PlainArray made{a.name, nullptr, a.dtype, a.shape, a.bytes, {}, {}};
  {
    const py::gil_scoped_acquire gil;
    const py::array array = py::array::ensure(a.produce());
    NUQ_REQUIRE(array && (array.flags() & py::array::c_style) && std::size_t(array.nbytes()) == a.bytes &&
                    array.dtype().equal(py::reinterpret_borrow<py::array>(a.template_array).dtype()),
                where, ": its copy is not the C-contiguous array of ", a.bytes, " bytes its entry planned");
    made.data = array.data();
    copy.array = array;
  }
  use(made);
}

// out[0, 2 count) = the bfloat16 bits of float32 values that all are bfloat16s (their high halves;
// the low halves are zero), element `first` the first of them (for the error).
void narrow_to_bf16(const float* values, std::size_t count, std::size_t first, std::uint8_t* out,
                    const std::string& where) {
  for (std::size_t i = 0; i < count; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, values + i, sizeof bits);
    NUQ_REQUIRE((bits & 0xFFFFu) == 0, where, ": element ", first + i, " (", values[i], ") is not a bfloat16");
    const auto high = std::uint16_t(bits >> 16);
    std::memcpy(out + 2 * i, &high, sizeof high);
  }
}

// `a`'s bytes as the file stores them, handed to `put` a bounded piece at a time where they are
// narrowed (load's bfloat16), whole where they are stored as they lie.
void stored_bytes(const PlainArray& a, const std::string& where,
                  const std::function<void(const void*, std::size_t)>& put) {
  if (a.dtype.read == a.dtype.stored) {
    if (a.bytes) put(a.data, a.bytes);
    return;
  }
  constexpr std::size_t kPieceValues = std::size_t{1} << 22;
  const std::size_t count = a.bytes / sizeof(float);
  std::vector<std::uint8_t> piece(2 * std::min(count, kPieceValues));
  for (std::size_t first = 0; first < count; first += kPieceValues) {
    const std::size_t n = std::min(kPieceValues, count - first);
    narrow_to_bf16(static_cast<const float*>(a.data) + first, n, first, piece.data(), where);
    put(piece.data(), 2 * n);
  }
}

// The array load gives for a tensor of `dtype` and `shape` whose file bytes are `bytes` long, not
// yet filled in. BF16 is float32 (widened exactly), its dtype tagged so that save() and quantize()
// keep it bfloat16 while every value still is one. The 8-bit floats and the packed F4, F6_E2M3,
// F6_E3M2 numpy cannot hold are their bytes (uint8; the last dimension in bytes, as PyTorch's
// float4_e2m1fn_x2 holds F4), their dtype and shape in the numpy dtype's metadata, so that save()
// writes them back as they were and quantize_state_dict counts them as the non-float tensors they
// are (to_float32 widens the 8-bit ones). The rest are numpy's own dtypes.
py::array array_for(io::DType dtype, const std::vector<std::int64_t>& tensor_shape, std::size_t bytes,
                    const std::string& where) {
  std::vector<py::ssize_t> shape(tensor_shape.begin(), tensor_shape.end());
  const py::module_ numpy = py::module_::import("numpy");
  py::object numpy_dtype;
  if (dtype == io::DType::BF16) {
    numpy_dtype = numpy.attr("dtype")("float32", "metadata"_a = py::dict("widened_from"_a = "BF16"));
  } else if (const auto own = std::find_if(numpy_dtypes().begin(), numpy_dtypes().end(),
                                           [&](const auto& entry) { return entry.first == dtype; });
             own != numpy_dtypes().end()) {
    numpy_dtype = py::dtype(own->second);
  } else {
    const std::size_t bits = io::dtype_bits(dtype);
    if (bits == 8) {
      // a byte an element: the tensor's own shape, a scalar's () too (an FP8 per-tensor scale)
    } else if (!shape.empty() && std::size_t(shape.back()) * bits % 8 == 0)
      shape.back() = py::ssize_t(std::size_t(shape.back()) * bits / 8);
    else
      shape = {py::ssize_t(bytes)};
    numpy_dtype = numpy.attr("dtype")(
        "uint8", "metadata"_a = py::dict("safetensors"_a = io::to_string(dtype), "shape"_a = tensor_shape));
  }
  py::array a;
  try {
    a = py::array(py::reinterpret_borrow<py::dtype>(numpy_dtype), shape);
  } catch (py::error_already_set& e) {  // numpy's MemoryError or "array is too big": said of this tensor
    throw Error(where + ": " + e.what());
  }
  const std::size_t needed = dtype == io::DType::BF16 ? std::size_t(a.nbytes()) / 2 : std::size_t(a.nbytes());
  NUQ_REQUIRE(bytes == needed, where, ": holds ", bytes, " bytes, its shape needs ", needed);
  return a;
}

// Fills `a` (from array_for) with a tensor's `bytes` bytes, which read(offset, count, out) gives:
// straight into the array, or for BF16 a bounded piece at a time, each widened into place. The
// GIL is released while it reads.
void fill(io::DType dtype, py::array& a, std::size_t bytes,
          const std::function<void(std::size_t, std::size_t, void*)>& read) {
  void* out = a.mutable_data();
  py::gil_scoped_release release;
  if (dtype != io::DType::BF16) {
    if (bytes) read(0, bytes, out);
    return;
  }
  constexpr std::size_t kPieceBytes = std::size_t{16} << 20;
  std::vector<std::uint8_t> piece(std::min(bytes, kPieceBytes));
  for (std::size_t done = 0; done < bytes; done += piece.size()) {
    const std::size_t count = std::min(piece.size(), bytes - done);
    read(done, count, piece.data());
    io::widen_to_f32(dtype, piece.data(), count / 2, static_cast<float*>(out) + done / 2);
  }
}

PyQuantized loaded(QuantizedTensor tensor, const std::optional<Codebook>& codebook, Normalisation normalisation,
                   io::DType dtype) {
  PyQuantized q;
  q.tensor = std::move(tensor);
  if (codebook) q.codebook = PyCodebook(*codebook);
  q.normalisation = normalisation;
  q.dtype = io::to_string(dtype);
  return q;
}

// Every tensor of a file nuq wrote: quantized ones as QuantizedTensor, the rest as numpy arrays,
// read a tensor at a time (the file is never held whole beside what it becomes).
py::dict load_file(const std::string& path) {
  std::unique_ptr<io::SafetensorsReader> reader;
  {
    py::gil_scoped_release release;
    reader = std::make_unique<io::SafetensorsReader>(path);
  }
  const io::Layout& layout = reader->layout();
  const auto plain = [&](const std::string& name) {  // a tensor kept as it is, straight into its array
    const io::TensorEntry& entry = layout.tensors.at(name);
    const std::size_t bytes = entry.end - entry.begin;
    py::array a = array_for(entry.dtype, entry.shape, bytes, path + ": tensor '" + name + "'");
    fill(entry.dtype, a, bytes,
         [&](std::size_t offset, std::size_t count, void* to) { reader->read(entry, offset, count, to); });
    return a;
  };
  py::dict out;
  if (!is_quantized_file(layout.metadata)) {
    for (const auto& [name, entry] : layout.tensors) out[py::str(name)] = plain(name);
    return out;
  }
  // nuq's models and other quantized checkpoints alike, a tensor at a time (as nuq dequantize reads them).
  const QuantizedLayout quantized = quantized_layout_of(*reader);
  for (const auto& [name, described] : quantized.quantized) {
    QuantizedCheckpoint one;
    try {
      py::gil_scoped_release release;
      one = read_quantized_tensor(*reader, quantized, name);
    } catch (const std::bad_alloc&) {  // as numpy's MemoryError for a plain tensor: said of this one
      throw Error(reader->path() + ": tensor '" + name + "': MemoryError: its codes and tables do not fit in memory");
    }
    out[py::str(name)] = loaded(std::move(one.quantized.at(name)), one.codebook, one.normalisation, one.dtypes.at(name));
  }
  for (const std::string& name : quantized.copied) out[py::str(name)] = plain(name);
  return out;
}

// A file, or a sharded checkpoint (a folder of shards or its model.safetensors.index.json, found as
// nuq quantize and dequantize find them): every shard's tensors in one dict. Quantized shards must
// be of one quantize run; where the index and the shards' headers disagree, the headers are
// followed and each disagreement is warned of (UserWarning), as the command line does.
py::dict load(const std::string& path) {
  std::vector<std::string> shards, disagreements;
  {
    py::gil_scoped_release release;
    shards = checkpoint_shards(path);
    if (!(shards.size() == 1 && shards.front() == path)) {
      disagreements = checkpoint_warnings(path);
      bool quantized = false;
      for (const std::string& shard : shards)
        quantized = quantized || is_quantized_file(io::SafetensorsReader(shard).layout().metadata);
      if (quantized) require_one_quantize_run(shards);  // (which also refuses a tensor in two shards)
    }
  }
  if (shards.size() == 1 && shards.front() == path) return load_file(path);  // one file
  for (const std::string& line : disagreements)
    if (PyErr_WarnEx(PyExc_UserWarning, line.c_str(), 2) != 0) throw py::error_already_set();  // (nuq.load's caller)
  py::dict out;
  std::map<std::string, std::string> shard_of;  // tensor -> the shard holding it
  for (const std::string& shard : shards) {
    const py::dict part = load_file(shard);
    for (const auto& [name, value] : part) {
      const auto [held, added] = shard_of.emplace(name.cast<std::string>(), shard);
      if (!added) throw tensor_in_two_shards(shard, held->first, held->second);
      out[name] = value;
    }
  }
  return out;
}

// What a file records of quantized tensors `quantized` (one codebook and normalisation for all, as
// nuq quantize writes a checkpoint) beside the tensors `kept` as they were: the description and the
// parts, which view the tensors' codes (never copied).
QuantizedParts recorded_parts(const std::string& path, const std::map<std::string, const PyQuantized*>& quantized,
                              const std::set<std::string>& kept) {
  const PyQuantized& first = *quantized.begin()->second;
  QuantizedCheckpoint checkpoint;  // the run the file records (its tensors are written as they lie, not held here)
  if (first.codebook) checkpoint.codebook = first.codebook->codebook;
  checkpoint.normalisation = first.normalisation;
  // Global normalisation shares one map between the tensors of one nuq.quantize_state_dict call;
  // tensors quantized by separate calls each had their own statistics, which is per-tensor
  // normalisation, and the file says so (its top-level mean and stddev would name one tensor's).
  // Beside a per-tensor tensor (one loaded from such a file, say), global tensors are recorded so too,
  // each with its own map: the file describes every tensor exactly either way.
  bool one_map = true, any_per_tensor = false;
  for (const auto& [name, q] : quantized) {
    one_map = one_map && q->tensor.mean == first.tensor.mean && q->tensor.stddev == first.tensor.stddev;
    any_per_tensor = any_per_tensor || q->normalisation == Normalisation::PerTensor;
  }
  const auto as_recorded = [&](Normalisation n) {
    return n == Normalisation::Global && (!one_map || any_per_tensor) ? Normalisation::PerTensor : n;
  };
  checkpoint.normalisation = as_recorded(first.normalisation);
  if (checkpoint.normalisation == Normalisation::Global && first.tensor.stddev > 0.0) {  // the map every tensor shares
    checkpoint.mean = first.tensor.mean;
    checkpoint.stddev = first.tensor.stddev;
  }
  // Otherwise, as `nuq quantize` records them: the statistics of every weight quantized, where all
  // the tensors come from one call (σ 1 where there is no spread); 0 and 1 else.
  bool one_run = first.run_stats.has_value();
  for (const auto& [name, q] : quantized)
    one_run = one_run && q->run_stats && q->run_stats->count == first.run_stats->count &&
              q->run_stats->mean == first.run_stats->mean && q->run_stats->m2 == first.run_stats->m2;
  if (checkpoint.normalisation != Normalisation::Global && one_run) {
    checkpoint.mean = first.run_stats->mean;
    checkpoint.stddev = first.run_stats->stddev() > 0.0 ? first.run_stats->stddev() : 1.0;
  }
  const std::string first_codebook = first.codebook ? to_json(first.codebook->codebook).dump() : "";
  std::map<std::string, const QuantizedTensor*> tensors;
  for (const auto& [name, q] : quantized) {
    NUQ_REQUIRE((q->codebook ? to_json(q->codebook->codebook).dump() : "") == first_codebook &&
                    as_recorded(q->normalisation) == checkpoint.normalisation,
                path, ": tensor '", name, "' was quantized with another codebook or normalisation than '",
                quantized.begin()->first, "'; a file holds one of each");
    tensors[name] = &q->tensor;
    const std::string& d = q->dtype;
    checkpoint.dtypes[name] = d == "F16" ? io::DType::F16 : d == "BF16" ? io::DType::BF16 : io::DType::F32;
  }
  return quantized_parts(checkpoint, tensors, kept, path);
}

// Quantized tensors as nuq quantize writes a checkpoint, and plain arrays; without quantized
// tensors, a plain safetensors file. Streamed: the codes and the arrays go to the file from where
// they lie, a piece at a time where narrowed, never gathered (a state dict's kept embeddings are GBs).
void save(const std::string& path, const std::map<std::string, const PyQuantized*>& quantized,
          const std::vector<std::tuple<std::string, py::array, std::optional<std::string>,
                                       std::optional<std::vector<std::int64_t>>, py::object>>& plain,
          const std::map<std::string, std::string>& metadata) {
  for (const char* key : {"nuq.quantized", "nuq.checkpoint"})
    NUQ_REQUIRE(!metadata.count(key), path, ": metadata key '", key,
                "' is nuq's own description of a file's tensors; save writes it (load_metadata leaves it out)");
  std::vector<PlainArray> arrays;
  for (const auto& [name, array, tag, element_shape, produce] : plain) {
    const std::string where = path + ": tensor '" + name + "'";
    NUQ_REQUIRE(array.flags() & py::array::c_style, where, ": the array must be C-contiguous");
    NUQ_REQUIRE(name != "__metadata__", where, ": the name is safetensors' own (its metadata's)");
    // Packed floats are held as bytes: the shape in elements comes with the tag (load's metadata).
    // One copied as it is written comes as an empty array of its dtype, its shape beside it.
    const std::vector<std::int64_t> shape = element_shape ? *element_shape : shape_of(array);
    const ArrayDtype dtype = dtype_of(array, tag, where);
    const std::size_t bytes = produce.is_none()
                                  ? std::size_t(array.nbytes())
                                  : io::byte_size(dtype.read, io::checked_element_count(shape, where), where);
    PlainArray a{name, array.data(), dtype, shape, bytes, produce, array};
    // (A tagged shape is the caller's: one a reader would refuse is refused here, before writing.)
    NUQ_REQUIRE(io::byte_size(a.dtype.read, io::checked_element_count(a.shape, where), where) == a.bytes, where, ": ",
                a.bytes, " bytes do not hold ", io::to_string(a.dtype.read), " [", io::shape_text(a.shape), "]");
    arrays.push_back(std::move(a));
  }
  py::gil_scoped_release release;
  std::set<std::string> kept;
  for (const PlainArray& a : arrays) kept.insert(a.name);
  const QuantizedParts parts = quantized.empty() ? QuantizedParts{} : recorded_parts(path, quantized, kept);
  std::map<std::string, std::string> file_metadata = metadata;
  if (!quantized.empty()) file_metadata["nuq.quantized"] = parts.description;
  std::vector<std::pair<std::string, io::TensorEntry>> entries;
  std::map<std::string, const PlainArray*> array_named;
  std::map<std::string, const StoredPart*> part_named;
  for (const PlainArray& a : arrays) {
    entries.push_back({a.name, io::TensorEntry{a.dtype.stored, a.shape, 0,
                                               io::byte_size(a.dtype.stored, io::element_count(a.shape), a.name)}});
    array_named[a.name] = &a;
  }
  for (const StoredPart& part : parts.parts) {
    entries.push_back({part.name, io::TensorEntry{part.entry.dtype, part.entry.shape, 0, part.bytes().size()}});
    part_named[part.name] = &part;
  }
  io::SafetensorsWriter writer(path, file_metadata, std::move(entries));
  for (const auto& [name, entry] : writer.order()) {
    const auto part = part_named.find(name);
    if (part == part_named.end()) {
      const std::string where = path + ": tensor '" + name + "'";
      with_bytes(*array_named.at(name), where, [&](const PlainArray& a) {
        stored_bytes(a, where, [&](const void* bytes, std::size_t count) { writer.append(bytes, count); });
      });
    } else if (!part->second->bytes().empty())
      writer.append(part->second->bytes().data(), part->second->bytes().size());
  }
  writer.finish();
}

}  // namespace

void bind_files(py::module_& m) {
  m.def("_load", &load, "path"_a);
  m.def(
      "_float8_to_f32",
      [](const py::array& bytes, const std::string& dtype) {
        const std::optional<io::DType> d = io::dtype_named(dtype);
        NUQ_REQUIRE(d && io::is_float8(*d), "to_float32: '", dtype, "' is not an 8-bit float dtype");
        NUQ_REQUIRE(bytes.itemsize() == 1 && (bytes.flags() & py::array::c_style), "to_float32: C-contiguous bytes");
        std::vector<float> values(std::size_t(bytes.size()));
        io::float8_to_f32(*d, static_cast<const std::uint8_t*>(bytes.data()), values.size(), values.data());
        return adopt(std::move(values), std::vector<py::ssize_t>(bytes.shape(), bytes.shape() + bytes.ndim()));
      },
      "bytes"_a, "dtype"_a);
  m.def(
      "_load_metadata",
      [](const std::string& path) {
        std::map<std::string, std::string> metadata;
        {
          py::gil_scoped_release release;
          metadata = plain_metadata(io::SafetensorsReader(path).layout().metadata);  // the header alone
        }
        return metadata;
      },
      "path"_a);
  m.def("_save", &save, "path"_a, "quantized"_a, "plain"_a, "metadata"_a);
  m.def(
      "_stored_names",
      [](const std::string& name, const PyCodebook& codebook, std::size_t group_size) {
        // The names nuq.save gives a tensor quantized with `codebook` (the file's, as stored_tensors
        // says): quantize_state_dict refuses a clash with them before the work, not at save.
        const int bits = storage_bits(codebook.codebook);
        const TensorDescription names_only{{}, io::DType::F32, 1, 1, bits, 0.0, 1.0, group_size};
        std::vector<std::string> names;
        for (const auto& stored : stored_tensors(name, names_only, 1, !group_size && stores_grid(codebook.codebook, bits)))
          names.push_back(stored.first);
        return names;
      },
      "name"_a, "codebook"_a, "group_size"_a);
}

}  // namespace nuq::python
