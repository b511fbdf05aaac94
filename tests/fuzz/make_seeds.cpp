// Writes the seed corpora of the fuzz targets into <dir>/<target>/: small valid files of each
// format (and a few near misses), so the fuzzer starts from inputs that reach deep into the
// parsers instead of from empty strings.
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "nuq/checkpoint.h"
#include "nuq/design.h"
#include "nuq/io/idx.h"
#include "nuq/io/safetensors.h"
#include "nuq/mismatch.h"
#include "nuq/model.h"
#include "nuq/ptq.h"

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

namespace {

void write(const fs::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

Bytes read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

Bytes gzip(const Bytes& raw) {
  uLongf size = compressBound(static_cast<uLong>(raw.size())) + 32;
  Bytes out(size);
  z_stream z{};
  deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);  // 15 + 16: a gzip wrapper
  z.next_in = const_cast<Bytef*>(raw.data());
  z.avail_in = static_cast<uInt>(raw.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const fs::path root = argv[1];
  for (const char* target : {"safetensors", "quantized", "idx"}) fs::create_directories(root / target);

  // safetensors: a few shapes and dtypes, with and without metadata.
  nuq::io::TensorFile small;
  small.tensors["a"] = nuq::io::f32_tensor({2, 2}, {1, 2, 3, 4});
  small.tensors["b"] = nuq::io::f32_tensor({0}, {});
  write(root / "safetensors" / "small.safetensors", nuq::io::serialize_safetensors(small));
  small.metadata["nuq.architecture"] = "mlp";
  nuq::io::Tensor codes;
  codes.dtype = nuq::io::DType::U16;
  codes.shape = {3};
  codes.data = {1, 0, 2, 0, 3, 0};
  small.tensors["c"] = codes;
  write(root / "safetensors" / "metadata.safetensors", nuq::io::serialize_safetensors(small));

  // Quantized models: the MLP at two bits (codebook tables) and at 12 bits (U16 codes + affine map).
  const nuq::Model mlp = nuq::make_model(nuq::Architecture::Mlp, 1);
  nuq::DesignSpec spec;
  spec.method = nuq::Method::Sptq;
  const fs::path two_bit = root / "quantized" / "mlp-sptq.safetensors";
  nuq::save_quantized(two_bit.string(), nuq::quantize_model(mlp, nuq::design(spec).codebook));
  const fs::path twelve_bit = root / "quantized" / "mlp-uniform12.safetensors";
  nuq::save_quantized(twelve_bit.string(), nuq::quantize_model(mlp, nuq::mismatch_design(12), nullptr,
                                                               nuq::Normalisation::None));
  write(root / "safetensors" / "mlp-sptq.safetensors", read(two_bit));
  // A quantized checkpoint (nuq dequantize's input): two float tensors and an integer one copied.
  nuq::io::TensorFile checkpoint;
  checkpoint.tensors["w"] = nuq::io::f32_tensor({3, 5}, {1, -2, 3, 0, 5, -1, 2, 2, 4, 1, 0, 0, 1, -3, 2});
  checkpoint.tensors["v"] = nuq::io::f32_tensor({4}, {0.5f, -0.5f, 1, 2});
  checkpoint.tensors["i"] = codes;
  write(root / "quantized" / "checkpoint.safetensors",
        nuq::io::serialize_safetensors(nuq::quantize_checkpoint(checkpoint, "seed", nuq::design(spec).codebook,
                                                                nuq::Normalisation::PerTensor, nuq::NonFinite::Reject,
                                                                nuq::cpu_backend())));

  // IDX: raw and gzip, every element type the format has.
  nuq::io::IdxArray images{nuq::io::IdxType::U8, {2, 3, 3}, Bytes(18)};
  for (std::size_t i = 0; i < images.bytes.size(); ++i) images.bytes[i] = static_cast<std::uint8_t>(i * 13);
  nuq::io::write_idx((root / "idx" / "images.idx").string(), images);
  write(root / "idx" / "images.idx.gz", gzip(read(root / "idx" / "images.idx")));
  nuq::io::IdxArray labels{nuq::io::IdxType::U8, {4}, {1, 2, 3, 9}};
  nuq::io::write_idx((root / "idx" / "labels.idx").string(), labels);
  nuq::io::IdxArray doubles{nuq::io::IdxType::F64, {2}, Bytes(16, 0x3f)};
  nuq::io::write_idx((root / "idx" / "f64.idx").string(), doubles);
  nuq::io::IdxArray shorts{nuq::io::IdxType::I16, {1, 1, 1, 2}, Bytes(4, 7)};
  nuq::io::write_idx((root / "idx" / "i16.idx").string(), shorts);
  return 0;
}
