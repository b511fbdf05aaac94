// How many threads nuq's CPU loops run on: OpenMP's count for the calling thread (OMP_NUM_THREADS,
// omp_set_num_threads, and torch.set_num_threads where PyTorch shares nuq's OpenMP runtime, as
// Debian's does), unless set_cpu_threads chose one. Every `omp parallel` of nuq names cpu_threads()
// in a num_threads clause, so that the choice holds whatever others set OpenMP's count to.
//
// Following OpenMP by default keeps nuq's layers in a PyTorch model on torch's count, as torch's own
// layers are. Where torch counts one core for its loops but its GEMMs run OpenBLAS's threads on all
// of them (Debian's PyTorch on this project's 2-core VMs), nuq then runs on one thread; two pools of
// threads on the same cores would make each wait for the other's spinning (bench/results/
// cpu-nn-layers-threads-2026-12-06.md). A process that runs nuq alone (the nuq CLI) gets every CPU.
// Codes and statistics never depend on the count (host/omp_threads.h); products of more than 16
// rows of X, summed by OpenBLAS over panels whose size follows it, may differ in the last bits.
#pragma once

namespace nuq {

// The most threads set_cpu_threads accepts: a count beyond any machine's cores is refused rather
// than handed to OpenMP, which would try to start that many threads.
constexpr int kMaxCpuThreads = 1024;

// The threads every parallel CPU loop of nuq uses: set_cpu_threads's count, else OpenMP's for the
// calling thread. 1 in a build without OpenMP.
int cpu_threads();

// Sets the count for every thread of the process; 0 follows OpenMP's again. Throws nuq::Error for
// a count outside [0, kMaxCpuThreads].
void set_cpu_threads(int threads);

}  // namespace nuq
