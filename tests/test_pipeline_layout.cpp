// The device weight pipeline's maps and per-thread loops (kernels/pipeline_layout.h,
// kernels/pipeline_thread.h) run on the CPU, before any kernel does: the fast divisor against
// integer division; the flat word layout and the unit layout against pack_codes at every stored
// width and many counts and shapes; then every thread of a launch emulated by a host loop over the
// kernels' own thread functions, whose codes must be byte-identical to quantize_ref's and whose
// totals and statistics must match the double references within bounds derived below.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "../kernels/pipeline_thread.h"
#include "backend_cases.h"
#include "nuq/packed.h"
#include "nuq/quantize_table.h"
#include "nuq/stats.h"

namespace nuq {
namespace {

using namespace pipeline;

constexpr int kWidths[] = {1, 2, 4, 8, 16};
constexpr double kUnit = 0x1p-24;  // FP32's unit roundoff

// ---- FastDivisor --------------------------------------------------------------------------------

void expect_divides(std::uint32_t d, std::uint32_t n) {
  const FastDivisor f(d);
  ASSERT_EQ(f.quotient(n), n / d) << n << " / " << d;
}

TEST(PipelineLayout, FastDivisorIsIntegerDivisionOnEveryNumeratorBelow2To31) {
  // Every divisor up to 1000 with every numerator up to 20000, then the numerators near 2^31.
  for (std::uint32_t d = 1; d <= 1000; ++d) {
    for (std::uint32_t n = 0; n < 20000; ++n) expect_divides(d, n);
    for (std::uint32_t n = 0x7FFFFFFFu; n > 0x7FFFFFFFu - 2000; --n) expect_divides(d, n);
  }
  // Powers of two and their neighbours (where the rounding of the multiplier is tightest), and
  // random pairs, numerators at multiples of the divisor and one below.
  std::mt19937 rng(5);
  std::vector<std::uint32_t> divisors;
  for (int s = 1; s < 32; ++s)
    for (std::int64_t delta : {-1, 0, 1}) divisors.push_back(std::uint32_t((std::int64_t{1} << s) + delta));
  for (int i = 0; i < 2000; ++i) divisors.push_back(rng() | 1u);
  for (std::uint32_t d : divisors) {
    for (int i = 0; i < 200; ++i) expect_divides(d, rng() & 0x7FFFFFFFu);
    for (std::uint64_t q = 1; q * d < 0x80000000u && q < 1000; ++q) {
      expect_divides(d, std::uint32_t(q * d));
      expect_divides(d, std::uint32_t(q * d - 1));
    }
  }
}

// ---- the two layouts against pack_codes ---------------------------------------------------------

std::vector<std::uint32_t> random_codes(std::size_t count, int bits, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint32_t> codes(count);
  const std::uint32_t mask = bits == 16 ? 0xFFFFu : (1u << bits) - 1u;
  for (auto& c : codes) c = rng() & mask;
  return codes;
}

// The flat word layout's stream: every whole item packed by pack_item and stored at
// item_first_byte, the tail by put_code, into a buffer of garbage.
template <int B>
std::vector<std::uint8_t> pack_flat(const std::vector<std::uint32_t>& codes, std::size_t bytes) {
  std::vector<std::uint8_t> out(bytes, 0xA5);
  const FlatPlan plan = flat_plan<B>(codes.size());
  for (std::size_t item = 0; item < plan.items; ++item) {
    std::uint32_t item_codes[Item<B>::kWeights];
    for (int i = 0; i < Item<B>::kWeights; ++i) item_codes[i] = codes[item_first_weight<B>(item) + std::size_t(i)];
    std::uint32_t words[Item<B>::kWords];
    pack_item<B>(item_codes, words);
    std::memcpy(out.data() + item_first_byte<B>(item), words, sizeof(words));
  }
  for (std::size_t i = item_first_weight<B>(plan.items); i < codes.size(); ++i) put_code(out.data(), i, B, codes[i]);
  return out;
}

template <int B>
void check_flat_layout() {
  // One row of every count up to 300 and some far beyond an item; several rows whenever their
  // codes fill whole bytes.
  std::vector<std::pair<std::size_t, std::size_t>> shapes;
  for (std::size_t n = 0; n <= 300; ++n) shapes.push_back({1, n});
  for (std::size_t n : {1023u, 4096u, 4097u, 65537u}) shapes.push_back({1, n});
  for (std::size_t rows : {2u, 3u, 17u})
    for (std::size_t cols = 1; cols <= 96; ++cols)
      if (cols * B % 8 == 0) shapes.push_back({rows, cols});
  for (const auto& [rows, cols] : shapes) {
    const std::vector<std::uint32_t> codes = random_codes(rows * cols, B, std::uint32_t(rows * 1000 + cols));
    const PackedCodes expected = pack_codes(codes, rows, cols, B);
    ASSERT_EQ(pack_flat<B>(codes, expected.bytes.size()), expected.bytes) << B << " bits, " << rows << " x " << cols;
  }
}

TEST(PipelineLayout, FlatWordLayoutIsThePackedLayoutAtEveryWidth) {
  check_flat_layout<1>();
  check_flat_layout<2>();
  check_flat_layout<4>();
  check_flat_layout<8>();
  check_flat_layout<16>();
}

TEST(PipelineLayout, UnitLayoutIsThePackedLayoutOfEveryShape) {
  for (int bits : kWidths)
    for (std::size_t rows = 1; rows <= 5; ++rows)
      for (std::size_t cols = 1; cols <= 70; ++cols) {
        const std::vector<std::uint32_t> codes = random_codes(rows * cols, bits, std::uint32_t(cols * 7 + rows));
        const PackedCodes expected = pack_codes(codes, rows, cols, bits);
        std::vector<std::uint8_t> out(expected.bytes.size(), 0xA5);
        const UnitPlan plan = unit_plan(rows, cols, bits);
        for (std::uint32_t u = 0; u < plan.units; ++u) {
          const Unit unit = unit_at(plan, u);
          ASSERT_LT(unit.row, rows);
          std::uint32_t word = 0;
          for (std::uint32_t c = 0; c < unit.weights; ++c)
            word |= codes[unit.row * cols + unit.first_col + c] << (c * unsigned(bits));
          out[unit.first_byte] = std::uint8_t(word);
          if (bits == 16) out[unit.first_byte + 1] = std::uint8_t(word >> 8);
        }
        ASSERT_EQ(out, expected.bytes) << bits << " bits, " << rows << " x " << cols;
      }
}

TEST(PipelineLayout, FlatLayoutOnlyWhereRowsAreContiguousAndAligned) {
  EXPECT_TRUE(flat_layout_applies(1, 17, 2, false, 0, 0));     // one row: padding only at its end
  EXPECT_TRUE(flat_layout_applies(3, 20, 2, false, 16, 32));   // 40 bits a row: whole bytes
  EXPECT_FALSE(flat_layout_applies(3, 17, 2, false, 0, 0));    // 34 bits a row: padded
  EXPECT_TRUE(flat_layout_applies(3, 17, 8, false, 0, 0));     // bytes at 8 bits
  EXPECT_FALSE(flat_layout_applies(3, 20, 2, true, 0, 0));     // per-row items would straddle rows
  EXPECT_TRUE(flat_layout_applies(3, 32, 2, true, 0, 0));
  EXPECT_FALSE(flat_layout_applies(3, 48, 1, true, 0, 0));     // 32-weight items at one bit
  EXPECT_FALSE(flat_layout_applies(1, 64, 2, false, 4, 0));    // weights not 16-byte aligned
  EXPECT_FALSE(flat_layout_applies(1, 64, 2, false, 0, 8));    // codes not 16-byte aligned
}

// ---- one launch of the quantize pass, thread by thread ------------------------------------------

// Every thread of a launch of `threads` threads through the kernels' thread functions (the same
// layout choice as launch_quantize), joined on the host.
QuantizeTotals emulate_quantize(const float* values, std::size_t rows, std::size_t cols, const QuantizeTable& table,
                                std::uint8_t* packed, std::size_t threads, bool force_units) {
  const TableSource source{table.thresholds.data(), table.levels.data(), table.params.data(), table.levels_count,
                           table.groups != 1};
  const PieceShape piece{rows, cols, 0, 0, cols, 0};
  const bool flat = !force_units && use_flat_layout(piece, table.bits, source.per_row, values, packed);
  QuantizeTotals totals;
  for (std::size_t thread = 0; thread < threads; ++thread) {
    ErrorThread mine;
    const auto run = [&](auto width) {
      constexpr int B = decltype(width)::value;
      if (!flat) quantize_units_thread<B>(values, piece, source, packed, thread, threads, mine);
      else if (source.per_row) quantize_flat_thread<B, true>(values, piece, source, packed, thread, threads, mine);
      else quantize_flat_thread<B, false>(values, piece, source, packed, thread, threads, mine);
    };
    switch (table.bits) {
      case 1: run(std::integral_constant<int, 1>{}); break;
      case 2: run(std::integral_constant<int, 2>{}); break;
      case 4: run(std::integral_constant<int, 4>{}); break;
      case 8: run(std::integral_constant<int, 8>{}); break;
      case 16: run(std::integral_constant<int, 16>{}); break;
      default: ADD_FAILURE() << table.bits;
    }
    totals = combine(totals, mine.totals());
  }
  return totals;
}

// The bound on the FP32 part of signal and noise. An item's sum is kVectors fused multiply-adds
// per lane and two pairwise additions of the four lanes: relative error at most (kVectors + 2) u
// for the squares of weights; an error e = fl(w - level) is off by at most u |e|, its square by
// 2u, so (kVectors + 4) u for the noise. Every term is non-negative, so the bound holds for the
// total, to which the double sums add at most n 2^-53 relative.
double sums_tolerance(int bits, std::size_t n) {
  const int vectors = bits == 1 ? 8 : 4;
  return double(vectors + 4) * kUnit + double(n) * 0x1p-53;
}

void compare_quantize(const std::vector<float>& w, std::size_t rows, std::size_t cols, const QuantizeTable& table,
                      std::size_t threads, bool force_units, const std::string& what) {
  const std::size_t bytes = rows * packed_row_bytes(cols, table.bits);
  std::vector<std::uint8_t> expected(bytes), packed(bytes + 16, 0x5A);
  const QuantizeTotals r = quantize_ref(w.data(), rows, cols, table, expected.data());
  const QuantizeTotals g = emulate_quantize(w.data(), rows, cols, table, packed.data(), threads, force_units);
  for (std::size_t i = 0; i < bytes; ++i) ASSERT_EQ(packed[i], expected[i]) << what << ": code byte " << i;
  for (std::size_t i = bytes; i < packed.size(); ++i) ASSERT_EQ(packed[i], 0x5A) << what << ": wrote past the codes";
  const double tolerance = sums_tolerance(table.bits, w.size());
  EXPECT_NEAR(g.signal, r.signal, tolerance * r.signal) << what;
  EXPECT_NEAR(g.noise, r.noise, tolerance * r.noise) << what;
  EXPECT_EQ(g.max_error, r.max_error) << what;
  EXPECT_EQ(g.inside, r.inside) << what;
  EXPECT_EQ(g.nonfinite, r.nonfinite) << what;
  EXPECT_EQ(g.first_nonfinite, r.first_nonfinite) << what;
  if (r.noise > 0.0) {  // a pass that accumulates nothing fails
    EXPECT_GT(g.noise, 0.0) << what;
  }
}

TEST(PipelineEmulation, QuantizeCodesIdenticalToTheReferenceAtEveryWidthCountAndThreadCount) {
  const auto codebooks = test::codebooks_of_every_width();
  for (std::size_t n : {0u, 1u, 15u, 16u, 17u, 31u, 32u, 33u, 100u, 4099u, 20000u}) {
    const std::vector<float> w = test::draw(test::Law::Laplace, n, 0.02, 0.07, std::uint32_t(n + 3));
    const WeightStats s = stats_ref(w.data(), w.size(), "w");
    for (const auto& c : codebooks) {
      const QuantizeTable table = make_quantize_table(c.codebook, c.storage_bits, {Affine{s.mean, n ? s.stddev() : 1.0}});
      for (std::size_t threads : {1u, 7u, 768u})
        for (bool units : {false, true})
          compare_quantize(w, 1, n, table, threads, units,
                           c.name + " n=" + std::to_string(n) + " threads=" + std::to_string(threads) +
                               (units ? " units" : " flat"));
    }
  }
}

TEST(PipelineEmulation, QuantizeMatricesPerTensorAndPerRow) {
  const auto codebooks = test::codebooks_of_every_width();
  // Whole-byte rows (flat), padded rows (units), rows of whole items (flat per row) and not.
  for (const auto& [rows, cols] :
       std::vector<std::pair<std::size_t, std::size_t>>{{53, 17}, {7, 48}, {9, 64}, {5, 100}, {4, 333}, {3, 32}})
    for (bool per_row : {false, true}) {
      const std::vector<float> w = test::draw(test::Law::Gauss, rows * cols, 0.0, 1.0, std::uint32_t(rows + cols));
      for (const auto& c : codebooks) {
        if (per_row && c.storage_bits > 8) continue;  // per-channel tables stop at 8 bits, as in nuq
        std::vector<Affine> groups(per_row ? rows : 1, Affine{0.0, 1.0});
        for (std::size_t g = 0; g < groups.size(); ++g) groups[g] = Affine{0.01 * double(g), 1.0 + 0.05 * double(g % 7)};
        const QuantizeTable table = make_quantize_table(c.codebook, c.storage_bits, groups);
        compare_quantize(w, rows, cols, table, 33, false,
                         std::to_string(rows) + "x" + std::to_string(cols) + (per_row ? " per-row " : " ") + c.name);
      }
    }
}

TEST(PipelineEmulation, NonFiniteAndHugeWeightsAsTheReferenceTakesThem) {
  std::vector<float> w = test::draw(test::Law::Laplace, 1000, 0.0, 1.0, 11);
  w[3] = NAN;                                        // inside the first item
  w[40] = std::numeric_limits<float>::infinity();    // another item
  w[41] = -std::numeric_limits<float>::infinity();
  w[600] = 3e30f;                                    // finite, but its square overflows FP32
  w[999] = NAN;                                      // in the tail at every width
  const auto codebooks = test::codebooks_of_every_width();
  for (const auto& c : codebooks) {
    const QuantizeTable table = make_quantize_table(c.codebook, c.storage_bits, {Affine{0.0, 1.0}});
    for (std::size_t threads : {1u, 5u})
      compare_quantize(w, 1, w.size(), table, threads, false, "non-finite " + c.name);
  }
}

TEST(PipelineEmulation, AConstantTensorCodesAsTheReference) {
  const std::vector<float> w(777, 0.25f);
  for (const auto& c : test::codebooks_of_every_width()) {
    const QuantizeTable table = make_quantize_table(c.codebook, c.storage_bits, {Affine{0.25, 0.0}});
    compare_quantize(w, 1, w.size(), table, 9, false, "constant " + c.name);
  }
}

// Weights of tiny sigma (a layer scaled to almost nothing, subnormals): their squares fall below
// FP32's normal range, so the items' FP32 sums would lose their digits (at sigma = 1e-24 the
// signal and noise came out 0, the spread a quarter of the true one). They are summed in double.
TEST(PipelineEmulation, TinyWeightsAreSummedAsTheReferenceSumsThem) {
  const auto codebooks = test::codebooks_of_every_width();
  for (double sigma : {1e-18, 1e-21, 1e-24, 1e-30, 1e-40}) {
    const std::vector<float> w = test::draw(test::Law::Laplace, 4099, 0.0, sigma, 17);
    const WeightStats s = stats_ref(w.data(), w.size(), "w");
    ASSERT_GT(s.m2, 0.0) << sigma;
    for (const auto& c : codebooks) {
      const QuantizeTable table = make_quantize_table(c.codebook, c.storage_bits, {Affine{s.mean, s.stddev()}});
      compare_quantize(w, 1, w.size(), table, 7, false, "sigma " + std::to_string(sigma) + " " + c.name);
    }
  }
}

// ---- one launch of the statistics pass, thread by thread ----------------------------------------

WeightStats emulate_stats(const float* values, std::size_t count, std::size_t threads) {
  WeightStats all;
  for (std::size_t thread = 0; thread < threads; ++thread) {
    StatsThread t;
    stats_thread(values, count, 0, thread, threads, t);
    WeightStats part;
    part.count = t.count;
    part.nonfinite = t.nonfinite;
    if (t.count > 0) part.mean = t.mean(), part.m2 = t.m2(), part.min = t.min, part.max = t.max;
    all = combine(all, part);
  }
  return all;
}

// Bounds (first order, u = 2^-24) on the FP32 parts of an item: its deviations d = fl(x - m) about
// its FP32 mean m are summed in four lanes of four, joined pairwise, so sum(d) is off by at most
// 6u sum|x - m| and sum(d^2) by 8u sum (x - m)^2. Over the items, sum|x - m| <= 2 sum|x - mean|
// and sum (x - m)^2 <= m2 (an item's own mean minimises its squares); the double combination
// 2 (m - K) sum(d) adds at most 2 (max - min) 6u sum|x - m|.
void compare_stats(const std::vector<float>& x, std::size_t offset, std::size_t threads, const std::string& what) {
  const float* values = x.data() + offset;
  const std::size_t n = x.size() - offset;
  const WeightStats r = stats_ref(values, n, "w", NonFinite::Skip);
  const WeightStats g = emulate_stats(values, n, threads);
  ASSERT_EQ(g.count, r.count) << what;
  ASSERT_EQ(g.nonfinite, r.nonfinite) << what;
  if (r.count == 0) return;
  EXPECT_EQ(g.min, r.min) << what;
  EXPECT_EQ(g.max, r.max) << what;
  double absolute_deviation = 0.0;
  for (std::size_t i = 0; i < n; ++i)
    if (std::isfinite(values[i])) absolute_deviation += std::abs(double(values[i]) - r.mean);
  const double mean_tolerance = 12.0 * kUnit * absolute_deviation / double(r.count) + 1e-15 * std::abs(r.mean);
  const double m2_tolerance = 8.0 * kUnit * r.m2 + 24.0 * kUnit * (r.max - r.min) * absolute_deviation +
                              1e-15 * (r.m2 + double(r.count) * r.mean * r.mean);
  EXPECT_NEAR(g.mean, r.mean, mean_tolerance) << what;
  EXPECT_NEAR(g.m2, r.m2, m2_tolerance) << what;
}

TEST(PipelineEmulation, StatisticsAgainstWelfordAtEveryAlignmentCountAndThreadCount) {
  for (std::size_t n : {1u, 2u, 3u, 4u, 5u, 15u, 16u, 17u, 19u, 20u, 33u, 1000u, 65539u})
    for (test::Law law : {test::Law::Laplace, test::Law::Uniform}) {
      // A mean far from zero against a small spread: the FP32 sums must be of deviations.
      const std::vector<float> x = test::draw(law, n + 3, 1000.0, 0.01, std::uint32_t(n));
      for (std::size_t offset = 0; offset < 4 && offset < x.size(); ++offset)
        for (std::size_t threads : {1u, 3u, 256u})
          compare_stats(x, offset, threads,
                        test::to_string(law) + " n=" + std::to_string(n) + " offset=" + std::to_string(offset) +
                            " threads=" + std::to_string(threads));
    }
}

TEST(PipelineEmulation, RowStatisticsAsTheWarpPerRowKernelTakesThem) {
  // launch_row_stats: a warp (32 lanes) per row, each row starting wherever row r * cols falls in
  // the chunk: every misalignment, rows shorter than a lane's item, groups of 128.
  for (const auto& [rows, cols] : std::vector<std::pair<std::size_t, std::size_t>>{{8, 128}, {9, 127}, {7, 3001}, {5, 1}, {4, 33}}) {
    const std::vector<float> w = test::draw(test::Law::Laplace, rows * cols, 0.3, 0.02, std::uint32_t(rows * cols));
    for (std::size_t r = 0; r < rows; ++r) {
      const std::size_t misalignment = (r * cols) % 4;  // floats past a 16-byte boundary, as in the chunk
      std::vector<float> x(misalignment, 0.0f);
      x.insert(x.end(), w.begin() + std::ptrdiff_t(r * cols), w.begin() + std::ptrdiff_t((r + 1) * cols));
      compare_stats(x, misalignment, 32, std::to_string(rows) + "x" + std::to_string(cols) + " row " + std::to_string(r));
    }
  }
}

TEST(PipelineEmulation, StatisticsOfTinyWeightsAsTheReference) {
  for (double sigma : {1e-18, 1e-21, 1e-24, 1e-30, 1e-40})
    for (double mean : {0.0, 3.0 * sigma}) {
      const std::vector<float> x = test::draw(test::Law::Laplace, 1003, mean, sigma, 23);
      for (std::size_t threads : {1u, 16u}) {
        const std::string what = "sigma " + std::to_string(sigma) + " mean " + std::to_string(mean) + " threads " +
                                 std::to_string(threads);
        compare_stats(x, 0, threads, what);
        ASSERT_GT(emulate_stats(x.data(), x.size(), threads).m2, 0.0) << what;
      }
    }
}

TEST(PipelineEmulation, StatisticsCountNonFiniteAndHugeWeightsAsTheReference) {
  std::vector<float> x = test::draw(test::Law::Laplace, 5000, -0.001, 0.05, 2);
  x[7] = NAN;
  x[100] = std::numeric_limits<float>::infinity();
  x[4999] = -std::numeric_limits<float>::infinity();
  x[2000] = 1e25f;  // finite, but its deviation squared overflows FP32: the item is redone in double
  for (std::size_t threads : {1u, 16u}) {
    compare_stats(x, 0, threads, "non-finite threads=" + std::to_string(threads));
    StatsThread first;
    stats_thread(x.data(), x.size(), 1000, 0, 1, first);
    EXPECT_EQ(first.first_nonfinite, 1007u);  // indices are offset as launch_stats reports them
  }
}

}  // namespace
}  // namespace nuq
