// The image-classification datasets of the papers (MNIST, Fashion-MNIST): 28x28 grey images with
// labels 0..9, read from their IDX files and scaled to [0, 1].
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace nuq::io {

struct Dataset {
  std::size_t count = 0;
  std::size_t rows = 0, cols = 0;
  std::vector<float> images;          // count x rows x cols, pixel / 255
  std::vector<std::uint8_t> labels;   // count, each < kClasses
  std::size_t features() const { return rows * cols; }
};

constexpr int kClasses = 10;

// The data folder: the --data flag if given (non-empty), else $NUQ_DATA, else "data".
std::string data_root(const std::string& flag = "");

// Whether `name` is a data set nuq knows: "mnist" or "fashion".
bool is_known_dataset(const std::string& name);

// The folder of a dataset ("mnist" or "fashion") under the data root.
std::string dataset_dir(const std::string& root, const std::string& name);

// Loads split "train" or "t10k" from `dir` (files <split>-images-idx3-ubyte and
// <split>-labels-idx1-ubyte, raw or with .gz). Throws nuq::Error naming the file and the problem,
// and saying how to fetch the data when it is missing.
Dataset load_split(const std::string& dir, const std::string& split);

// The side of the images nuq's networks take (MNIST, Fashion-MNIST).
constexpr std::size_t kImageSide = 28;

// load_split for the networks: images of kImageSide x kImageSide, else an error naming the file
// (other images would be read past their end, or misread, by the first layer).
Dataset load_network_split(const std::string& dir, const std::string& split);

}  // namespace nuq::io
