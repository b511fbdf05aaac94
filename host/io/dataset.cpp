#include "nuq/io/dataset.h"

#include <cstdlib>
#include <filesystem>

#include "nuq/error.h"
#include "nuq/io/idx.h"

namespace nuq::io {
namespace {

std::string find_file(const std::string& dir, const std::string& stem) {
  std::error_code error;
  NUQ_REQUIRE(std::filesystem::is_directory(dir, error), dir, ": ",
              std::filesystem::exists(dir, error) ? "not a folder" : "no such folder",
              "; run scripts/fetch-data, or point --data / NUQ_DATA at a folder that holds mnist/ and fashion/");
  for (const std::string& name : {stem, stem + ".gz"}) {
    const std::filesystem::path path = std::filesystem::path(dir) / name;
    if (std::filesystem::exists(path)) return path.string();
  }
  throw Error(dir + ": no " + stem + " (or " + stem + ".gz); run scripts/fetch-data, or point "
              "--data / NUQ_DATA at a folder that holds mnist/ and fashion/");
}

}  // namespace

std::string data_root(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("NUQ_DATA"); env && *env) return env;
  return "data";
}

bool is_known_dataset(const std::string& name) { return name == "mnist" || name == "fashion"; }

std::string dataset_dir(const std::string& root, const std::string& name) {
  NUQ_REQUIRE(is_known_dataset(name), "unknown dataset '", name,
              "' (choose mnist or fashion)");
  return (std::filesystem::path(root) / name).string();
}

namespace {

// The checks a split's two files must pass, made on their headers (before their data is read: a
// 1 MB gzip may promise a GB of images) and again on what was read.
void check_split(const IdxArray& images, const IdxArray& labels, const std::string& image_path,
                 const std::string& label_path) {
  NUQ_REQUIRE(images.type == IdxType::U8 && images.dims.size() == 3, image_path,
              ": expected unsigned bytes of rank 3 (count, rows, columns)");
  NUQ_REQUIRE(labels.type == IdxType::U8 && labels.dims.size() == 1, label_path,
              ": expected unsigned bytes of rank 1");
  NUQ_REQUIRE(images.dims[0] == labels.dims[0], label_path, ": ", labels.dims[0], " labels for ",
              images.dims[0], " images in ", image_path);
}

// `side` x `side` images where side > 0, checked from the header first.
Dataset read_split(const std::string& dir, const std::string& split, std::size_t side) {
  NUQ_REQUIRE(split == "train" || split == "t10k", "unknown split '", split, "' (train or t10k)");
  const std::string image_path = find_file(dir, split + "-images-idx3-ubyte");
  const std::string label_path = find_file(dir, split + "-labels-idx1-ubyte");
  const IdxArray image_header = read_idx_header(image_path);
  check_split(image_header, read_idx_header(label_path), image_path, label_path);
  NUQ_REQUIRE(!side || (image_header.dims[1] == side && image_header.dims[2] == side), image_path, ": the images are ",
              image_header.dims[1], "x", image_header.dims[2], "; nuq's networks take ", side, "x", side,
              " (MNIST, Fashion-MNIST)");
  const IdxArray images = read_idx(image_path);
  const IdxArray labels = read_idx(label_path);
  check_split(images, labels, image_path, label_path);
  NUQ_REQUIRE(images.dims == image_header.dims, image_path, ": changed while read");
  Dataset d;
  d.count = images.dims[0];
  d.rows = images.dims[1];
  d.cols = images.dims[2];
  d.images.resize(images.bytes.size());
  for (std::size_t i = 0; i < images.bytes.size(); ++i) d.images[i] = images.bytes[i] / 255.0f;
  d.labels = labels.bytes;
  for (std::size_t i = 0; i < d.count; ++i)
    NUQ_REQUIRE(d.labels[i] < kClasses, label_path, ": label ", i, " is ", int{d.labels[i]},
                ", not a class 0..", kClasses - 1);
  return d;
}

}  // namespace

Dataset load_split(const std::string& dir, const std::string& split) { return read_split(dir, split, 0); }

Dataset load_network_split(const std::string& dir, const std::string& split) {
  return read_split(dir, split, kImageSide);
}

}  // namespace nuq::io
