// Quantized weights made ready once for one backend's products: the CPU interleaves the packed
// rows for its look-up path (so no transpose is paid per call), CUDA keeps the codes and levels
// resident on the device (so only activations cross the bus). A network prepares each layer once
// when it is built and multiplies many batches with it (after ggml's backend buffers).
#pragma once

#include <cstddef>

#include "nuq/qgemm.h"

namespace nuq {

class PreparedWeights {
 public:
  virtual ~PreparedWeights() = default;
  PreparedWeights(const PreparedWeights&) = delete;
  PreparedWeights& operator=(const PreparedWeights&) = delete;

  // The weights as stored. They are read by the products too (levels, bias-free shape), so they
  // must outlive this object and not change while it is in use.
  const QuantizedMatrix& matrix() const { return matrix_; }

 protected:
  explicit PreparedWeights(const QuantizedMatrix& matrix) : matrix_(matrix) {}

 private:
  const QuantizedMatrix& matrix_;
};

}  // namespace nuq
