// The CPU's sums do not depend on the thread count: statistics, the fourth moment and the
// quantization pass's totals join fixed blocks in order (host/omp_threads.h), and pieces are cut
// into shares by their size alone (shares_of). So the same weights give the same mean, σ, SQNR and
// codes, bit for bit, on 2 cores and on 128. And nuq's loops run on the count set_cpu_threads chose,
// else on OpenMP's (nuq/cpu_threads.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "backend_cases.h"
#include "checkpoint_cases.h"
#include "temp_dir.h"
#include "nuq/backend.h"
#include "nuq/checkpoint_stream.h"
#include "nuq/cpu_threads.h"
#include "nuq/io/safetensors.h"
#include "nuq/packed.h"
#include "nuq/qgemm.h"
#include "nuq/quantize_in_memory.h"
#include "nuq/quantize_table.h"
#include "nuq/stats.h"
#include "nuq/tensor_pieces.h"
#include "qgemm_cases.h"

#include "../host/omp_threads.h"
#include "../host/panel_gemm.h"
#include "sanitizer_build.h"

namespace nuq {
namespace {

// Under LeakSanitizer, LLVM's libomp reports the threads of a team grown past its default size as
// leaked: the ASan+UBSan build tests the counts up to the machine's own.
constexpr bool kLeakChecked = test::kAddressSanitizer;

// Everything a run reports, as bits: doubles compared by their bytes (so -0 and NaN count too).
struct Outcome {
  WeightStats stats, in_memory;
  double fourth = 0.0;
  QuantizeTotals totals, in_memory_totals;
  std::vector<std::uint8_t> codes, in_memory_codes;
  std::string streamed;  // the file nuq quantize writes
};

std::vector<std::uint64_t> bits_of(std::initializer_list<double> values) {
  std::vector<std::uint64_t> out;
  for (double v : values) {
    std::uint64_t b;
    std::memcpy(&b, &v, 8);
    out.push_back(b);
  }
  return out;
}

void expect_same(const WeightStats& a, const WeightStats& b, int threads) {
  EXPECT_EQ(a.count, b.count) << threads;
  EXPECT_EQ(bits_of({a.mean, a.m2, a.min, a.max}), bits_of({b.mean, b.m2, b.min, b.max})) << threads << " threads";
}

void expect_same(const QuantizeTotals& a, const QuantizeTotals& b, int threads) {
  EXPECT_EQ(bits_of({a.signal, a.noise, a.max_error}), bits_of({b.signal, b.noise, b.max_error})) << threads << " threads";
  EXPECT_EQ(a.inside, b.inside) << threads;
}

TEST(ThreadCounts, EverySumIsTheSameWhateverTheThreadCount) {
#if !defined(_OPENMP)
  GTEST_SKIP() << "built without OpenMP: one thread only";
#else
  // 1,536 x 2,100 weights: 788 chunks of statistics, 50 runs of the quantization pass, 13 pieces of
  // 1 MiB cut into 7 shares each; mean and spread such that the sums' order shows in the last bits.
  constexpr std::size_t rows = 1536, cols = 2100;
  const std::vector<float> w = test::draw(test::Law::Laplace, rows * cols, 0.0123, 0.0456, 17);
  const Codebook codebook = test::msptq2();
  TensorInMemory tensor;
  tensor.data = w.data();
  tensor.shape = {std::int64_t(rows), std::int64_t(cols)};
  tensor.name = "w";
  InMemoryOptions options;
  options.normalisation = Normalisation::PerTensor;
  options.piece_bytes = 1 << 20;
  test::TempDir dir;
  const std::string input = dir.file("w.safetensors");
  io::TensorFile file;
  file.tensors["w"] = io::f32_tensor({std::int64_t(rows), std::int64_t(cols)}, w);
  io::write_safetensors(input, file);
  const int threads_before = omp_get_max_threads();
  std::vector<Outcome> runs;
  std::vector<int> counts;
  for (int threads : {1, 2, 3, 8})
    if (!kLeakChecked || threads <= threads_before) counts.push_back(threads);
  for (int threads : counts) {
    set_cpu_threads(threads);
    Outcome r;
    accumulate(r.stats, w.data(), w.size(), "w", NonFinite::Reject);
    r.fourth = fourth_moment(w.data(), WeightType::F32, w.size(), r.stats.mean, r.stats.stddev());
    const QuantizeTable table = make_quantize_table(codebook, 2, {Affine{r.stats.mean, r.stats.stddev()}});
    r.codes.resize(rows * packed_row_bytes(cols, 2));
    r.totals = quantize_fast(w.data(), rows, cols, table, r.codes.data());
    r.in_memory = in_memory_stats(tensor, codebook, options, cpu_backend());
    const QuantizedTensor q = quantize_in_memory(tensor, codebook, r.in_memory, r.in_memory, options, cpu_backend(),
                                                 &r.in_memory_totals);
    r.in_memory_codes = q.matrix.codes.bytes;
    // The streamed quantizer (nuq quantize) of the same weights in a file, in pieces of 1 MiB.
    StreamOptions stream;
    stream.normalisation = Normalisation::PerTensor;
    stream.piece_bytes = 1 << 20;
    quantize_checkpoint_files(input, dir.file("q" + std::to_string(threads) + ".safetensors"), codebook, stream,
                              cpu_backend());
    r.streamed = test::bytes_of(dir.file("q" + std::to_string(threads) + ".safetensors"));
    runs.push_back(std::move(r));
  }
  set_cpu_threads(0);
  for (std::size_t i = 1; i < runs.size(); ++i) {
    expect_same(runs[i].stats, runs[0].stats, counts[i]);
    expect_same(runs[i].in_memory, runs[0].in_memory, counts[i]);
    EXPECT_EQ(bits_of({runs[i].fourth}), bits_of({runs[0].fourth})) << counts[i] << " threads";
    expect_same(runs[i].totals, runs[0].totals, counts[i]);
    expect_same(runs[i].in_memory_totals, runs[0].in_memory_totals, counts[i]);
    EXPECT_EQ(runs[i].codes, runs[0].codes) << counts[i] << " threads";
    EXPECT_EQ(runs[i].in_memory_codes, runs[0].in_memory_codes) << counts[i] << " threads";
    EXPECT_TRUE(runs[i].streamed == runs[0].streamed) << counts[i] << " threads";
  }
  // And the sums are the right ones: within rounding of a serial double reference.
  double sum = 0.0;
  for (float v : w) sum += v;
  EXPECT_NEAR(runs[0].stats.mean, sum / double(w.size()), 1e-15);
#endif
}

// Batches past the direct rows multiply panels of decoded rows, each thread its own on a
// single-threaded OpenBLAS: the products are the same for every thread count and when two callers
// multiply at once, and OpenBLAS gets back the thread count it had (which the first of concurrent
// callers saves and the last one restores). 300 rows of 5,000 weights make three panels of 104,
// 104 and 92 rows; small integers keep every sum exact, so the reference is exact too.
TEST(ThreadCounts, PanelProductsAreTheSameAndOpenBlasGetsItsThreadsBack) {
#if !defined(_OPENMP)
  GTEST_SKIP() << "built without OpenMP: one thread only";
#else
  constexpr std::size_t n = 300, k = 5000, m = 40;
  ASSERT_EQ(detail::kPanelBytes / (sizeof(float) * k), 104u);
  std::mt19937 rng(41);
  std::uniform_int_distribution<int> small(-3, 3);
  std::vector<float> x(m * k), bias(n), reference(m * n);
  for (auto& v : x) v = float(small(rng));
  for (auto& v : bias) v = float(small(rng));
  const int blas_threads = openblas_get_num_threads();
  const int threads_before = omp_get_max_threads();
  for (int bits : {8, 16}) {
    const QuantizedMatrix w = test::random_matrix(n, k, bits, rng, true);
    qgemm_ref(x.data(), m, w, bias.data(), reference.data());
    for (int threads : {1, 2, 3, 8}) {
      if (kLeakChecked && threads > threads_before) continue;
      set_cpu_threads(threads);
      std::vector<float> y(m * n, NAN);
      qgemm(x.data(), m, w, bias.data(), y.data());
      EXPECT_EQ(y, reference) << bits << " bits, " << threads << " threads";
      EXPECT_EQ(openblas_get_num_threads(), blas_threads) << threads << " threads";
    }
    set_cpu_threads(0);
    if (kLeakChecked) continue;  // each caller's thread would grow a team of its own (see above)
    std::vector<float> first(m * n, NAN), second(m * n, NAN);
    {
      std::thread a([&] { for (int i = 0; i < 4; ++i) qgemm(x.data(), m, w, bias.data(), first.data()); });
      std::thread b([&] { for (int i = 0; i < 4; ++i) qgemm(x.data(), m, w, bias.data(), second.data()); });
      a.join();
      b.join();
    }
    EXPECT_EQ(first, reference) << bits << " bits, concurrent";
    EXPECT_EQ(second, reference) << bits << " bits, concurrent";
    EXPECT_EQ(openblas_get_num_threads(), blas_threads) << "after concurrent products";
  }
#endif
}

// The threads a parallel loop of nuq ran on: the highest thread index that took one of 64 blocks, plus 1.
int threads_seen() {
  return ordered_sum<int>(64, [](std::size_t) { return thread_index() + 1; },
                          [](int a, int b) { return std::max(a, b); });
}

TEST(ThreadCounts, LoopsRunOnTheChosenCountElseOnOpenMps) {
  EXPECT_THROW(set_cpu_threads(-1), Error);
  EXPECT_THROW(set_cpu_threads(kMaxCpuThreads + 1), Error);
#if !defined(_OPENMP)
  EXPECT_EQ(cpu_threads(), 1);
#else
  const int openmp_before = omp_get_max_threads();
  if (openmp_before < 2) GTEST_SKIP() << "OpenMP runs one thread here: nothing to tell apart";
  EXPECT_EQ(cpu_threads(), openmp_before);
  EXPECT_EQ(threads_seen(), std::min(openmp_before, 64));
  omp_set_num_threads(1);  // what PyTorch does when it loads where it counts a single core
  EXPECT_EQ(cpu_threads(), 1);
  EXPECT_EQ(threads_seen(), 1);
  set_cpu_threads(2);  // chosen: OpenMP's count no longer matters
  EXPECT_EQ(cpu_threads(), 2);
  EXPECT_EQ(threads_seen(), 2) << "OpenMP's count took the place of the chosen one";
  omp_set_num_threads(openmp_before);
  set_cpu_threads(1);
  EXPECT_EQ(threads_seen(), 1) << "OpenMP's count took the place of the chosen one";
  set_cpu_threads(0);
  EXPECT_EQ(cpu_threads(), openmp_before);
  EXPECT_EQ(threads_seen(), std::min(openmp_before, 64));
#endif
}

// The lowest share's exception comes out as it was thrown, on any thread count: a NonFiniteWeight
// (which a streamed run treats apart, keeping a mask that holds -inf) is not turned into a plain
// Error, and a failed read is not taken for one.
TEST(ThreadCounts, SharesRethrowTheFirstFailureAsItWasThrown) {
  for (int threads : {1, 2}) {
    set_cpu_threads(threads);
    try {
      for_each_share(8, [](std::size_t i) {
        if (i == 5) throw Error("a read failed");
        if (i == 3) throw NonFiniteWeight("t", 7, -INFINITY);
      });
      ADD_FAILURE() << "no exception";
    } catch (const NonFiniteWeight& e) {
      EXPECT_EQ(e.index, 7u) << threads;
    }
    EXPECT_THROW(for_each_share(4, [](std::size_t i) { if (i >= 2) throw Error("a read failed"); }), Error);
    try {
      for_each_share(4, [](std::size_t i) { if (i == 1) throw Error("a read failed"); });
    } catch (const NonFiniteWeight&) {
      ADD_FAILURE() << "a failed read taken for a non-finite weight";
    } catch (const Error& e) {
      EXPECT_STREQ(e.what(), "a read failed");
    }
  }
  set_cpu_threads(0);
}

}  // namespace
}  // namespace nuq
