// The quantized MNIST MLP in one kernel for small batches (batch-1 latency): a block takes up to
// kFusedMaxBatch images, keeps them and both hidden layers in shared memory, and runs the three
// dense layers back to back straight from the packed codes (a group of lanes per output row), so
// an image costs one launch instead of four and its activations never leave the SM (or, with a
// cluster per batch, the cluster's SMs).
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

// Blocks of a cluster that shares one batch (MlpLayout::ClusterPerBatch).
constexpr int kFusedClusterBlocks = 8;  // the portable cluster size

// classes[i] = argmax of the logits of image i, for `count` images (28 x 28 floats each). With
// MlpLayout::ClusterPerBatch on compute capability 9.0 or newer, each batch is shared by a cluster
// of kFusedClusterBlocks blocks: each takes an eighth of every layer's rows and stores its outputs
// into every block's copy of the next layer's input (distributed shared memory), one cluster
// barrier a layer; below 9.0 it is one block per batch.
void launch_fused_mlp(const float* d_images, std::size_t count, const FusedMlp& mlp, std::uint8_t* d_classes,
                      cudaStream_t stream, MlpLayout layout = MlpLayout::OneBlockPerBatch);

}  // namespace nuq::cuda
