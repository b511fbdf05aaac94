// NUQ_HOST_DEVICE marks the few functions compiled for both the host and CUDA kernels (the
// closed-form distortion, the quantization rule), so the two backends share one definition.
#pragma once

#if defined(__CUDACC__)
#define NUQ_HOST_DEVICE __host__ __device__
#else
#define NUQ_HOST_DEVICE
#endif
