// libFuzzer target: the safetensors parser on arbitrary bytes. A nuq::Error is the expected answer
// to a bad file; anything else (another exception, a sanitizer report, a crash) is a finding.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "nuq/error.h"
#include "nuq/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const nuq::io::TensorFile file = nuq::io::parse_safetensors(std::vector<std::uint8_t>(data, data + size), "fuzz");
    // Whatever parses must serialize again: the writer checks every tensor against its shape.
    (void)nuq::io::serialize_safetensors(file);
  } catch (const nuq::Error&) {
  }
  return 0;
}
