// The quantized MNIST MLP in one kernel for small batches (batch-1 latency): a block takes up to
// kFusedMaxBatch images, keeps them and both hidden layers in shared memory, and runs the three
// dense layers back to back straight from the packed codes (a group of lanes per output row), so
// an image costs one launch instead of four and its activations never leave the SM.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "qgemm.cuh"

namespace nuq::cuda {

constexpr std::size_t kFusedMaxBatch = 4;

struct FusedMlp {
  DeviceQuantizedMatrix layers[3];  // 784 -> 512 -> 512 -> 10, all of one code width
  const float* bias[3];
};

// classes[i] = argmax of the logits of image i, for `count` images (28 x 28 floats each).
void launch_fused_mlp(const float* d_images, std::size_t count, const FusedMlp& mlp, std::uint8_t* d_classes,
                      cudaStream_t stream);

}  // namespace nuq::cuda
