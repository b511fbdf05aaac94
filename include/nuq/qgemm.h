// Quantized matrix products on the CPU, straight from packed codes: Y = X * W^T + bias with
// W[n, k] = levels[code(n, k)]. Codes are expanded a panel of rows at a time (byte -> several
// levels through a 256-entry table), so no full FP32 copy of W ever exists; small batches take a
// direct dot-product path, larger ones hand each decoded panel to OpenBLAS.
#pragma once

#include <cstddef>
#include <vector>

#include "nuq/packed.h"

namespace nuq {

struct QuantizedMatrix {
  PackedCodes codes;          // [rows = outputs, cols = inputs]
  std::vector<float> levels;  // 2^bits entries: the value of each code, in the weights' own units
};

// y[m, rows] = x[m, cols] * W^T (+ bias[rows] when bias is not null).
void qgemm(const float* x, std::size_t m, const QuantizedMatrix& w, const float* bias, float* y);

// The reference: dequantize the whole matrix, then one sgemm.
std::vector<float> dequantize(const QuantizedMatrix& w);
void qgemm_ref(const float* x, std::size_t m, const QuantizedMatrix& w, const float* bias, float* y);

}  // namespace nuq
