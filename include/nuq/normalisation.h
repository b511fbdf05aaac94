// How a tensor's weights are mapped to the codebook's units before quantization. A codebook is
// designed for a unit-variance source; the weights meet it through w -> (w - mean) / scale, with
// the statistics of the whole model (Algorithm 1 of the main paper), of the tensor, of each output
// channel (row of the [rows, cols] view), or none at all.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "nuq/weight_type.h"

#include "nuq/backend.h"
#include "nuq/quantize_table.h"
#include "nuq/stats.h"
#include "nuq/support.h"

namespace nuq {

enum class Normalisation {
  Global,      // Algorithm 1: mean and standard deviation of all parameters together
  PerTensor,   // each tensor its own (a constant tensor is stored exactly)
  PerChannel,  // each output channel (row) its own: one table of levels per row
  None,        // the weights as they are: a codebook designed for sigma_ref meets the weights' own
               // variance (the companion paper's variance-mismatch experiment)
};
std::string to_string(Normalisation normalisation);
// "global", "per-tensor", "per-channel" or "none"; anything else throws naming the choices.
Normalisation parse_normalisation(const std::string& text);

// The maps of one [rows, cols] tensor and where its finite weights land under them.
struct TensorNormalisation {
  std::vector<Affine> maps;  // one for the tensor, or one per row (PerChannel)
  WeightRange normalised;    // extremes of the normalised finite weights ({+inf, -inf}: none)
};

// `global`: statistics of every weight being quantized; `own`: this tensor's (both from
// backend.stats). PerChannel takes each row's statistics through the backend (errors name the
// tensor `name` and the row). A constant group gets scale 0 and is stored exactly.
TensorNormalisation normalise_tensor(Normalisation normalisation, const float* values, std::size_t rows,
                                     std::size_t cols, const WeightStats& global, const WeightStats& own,
                                     const std::string& name, NonFinite nonfinite, Backend& backend);
// The same over weights of `type` as they lie (for a backend that reads(type)).
TensorNormalisation normalise_tensor(Normalisation normalisation, const void* values, WeightType type, std::size_t rows,
                                     std::size_t cols, const WeightStats& global, const WeightStats& own,
                                     const std::string& name, NonFinite nonfinite, Backend& backend);

// A row's (or group's) own map, of its statistics `row` within a tensor of statistics `tensor`: its
// mean and standard deviation. A row of no finite weight (all NaN or Inf under NonFinite::Skip)
// has no statistics of its own: it takes the tensor's mean with scale 0, so that every weight of
// it comes back as the tensor's mean (a group's scale about that mean is then 0 too).
Affine row_map(const WeightStats& row, const WeightStats& tensor);

// Under global normalisation, the tensors that set every other's scale: each with an RMS about the
// centre (the mean of the tensor holding the median weight in the order of their means; not the
// global mean, which such tensors pull along) at least 10 times that of the tensor holding the
// median weight in the order of RMS, that together make the global standard deviation (`global`:
// the statistics of all of `tensors`, named) at least 1.5 times what the other tensors alone give. Such are buffers stored as weights (a rotary cache, a
// sinusoidal positional table, Mamba's A_log) and tensors of another scale (T5's embeddings): the
// other tensors would be quantized at a fraction of their scale. A line for the user naming them,
// without a prefix; empty when there are none.
std::string scale_setting_tensors(const std::vector<std::pair<std::string, WeightStats>>& tensors,
                                  const WeightStats& global);

// Per-channel levels are a table per row (per group with a group size): refused above 8-bit codes
// (65536 levels per row), with a message naming `where` and what to do instead.
void require_storable(Normalisation normalisation, int bits, const std::string& where, std::size_t group_size = 0);

}  // namespace nuq
