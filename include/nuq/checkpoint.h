// Any safetensors checkpoint (a PyTorch state dict: F32, F16 or BF16 tensors of any names and
// shapes), quantized tensor by tensor with one codebook, and back. Floating tensors become
// <name>.codes (U8, the packed layout of packed.h over the [shape[0], rest] view) and
// <name>.codebook (F32 [1, 2^bits], the levels in the tensor's own units, or [rows, 2^bits] with
// per-channel normalisation); every other tensor
// (integer buffers, step counters) is copied unchanged. The quantizer, the normalisation and each
// tensor's shape, dtype and statistics are JSON in __metadata__["nuq.checkpoint"].
#pragma once

#include <string>
#include <vector>

#include "nuq/backend.h"
#include "nuq/codebook.h"
#include "nuq/io/safetensors.h"
#include "nuq/ptq.h"

namespace nuq {

// Whether a file holds one of nuq's own models (nuq train), rather than an arbitrary checkpoint.
bool is_nuq_model(const io::TensorFile& file);

struct CheckpointReport {
  WeightStats stats;                 // of every floating weight together
  std::vector<TensorReport> tensors;  // the quantized ones, in name order
  std::vector<std::string> copied;    // tensors kept as they were (not floating point)
  double sqnr_ex_db = 0.0;            // over all quantized weights
  double within = 0.0;                // % inside the support region
};

// Normalisation::Global uses the statistics of all floating tensors together (Algorithm 1),
// PerTensor each tensor's own, PerChannel each row's own, None the weights as they are. `name` names the input in errors.
io::TensorFile quantize_checkpoint(const io::TensorFile& checkpoint, const std::string& name, const Codebook& codebook,
                                   Normalisation normalisation, NonFinite nonfinite, Backend& backend,
                                   CheckpointReport* report = nullptr);

struct DequantizeReport {
  std::vector<std::string> restored;  // quantized tensors restored as F32
  std::vector<std::string> copied;    // tensors that were stored as they were
};

// The FP32 checkpoint back from a quantized one (every quantized tensor as F32 in its original
// shape, copied tensors unchanged). Validates the file like load_quantized (exact layouts, finite
// levels, no quantized tensor left undescribed): errors name `name`.
io::TensorFile dequantize_checkpoint(const io::TensorFile& quantized, const std::string& name,
                                     DequantizeReport* report = nullptr);

}  // namespace nuq
