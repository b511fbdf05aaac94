// The CUDA batch distortion against the host closed form. Labelled `gpu`; skipped where no CUDA
// device is visible (and in builds without the CUDA backend), never passed without running.
#include <gtest/gtest.h>

#include <random>

#include "nuq/cuda.h"
#include "nuq/design.h"
#include "nuq/error.h"
#include "nuq/laplace.h"
#include "nuq/uniform.h"

namespace nuq {
namespace {

class LaplaceDistortionGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::devices().empty()) GTEST_SKIP() << cuda::unavailable_reason();
  }
};

TEST_F(LaplaceDistortionGpu, MatchesTheHostOnRandomAndLargeCodebooks) {
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> xmax(0.1, 9.0);
  std::vector<Codebook> batch;
  for (Method method : {Method::Sptq, Method::Msptq, Method::Uniform, Method::MuLaw, Method::Ternary}) {
    DesignSpec spec;
    spec.method = method;
    for (int i = 0; i < 64; ++i) batch.push_back(codebook_at_xmax(spec, xmax(rng)));
  }
  for (std::size_t levels : {2u, 255u, 4096u, 65536u}) batch.push_back(uniform_codebook(levels, 11.0));
  for (double sigma : {1.0, 0.03, 4.0}) {
    const std::vector<Distortion> gpu = cuda::laplace_distortion_batch(batch, sigma);
    ASSERT_EQ(gpu.size(), batch.size());
    for (std::size_t b = 0; b < batch.size(); ++b) {
      const Distortion host = laplace_distortion(batch[b], sigma);
      ASSERT_GT(gpu[b].total(), 0.0) << "codebook " << b;  // a kernel that writes nothing fails
      EXPECT_NEAR(gpu[b].granular, host.granular, 1e-12 * host.total()) << "codebook " << b;
      EXPECT_NEAR(gpu[b].overload, host.overload, 1e-12 * host.total()) << "codebook " << b;
    }
  }
}

TEST_F(LaplaceDistortionGpu, EmptyBatchAndBadArguments) {
  EXPECT_TRUE(cuda::laplace_distortion_batch({}, 1.0).empty());
  const std::vector<Codebook> one{uniform_codebook(4, 2.0)};
  EXPECT_THROW(cuda::laplace_distortion_batch(one, 0.0), Error);
  EXPECT_THROW(cuda::laplace_distortion_batch(one, 1.0, 1 << 20), Error);
}

TEST(CudaBackend, DeviceQueryNeverThrows) {
  // Runs everywhere: with or without a driver, the query answers and explains an empty list.
  const auto devices = cuda::devices();
  if (devices.empty()) {
    EXPECT_FALSE(cuda::unavailable_reason().empty());
  }
  for (const auto& d : devices) EXPECT_GT(d.global_memory_bytes, 0u);
}

}  // namespace
}  // namespace nuq
