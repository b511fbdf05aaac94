// libFuzzer target: the quantized-model loader (safetensors, then nuq's metadata, codes, codebooks
// and affine maps) on arbitrary bytes. What loads must also evaluate: the packed codes go through
// qgemm, so a loader that lets inconsistent sizes through shows up as a sanitizer report. The same
// bytes also go to dequantize_checkpoint (nuq dequantize).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "nuq/checkpoint.h"
#include "nuq/error.h"
#include "nuq/io/safetensors.h"
#include "nuq/ptq.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const nuq::io::TensorFile file = nuq::io::parse_safetensors(std::vector<std::uint8_t>(data, data + size), "fuzz");
    const nuq::QuantizedModel model = nuq::quantized_from_file(file, "fuzz");
    for (const auto& [name, tensor] : model.tensors) {
      const nuq::QuantizedMatrix& w = tensor.matrix;
      std::vector<float> x(w.codes.cols, 1.0f), y(w.codes.rows);
      nuq::qgemm(x.data(), 1, w, nullptr, y.data());
    }
  } catch (const nuq::Error&) {
  }
  try {  // the same bytes as a quantized checkpoint
    const nuq::io::TensorFile file = nuq::io::parse_safetensors(std::vector<std::uint8_t>(data, data + size), "fuzz");
    nuq::dequantize_checkpoint(file, "fuzz");
  } catch (const nuq::Error&) {
  }
  return 0;
}
