// `nuq inspect`: what a safetensors file, a folder of shards or an index holds, from the headers and
// little else (nothing is dequantized; `nuq dequantize` checks every stored byte). A quantized one: its format
// version, design, normalisation, and each quantized tensor's stored width, tables and bits per
// weight all in, and what it keeps as it was; each quantized tensor's description, tables and first
// row of codes are checked as the reader checks them, so that a damaged file is refused with
// dequantize's message rather than shown. Any other: each tensor and what `nuq quantize`
// would do with it under the same --skip and --quantize-vectors, so that a pattern can be checked
// before an hour-long run; a tensor that may be a mask (of two values at most) is read to tell,
// as quantize reads it.
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "json_text.h"
#include "nuq/checkpoint.h"
#include "nuq/checkpoint_stream.h"
#include "nuq/error.h"
#include "nuq/io/safetensors.h"
#include "nuq/io/safetensors_stream.h"
#include "nuq/laplace.h"
#include "nuq/model.h"
#include "nuq/codebook_record.h"
#include "nuq/quantized_file.h"
#include "nuq/sharded_checkpoint.h"
#include "nuq/terminal_text.h"
#include "table.h"

namespace nuq::cli {
namespace {

struct InspectOptions {
  std::string input, skip;
  bool quantize_vectors = false, json = false;
};

std::string bits_per_weight_text(std::uint64_t bytes, std::uint64_t weights) {
  return weights ? fixed(8.0 * double(bytes) / double(weights), 3) : std::string("-");
}

// How a quantized tensor's levels are stored: one table, a table per row, an affine grid, or a
// shared normalised table with a scale per group of G weights.
std::string tables_of(const io::SafetensorsReader& reader, const std::string& tensor,
                      const QuantizedLayout::Described& described, std::size_t group_size) {
  if (group_size) return "groups of " + std::to_string(group_size);
  for (const std::string& stored : described.stored) {
    if (stored == tensor + ".grid") return "grid";
    const io::TensorEntry& entry = reader.layout().tensors.at(stored);
    if (stored == tensor + ".codebook")
      return entry.shape.size() == 2 && entry.shape[0] != 1 ? "per row" : "one";  // [0, n]: a table for each of no rows
  }
  return "-";
}

// What the reader checks of a quantized tensor, from its description, its tables and its first row
// of codes (the whole tensor where its parts are not laid out by rows): a width, shape or table
// that no reader takes is refused here as `nuq dequantize` refuses it, not shown as if it were
// sound. (A level or code further in is checked by reading it: `nuq dequantize`.)
void check_readable(const io::SafetensorsReader& reader, const QuantizedLayout& layout, const std::string& tensor) {
  if (!read_quantized_band(reader, layout, tensor, 0, 1)) read_quantized_tensor(reader, layout, tensor);
}

// A quantized tensor and a tensor kept as it was, as inspect shows them: held compactly, a row's
// text made as it is printed (a hostile header names a million tensors).
struct QuantizedRow {
  std::string name, dtype, tables;
  std::size_t shard = 0, group_size = 0;
  std::vector<std::int64_t> shape;
  int bits = 0;
  std::uint64_t bytes = 0, weights = 0;
};
struct KeptRow {
  std::string name;
  std::size_t shard = 0;
  std::vector<std::int64_t> shape;
  io::DType dtype = io::DType::F32;
  std::uint64_t bytes = 0;
};

// Prints a table of `rows` in name order (a sharded checkpoint's tensors listed by name; the JSON
// lists them file by file), each row's cells made by cells_of(row).
template <typename Row, typename Cells>
void print_by_name(std::vector<std::string> header, const std::vector<Row>& rows, const Cells& cells_of) {
  std::vector<const Row*> order;
  for (const Row& row : rows) order.push_back(&row);
  std::stable_sort(order.begin(), order.end(), [](const Row* a, const Row* b) { return a->name < b->name; });
  print_table(std::cout, std::move(header), order, [&](const Row* row) { return cells_of(*row); });
}

void inspect_quantized(const InspectOptions& o, const std::vector<std::string>& shards, const ShardReaders& readers) {
  NUQ_REQUIRE(o.skip.empty() && !o.quantize_vectors, o.input, ": already quantized; --skip and --quantize-vectors "
              "tell what `nuq quantize` would keep of a checkpoint that is not");
  require_one_quantize_run(readers);
  nlohmann::json run;
  std::vector<QuantizedRow> tensors;
  std::vector<KeptRow> kept;
  std::uint64_t weights = 0, quantized_bytes = 0, kept_bytes = 0, file_bytes = 0;
  std::string architecture;
  for (std::size_t shard = 0; shard < shards.size(); ++shard) {
    const io::SafetensorsReader& reader = *readers[shard];
    const QuantizedLayout layout = quantized_layout_of(reader);
    file_bytes += reader.file_size();
    if (run.is_null()) run = *layout.run;
    const std::map<std::string, std::string>& metadata = reader.layout().metadata;
    if (const auto a = metadata.find("nuq.architecture"); a != metadata.end()) architecture = a->second;
    for (const auto& [name, described] : layout.quantized) {
      const nlohmann::json d = nlohmann::json::parse(described.description);
      QuantizedRow row;
      row.name = name, row.dtype = d.value("dtype", std::string("F32"));
      for (const std::string& stored : described.stored) {
        const io::TensorEntry& entry = reader.layout().tensors.at(stored);
        row.bytes += entry.end - entry.begin;
      }
      row.weights = io::checked_element_count(described.shape, shards[shard] + ": tensor '" + name + "'");
      check_readable(reader, layout, name);  // (after the shape's own check, which dequantize makes first too)
      row.shard = shard, row.shape = described.shape;
      row.group_size = d.value("group_size", std::size_t{0});
      row.tables = tables_of(reader, name, described, row.group_size);
      row.bits = d.value("bits", 0);
      weights += row.weights, quantized_bytes += row.bytes;
      tensors.push_back(std::move(row));
    }
    for (const std::string& name : layout.copied) {
      const io::TensorEntry& entry = reader.layout().tensors.at(name);
      kept_bytes += entry.end - entry.begin;
      kept.push_back({name, shard, entry.shape, entry.dtype, entry.end - entry.begin});
    }
  }
  const nlohmann::json record = run.value("codebook", nlohmann::json());
  std::optional<Codebook> codebook;
  try {
    if (!record.is_null()) codebook = codebook_from_record(record);
  } catch (const Error& e) {
    throw Error(shards.front() + ": its codebook: " + e.what());
  }
  const int version = run.value("version", 0);  // 0: written before the format had versions
  if (o.json) {
    nlohmann::json j{{"input", o.input}, {"files", shards}, {"file_bytes", file_bytes}, {"quantized", true},
                     {"version", version}, {"normalisation", run.value("normalisation", "")},
                     {"mean", run.value("mean", nlohmann::json())}, {"stddev", run.value("stddev", nlohmann::json())},
                     {"codebook", record}, {"weights", weights},
                     {"quantized_bytes", quantized_bytes}, {"kept_bytes", kept_bytes},
                     {"bits_per_weight", weights ? 8.0 * double(quantized_bytes) / double(weights) : 0.0}};
    if (codebook) j["sqnr_th_db"] = laplace_sqnr_db(*codebook, codebook->provenance().sigma);
    if (!architecture.empty()) j["architecture"] = architecture;
    const auto tensor_json = [&](std::size_t i) {
      const QuantizedRow& t = tensors[i];
      return nlohmann::json{{"name", t.name}, {"file", shards[t.shard]}, {"shape", t.shape}, {"dtype", t.dtype},
                            {"bits", t.bits}, {"group_size", t.group_size}, {"tables", t.tables}, {"bytes", t.bytes},
                            {"bits_per_weight", t.weights ? 8.0 * double(t.bytes) / double(t.weights) : 0.0}};
    };
    const auto kept_json = [&](std::size_t i) {
      const KeptRow& t = kept[i];
      return nlohmann::json{{"name", t.name}, {"file", shards[t.shard]}, {"shape", t.shape},
                            {"dtype", io::to_string(t.dtype)}, {"bytes", t.bytes}};
    };
    print_json(std::cout, std::move(j), {{"tensors", {tensors.size(), tensor_json}}, {"kept", {kept.size(), kept_json}}});
    return;
  }
  std::cout << terminal_text(o.input) << ": quantized by nuq (format version "
            << (version ? std::to_string(version) : "0, before 1") << "), " << shards.size()
            << " safetensors file(s) of " << file_bytes << " bytes"
            << (architecture.empty() ? "" : ", nuq's " + architecture) << '\n';
  if (codebook)
    std::cout << "design: " << to_string(codebook->provenance().method) << ", " << codebook->bits() << " bits ("
              << codebook->size() << " levels), x_max " << fixed(codebook->xmax(), 4) << ", SQNR_th "
              << fixed(laplace_sqnr_db(*codebook, codebook->provenance().sigma), 4) << " dB (a Laplacian of sigma "
              << significant(codebook->provenance().sigma, 6)
              << (run.value("normalisation", "") == "none" ? "; the run did not normalise its weights, which meet it "
                                                             "at their own sigma: nuq quantize reports each tensor's)\n"
                                                           : ", as normalised weights are; nuq quantize reports each "
                                                             "tensor's at its own)\n");
  std::cout << "normalisation: " << run.value("normalisation", "?") << "\n\n";
  print_by_name({"tensor", "shape", "dtype", "bits", "tables", "bytes", "bits/weight"}, tensors,
              [](const QuantizedRow& t) -> std::vector<std::string> {
                return {t.name, io::shape_text(t.shape), t.dtype, std::to_string(t.bits), t.tables,
                        std::to_string(t.bytes), bits_per_weight_text(t.bytes, t.weights)};
              });
  if (!kept.empty()) {
    std::cout << '\n';
    print_by_name({"kept as it was", "shape", "dtype", "bytes"}, kept,
                  [](const KeptRow& t) -> std::vector<std::string> {
                    return {t.name, io::shape_text(t.shape), io::to_string(t.dtype), std::to_string(t.bytes)};
                  });
  }
  std::cout << '\n' << tensors.size() << " tensor(s) quantized: " << weights << " weights in " << quantized_bytes
            << " bytes (" << bits_per_weight_text(quantized_bytes, weights) << " bits per weight, tables and scales "
            << "included); " << kept.size() << " kept as they were (" << kept_bytes << " bytes)\n";
}

void inspect_plain(const InspectOptions& o, const std::vector<std::string>& shards, const ShardReaders& readers) {
  // nuq's own networks (one file, not a folder or an index, recording its architecture) are
  // quantized whole, as nuq quantize does (from the header already read).
  const std::map<std::string, std::string>& metadata = readers.front()->layout().metadata;
  const bool network = shards.size() == 1 && is_nuq_network(o.input, metadata);
  const bool training_checkpoint = network && is_training_checkpoint(metadata);
  NUQ_REQUIRE(!network || (o.skip.empty() && !o.quantize_vectors), o.input,
              training_checkpoint ? ": a training checkpoint, which nuq quantize refuses; --skip and --quantize-vectors "
                                    "do not apply"
                                  : ": nuq's own networks are quantized whole (Algorithm 1: every parameter); --skip "
                                    "and --quantize-vectors are for other checkpoints");
  StreamOptions options;
  options.quantize_vectors = o.quantize_vectors || network;
  if (!o.skip.empty()) options.skip = skip_pattern(o.skip);
  const CheckpointPlan plan = plan_checkpoint(readers, options);
  const auto quantizes = [&](const TensorPlan& t) { return t.kept.empty() && !training_checkpoint; };
  std::uint64_t weights = 0, quantized_bytes = 0, kept_bytes = 0, quantized = 0;
  for (const TensorPlan& t : plan.tensors) {
    if (quantizes(t)) {
      ++quantized, quantized_bytes += t.bytes, weights += io::element_count(t.shape);
    } else {
      kept_bytes += t.bytes;
    }
  }
  for (const std::string& line : plan.warnings) std::cerr << warning_line(line);
  if (o.json) {
    const auto tensor_json = [&](std::size_t i) {
      const TensorPlan& t = plan.tensors[i];
      return nlohmann::json{
          {"name", t.name}, {"file", t.file}, {"shape", t.shape}, {"dtype", io::to_string(t.dtype)},
          {"bytes", t.bytes}, {"quantized", quantizes(t)},
          {"kept_because", training_checkpoint ? "a training checkpoint, which nuq quantize refuses" : t.kept}};
    };
    print_json(std::cout,
               {{"input", o.input}, {"files", shards}, {"quantized", false}, {"network", network},
                {"training_checkpoint", training_checkpoint}, {"warnings", plan.warnings},
                {"weights_to_quantize", weights}, {"bytes_to_quantize", quantized_bytes}, {"kept_bytes", kept_bytes}},
               {{"tensors", {plan.tensors.size(), tensor_json}}});
    return;
  }
  std::vector<std::string> header{"tensor", "shape", "dtype", "bytes", "nuq quantize"};
  if (shards.size() > 1) header.insert(header.begin() + 1, "file");
  const auto cells_of = [&](const TensorPlan& t) {
    const std::string action = training_checkpoint ? "refused: a training checkpoint"
                               : quantizes(t)      ? "quantize"
                                                   : "keep: " + t.kept;
    std::vector<std::string> row{t.name, io::shape_text(t.shape), io::to_string(t.dtype), std::to_string(t.bytes), action};
    if (shards.size() > 1) row.insert(row.begin() + 1, std::filesystem::path(t.file).filename().string());
    return row;
  };
  std::cout << terminal_text(o.input) << ": not quantized, " << shards.size() << " safetensors file(s), "
            << plan.tensors.size() << " tensor(s)"
            << (training_checkpoint ? "; a training checkpoint of one of nuq's networks (nuq train's progress)"
                : network             ? "; one of nuq's networks: `nuq quantize` quantizes every parameter"
                                      : "")
            << "\n\n";
  print_table(std::cout, std::move(header), plan.tensors, cells_of);
  std::cout << '\n';
  if (training_checkpoint) {
    std::cout << "nuq quantize refuses a training checkpoint: quantize the model nuq train saves when it finishes\n";
    return;
  }
  std::cout << quantized << " tensor(s) to quantize (" << weights << " weights, "
            << quantized_bytes << " bytes), " << plan.tensors.size() - quantized << " kept as they are (" << kept_bytes
            << " bytes)\n";
}

void run_inspect(const InspectOptions& o) {
  warn_of_checkpoint(o.input);
  const std::vector<std::string> shards = checkpoint_shards(o.input);
  const ShardReaders readers = open_shards(shards);  // each header parsed once
  std::size_t quantized = 0;
  for (const auto& reader : readers) quantized += is_quantized_file(reader->layout().metadata);
  NUQ_REQUIRE(quantized == 0 || quantized == shards.size(), o.input, ": ", quantized, " of its ", shards.size(),
              " files are quantized by nuq and the others are not: not one checkpoint");
  if (quantized) {
    inspect_quantized(o, shards, readers);
  } else {
    inspect_plain(o, shards, readers);
  }
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto o = std::make_shared<InspectOptions>();
  CLI::App* inspect = app.add_subcommand(
      "inspect", "What a safetensors file, folder of shards or index holds, from its headers: a quantized one's "
                 "design and bits per weight per tensor, or what nuq quantize would quantize and keep of another "
                 "(a tensor that may be a mask is read to tell)");
  inspect->add_option("input", o->input, "A file, a folder of shards, or its index (model.safetensors.index.json)")
      ->required();
  inspect->add_option("--skip", o->skip, "As nuq quantize --skip: tensors whose name matches are kept");
  inspect->add_flag("--quantize-vectors", o->quantize_vectors, "As nuq quantize --quantize-vectors");
  inspect->add_flag("--json", o->json, "Print JSON");
  inspect->callback([o] { run_inspect(*o); });
}

}  // namespace nuq::cli
