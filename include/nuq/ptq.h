// Post-training quantization, Algorithm 1 of the main paper: all trainable parameters (weights
// and biases) normalised with their global mean and standard deviation, quantized with one
// codebook designed for the unit Laplacian, stored as packed codes, and denormalised on use.
// Beyond the paper, each tensor or each output channel can be normalised with its own statistics
// instead (the same codebook, one scale and offset per tensor or per row), which rescues small
// layers whose weights sit far out in the global distribution (the CNN's 3x3 convolution).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "nuq/backend.h"
#include "nuq/codebook.h"
#include "nuq/io/dataset.h"
#include "nuq/model.h"
#include "nuq/normalisation.h"
#include "nuq/qgemm.h"
#include "nuq/stats.h"
#include "nuq/support.h"

namespace nuq {

// One tensor as the quantized model stores it: codes for a [rows, cols] view of the parameter
// (weights [out, in], conv [filters, taps], biases [1, n]) and the levels in the weights' units
// (one table, or one per row with per-channel normalisation).
struct QuantizedTensor {
  std::vector<std::int64_t> shape;  // the parameter's original shape
  QuantizedMatrix matrix;
  // The normalisation this tensor was quantized with; per-channel: the tensor's own statistics
  // (each row's map is in its levels).
  double mean = 0.0, stddev = 1.0;
  // 0, or the run of weights along a row that has its own scale (docs/format.md): `matrix` is then
  // the [rows * cols / group_size, group_size] view of the codes, and its `levels` are empty. The
  // bytes of its codes are those of the [rows, cols] matrix (group_size * bits is a whole number
  // of bytes).
  std::size_t group_size = 0;
  // Grouped only: each group's scale (.scales, [rows, cols / group_size] in row order) and the
  // codebook's levels in normalised units (.codebook); group g's levels are
  // group_level(mean, scales[g], normalised_levels[k]) (grouped.h), computed where they are used.
  std::vector<float> scales{}, normalised_levels{};
};

// Every weight restored, in the order of the tensor's [shape[0], rest] view, grouped or not.
std::vector<float> dequantize(const QuantizedTensor& tensor);
// Rows [first, first + count) of the codes (grouped: groups) restored into `out`, their
// count x codes.cols weights: a tensor restored a band at a time (narrowed to 16 bits, say) without
// all of it in float32 at once.
void dequantize_rows(const QuantizedTensor& tensor, std::size_t first, std::size_t count, float* out);

struct QuantizedModel {
  Architecture architecture = Architecture::Mlp;
  // The design, for the normalised weights (unit variance). A file another writer made may record
  // none: its levels are in its tensors, which is all a network needs to run.
  std::optional<Codebook> codebook;
  Normalisation normalisation = Normalisation::Global;
  double mean = 0.0, stddev = 1.0;  // global statistics of the FP32 parameters
  std::map<std::string, QuantizedTensor> tensors;
  std::string dataset;  // the FP32 model's (Model::dataset), saved as nuq.dataset
  std::string trained_on{};  // the FP32 model's (Model::trained_on), saved as nuq.trained_on
  std::string training{};    // the FP32 model's (Model::training), saved as nuq.training
  std::map<std::string, std::string> metadata{};  // the FP32 model's other keys (Model::metadata)
  // Parameters a file keeps as they were (another writer may leave biases unquantized, say): their
  // values, in place of a quantized tensor of the same name. nuq's own quantize writes none.
  std::map<std::string, std::vector<float>> plain{};
  // The dtype each parameter's FP32 model file stored it in, where not F32 (a model saved in half
  // precision): what a quantized file records as the tensor's original dtype.
  std::map<std::string, io::DType> stored_as{};

  // A parameter's values: kept as they were, or restored from its codes.
  std::vector<float> values_of(const std::string& name) const;
};

// What the paper reports per run, plus a per-tensor account (llama.cpp's quantize style).
struct TensorReport {
  std::string name;
  std::vector<std::int64_t> shape;
  int bits = 0;
  std::size_t bytes_before = 0, bytes_after = 0;
  double rmse = 0.0, max_error = 0.0;  // over the finite weights
  std::size_t nonfinite = 0;            // saturated NaN/Inf weights (NonFinite::Skip)
  // The measures docs/report.md defines (add_measures), over the finite weights:
  double sqnr_ex_db = 0.0;       // of this tensor's weights, eq. (31)
  double sqnr_th_db = 0.0;       // the design's on a Laplacian of the sigma the codebook meets them at
  double within = 0.0;           // % inside the support region
  double excess_kurtosis = 0.0;  // 3 for a Laplacian, 0 for a Gaussian: the check of the design's assumption
};

// Fills t's measures from a tensor's quantization totals, its own statistics (of its finite
// weights), `fourth` (the sum of ((w - mean) / sigma)^4 over them, by its own statistics; 0 without
// spread) and the map the codebook met it through: each row's or group's own (`per_row`), else `map`.
void add_measures(TensorReport& t, const Codebook& codebook, const QuantizeTotals& totals, const WeightStats& own,
                  double fourth, bool per_row, const Affine& map);

struct PtqReport {
  WeightStats stats;        // of the FP32 parameters
  Normalisation normalisation = Normalisation::Global;
  double w_min = 0.0;       // normalised extremes
  double w_max = 0.0;
  double xmax = 0.0;        // normalised support threshold
  double within = 0.0;      // % of normalised parameters inside [-xmax, xmax]
  double sqnr_ex_db = 0.0;  // eqs. (30)-(31) on the FP32 parameters
  double sqnr_th_db = 0.0;  // the codebook on the unit Laplacian (normalisation none: at the weights' sigma)
  std::vector<TensorReport> tensors;
};

// Global statistics of every trainable parameter (NaN or Inf: an error naming the tensor, or
// skipped and counted with NonFinite::Skip).
WeightStats model_stats(const Model& model, NonFinite nonfinite = NonFinite::Reject, Backend& backend = cpu_backend());

// Extremes of the parameters after normalisation (what support cases 1 and 2 are made of).
WeightRange normalised_range(const Model& model, Normalisation normalisation = Normalisation::Global,
                             NonFinite nonfinite = NonFinite::Reject, Backend& backend = cpu_backend());

// Quantizes with `codebook` (in normalised units; codes must fit a packable width). Fills `report`.
// Non-finite weights are an error naming the tensor and index; with NonFinite::Skip they are left
// out of every statistic and saturated: +Inf and -Inf to the outermost levels, NaN to the level
// of the cell holding the mean (counted in the report).
QuantizedModel quantize_model(const Model& model, const Codebook& codebook, PtqReport* report = nullptr,
                              Normalisation normalisation = Normalisation::Global,
                              NonFinite nonfinite = NonFinite::Reject, Backend& backend = cpu_backend());

// The FP32 model with every parameter replaced by its quantized value.
Model dequantize_model(const QuantizedModel& quantized);

// The class of each image, evaluated from the packed form: dense layers through qgemm.
std::vector<std::uint8_t> quantized_predictions(const QuantizedModel& quantized, const io::Dataset& data,
                                                Backend& backend = cpu_backend());
// Accuracy (%) of those predictions.
double quantized_accuracy(const QuantizedModel& quantized, const io::Dataset& data, Backend& backend = cpu_backend());

// safetensors: <name>.codes (U8 [rows, row bytes]), <name>.codebook (F32 [1, 2^bits]) and the
// quantizer, statistics and shapes in the one quantized format (quantized_file.h), with
// nuq.architecture and nuq.dataset. Written atomically.
void save_quantized(const std::string& path, const QuantizedModel& quantized);
QuantizedModel load_quantized(const std::string& path);
// The same from a parsed file (`name` in errors): what the fuzzer drives.
QuantizedModel quantized_from_file(const io::TensorFile& file, const std::string& name);

}  // namespace nuq
