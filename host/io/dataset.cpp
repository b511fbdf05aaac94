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

Dataset load_split(const std::string& dir, const std::string& split) {
  NUQ_REQUIRE(split == "train" || split == "t10k", "unknown split '", split, "' (train or t10k)");
  const std::string image_path = find_file(dir, split + "-images-idx3-ubyte");
  const std::string label_path = find_file(dir, split + "-labels-idx1-ubyte");
  const IdxArray images = read_idx(image_path);
  const IdxArray labels = read_idx(label_path);
  NUQ_REQUIRE(images.type == IdxType::U8 && images.dims.size() == 3, image_path,
              ": expected unsigned bytes of rank 3 (count, rows, columns)");
  NUQ_REQUIRE(labels.type == IdxType::U8 && labels.dims.size() == 1, label_path,
              ": expected unsigned bytes of rank 1");
  NUQ_REQUIRE(images.dims[0] == labels.dims[0], label_path, ": ", labels.dims[0], " labels for ",
              images.dims[0], " images in ", image_path);
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

Dataset load_network_split(const std::string& dir, const std::string& split) {
  Dataset d = load_split(dir, split);
  NUQ_REQUIRE(d.rows == kImageSide && d.cols == kImageSide, find_file(dir, split + "-images-idx3-ubyte"),
              ": the images are ", d.rows, "x", d.cols, "; nuq's networks take ", kImageSide, "x", kImageSide,
              " (MNIST, Fashion-MNIST)");
  return d;
}

}  // namespace nuq::io
