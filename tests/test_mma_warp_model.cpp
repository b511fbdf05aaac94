// A host model of the small-batch tensor-core qgemm (kernels/qgemm_mma.cu): 32 lanes' registers,
// the B registers decoded from the fragment-order codes (one lane word a unit), the A registers
// gathered from X through the A map, and mma.m16n8k16 as the PTX ISA defines it (D = A B + C, each
// element of D found through the C map and each of its 16 products through the A and B maps, i.e.
// through the lanes that hold them). k is cut into slices (split-K) whose partial sums are added
// in slice order, as the kernel's finishing pass does. Against dequantize-then-GEMM in double on
// the BF16-rounded X and levels, this proves the layouts the kernel runs; the GPU run is then about
// speed.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <tuple>
#include <random>
#include <vector>

#include "nuq/mma_fragment.h"
#include "nuq/mma_prepack.h"
#include "nuq/qgemm.h"
#include "qgemm_cases.h"

namespace nuq {
namespace {

struct Warp {
  std::array<std::array<std::uint32_t, mma::kARegs>, mma::kLanes> a{};
  std::array<std::array<std::uint32_t, mma::kBRegs>, mma::kLanes> b{};
  std::array<std::array<float, mma::kCRegs>, mma::kLanes> c{};
};

float half_of(std::uint32_t reg, int half) { return mma::bf16_value(std::uint16_t(half ? reg >> 16 : reg & 0xFFFFu)); }

// mma.m16n8k16.row.col.f32.bf16.bf16.f32 with D = C: every product of two BF16 is exact in FP32 and
// in double; the 16 of an element and C are summed in double and rounded to FP32 once. (The
// hardware's own internal order and rounding differ; the tolerance below allows for one rounding
// of the running sum per k-step, which covers either.)
void mma_sync(Warp& warp) {
  std::array<std::array<float, mma::kCRegs>, mma::kLanes> d{};
  for (int lane = 0; lane < mma::kLanes; ++lane)
    for (int reg = 0; reg < mma::kCRegs; ++reg) {
      const mma::Coord at = mma::c_coord(lane, reg);
      double sum = warp.c[std::size_t(lane)][std::size_t(reg)];
      for (int k = 0; k < mma::kTileK; ++k) {
        const mma::Slot a = mma::a_slot(at.row, k), b = mma::b_slot(k, at.col);
        sum += double(half_of(warp.a[std::size_t(a.lane)][std::size_t(a.reg)], a.half)) *
               double(half_of(warp.b[std::size_t(b.lane)][std::size_t(b.reg)], b.half));
      }
      d[std::size_t(lane)][std::size_t(reg)] = float(sum);
    }
  warp.c = d;
}

// y[m, n] (no bias) the way qgemm_mma.cu computes it, with k cut into `slices` runs of whole units.
template <int kBits>
std::vector<float> warp_model(const std::vector<float>& x, std::size_t m, const QuantizedMatrix& w,
                              const FragmentCodes& fragments, std::size_t slices) {
  const std::size_t n = w.codes.rows, k = w.codes.cols;
  const std::size_t units_per_slice = (fragments.k_units + slices - 1) / slices;
  std::vector<float> partial(slices * m * n, 0.0f), y(m * n, 0.0f);
  const auto x_bf16 = [&](std::size_t row, std::size_t col) {  // X as the kernel stages it: BF16, 0 outside
    return row < m && col < k ? mma::bf16_round(x[row * k + col]) : std::uint16_t(0);
  };
  for (std::size_t block = 0; block < fragments.row_blocks; ++block) {
    // Each lane's decode table: the row of W its B elements lie in (rows past n: any table; their
    // outputs are never written).
    std::array<std::vector<std::uint32_t>, mma::kLanes> tables;
    for (int lane = 0; lane < mma::kLanes; ++lane) {
      const std::size_t row = std::min(block * 8 + std::size_t(mma::group_of(lane)), n - 1);
      std::vector<std::uint16_t> levels(std::size_t{1} << kBits);
      for (std::size_t c = 0; c < levels.size(); ++c) levels[c] = mma::bf16_round(w.row_levels(row)[c]);
      for (int e = 0; e < mma::decode_table_entries(kBits); ++e)
        tables[std::size_t(lane)].push_back(mma::decode_table_entry(levels.data(), e, kBits));
    }
    for (std::size_t tile = 0; tile * 16 < m; ++tile)
      for (std::size_t slice = 0; slice < slices; ++slice) {
        Warp warp;
        const std::size_t first = slice * units_per_slice, last = std::min(fragments.k_units, first + units_per_slice);
        for (std::size_t unit = first; unit < last; ++unit) {
          std::array<std::uint32_t[4], mma::kLanes> words;  // one 16-byte load per lane
          for (int lane = 0; lane < mma::kLanes; ++lane)
            std::memcpy(words[std::size_t(lane)],
                        fragments.bytes.data() + mma::unit_offset(block, unit, fragments.k_units) + lane * 16, 16);
          for (int step = 0; step < mma::unit_steps(kBits); ++step) {
            const std::size_t k0 = unit * std::size_t(mma::unit_cols(kBits)) + std::size_t(step) * 16;
            for (int lane = 0; lane < mma::kLanes; ++lane) {
              const auto& table = tables[std::size_t(lane)];
              for (int reg = 0; reg < mma::kBRegs; ++reg)
                warp.b[std::size_t(lane)][std::size_t(reg)] = mma::decode_register<kBits>(
                    mma::pair_code<kBits>(words[std::size_t(lane)], step, reg), [&](int e) { return table[std::size_t(e)]; });
              for (int reg = 0; reg < mma::kARegs; ++reg) {
                const mma::Coord lo = mma::a_coord(lane, reg, 0), hi = mma::a_coord(lane, reg, 1);
                warp.a[std::size_t(lane)][std::size_t(reg)] =
                    x_bf16(tile * 16 + std::size_t(lo.row), k0 + std::size_t(lo.col)) |
                    std::uint32_t(x_bf16(tile * 16 + std::size_t(hi.row), k0 + std::size_t(hi.col))) << 16;
              }
            }
            mma_sync(warp);
          }
        }
        for (int lane = 0; lane < mma::kLanes; ++lane)
          for (int reg = 0; reg < mma::kCRegs; ++reg) {
            const mma::Coord at = mma::c_coord(lane, reg);
            const std::size_t i = tile * 16 + std::size_t(at.row), r = block * 8 + std::size_t(at.col);
            if (i < m && r < n) partial[(slice * m + i) * n + r] = warp.c[std::size_t(lane)][std::size_t(reg)];
          }
      }
  }
  for (std::size_t e = 0; e < m * n; ++e)  // the finishing pass: slices in order
    for (std::size_t slice = 0; slice < slices; ++slice) y[e] += partial[slice * m * n + e];
  return y;
}

std::vector<float> run_model(const std::vector<float>& x, std::size_t m, const QuantizedMatrix& w, std::size_t slices) {
  const FragmentCodes fragments = to_fragment_order(w.codes);
  switch (w.codes.bits) {  // the test's one place where the width becomes a template argument
    case 1: return warp_model<1>(x, m, w, fragments, slices);
    case 2: return warp_model<2>(x, m, w, fragments, slices);
    case 4: return warp_model<4>(x, m, w, fragments, slices);
    default: return warp_model<8>(x, m, w, fragments, slices);
  }
}

// Dequantize, then the GEMM in double on BF16-rounded X and levels; and sum |x w| per output for the bound.
struct Reference {
  std::vector<double> y, magnitude;
};
Reference bf16_gemm(const std::vector<float>& x, std::size_t m, const QuantizedMatrix& w) {
  const std::size_t n = w.codes.rows, k = w.codes.cols;
  const std::vector<float> dense = dequantize(w);
  Reference ref{std::vector<double>(m * n), std::vector<double>(m * n)};
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t r = 0; r < n; ++r)
      for (std::size_t c = 0; c < k; ++c) {
        const double product = double(mma::bf16_value(mma::bf16_round(x[i * k + c]))) *
                               double(mma::bf16_value(mma::bf16_round(dense[r * k + c])));
        ref.y[i * n + r] += product;
        ref.magnitude[i * n + r] += std::abs(product);
      }
  return ref;
}

// The bound: the products are exact; each output is a sum rounded to FP32 once per k-step in its
// slice (k-steps of 16) and once per addition of a slice in the finish, each rounding off by at
// most 2^-24 of a running sum no larger than sum |x w|. So |error| <= (steps + slices) 2^-24 sum |x w|
// to first order (the second-order term is below 2^-24 of that for these sizes; a factor of 1.01
// covers it).
double bound(const Reference& ref, std::size_t e, std::size_t k, std::size_t slices) {
  const double steps = std::ceil(double(k) / 16.0);
  return 1.01 * (steps + double(slices)) * 0x1p-24 * ref.magnitude[e];
}

TEST(MmaWarpModel, MatchesDequantizeThenGemmOnRandomShapes) {
  std::mt19937 rng(29);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  std::uniform_int_distribution<std::size_t> rows(1, 70), cols(1, 1100), batch(1, 64);
  for (int bits : {1, 2, 4, 8})
    for (int trial = 0; trial < 6; ++trial) {
      const std::size_t n = rows(rng), k = cols(rng), m = trial == 0 ? 1 : trial == 1 ? 64 : batch(rng);
      const std::size_t slices = std::size_t(1 + trial % 3);
      const QuantizedMatrix w = test::random_matrix(n, k, bits, rng, false, trial % 2 == 1);
      std::vector<float> x(m * k);
      for (auto& v : x) v = value(rng);
      const std::vector<float> got = run_model(x, m, w, slices);
      const Reference ref = bf16_gemm(x, m, w);
      std::size_t nonzero = 0;
      for (std::size_t e = 0; e < got.size(); ++e) {
        ASSERT_LE(std::abs(double(got[e]) - ref.y[e]), bound(ref, e, k, slices))
            << bits << " bits, m=" << m << " n=" << n << " k=" << k << " slices=" << slices << " at " << e;
        nonzero += got[e] != 0.0f;
      }
      EXPECT_GT(double(nonzero), 0.9 * double(got.size()));
    }
}

// Small integers: every product and partial sum is exact in FP32, so the model must equal the
// reference exactly; a wrong lane or position moves a value by at least 1.
TEST(MmaWarpModel, ExactOnSmallIntegers) {
  std::mt19937 rng(31);
  std::uniform_int_distribution<int> small(-3, 3);
  for (int bits : {2, 4, 8})
    for (auto [m, n, k] : std::vector<std::tuple<std::size_t, std::size_t, std::size_t>>{
             {1, 8, 256}, {4, 13, 300}, {16, 24, 1024}, {17, 9, 77}, {64, 40, 700}}) {
      const QuantizedMatrix w = test::random_matrix(n, k, bits, rng, true, n % 2 == 1);
      std::vector<float> x(m * k);
      for (auto& v : x) v = float(small(rng));
      for (std::size_t slices : {1u, 3u}) {
        const std::vector<float> got = run_model(x, m, w, slices);
        const Reference ref = bf16_gemm(x, m, w);
        for (std::size_t e = 0; e < got.size(); ++e)
          ASSERT_EQ(double(got[e]), ref.y[e]) << bits << " bits, m=" << m << " n=" << n << " k=" << k << " at " << e;
      }
    }
}

// The test's own bound is not vacuous: a model that swapped the two halves of every B register
// (a plausible layout bug) fails it on random data.
TEST(MmaWarpModel, BoundCatchesASwappedHalf) {
  std::mt19937 rng(37);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  const std::size_t m = 16, n = 16, k = 512;
  QuantizedMatrix w = test::random_matrix(n, k, 2, rng, false);
  std::vector<float> x(m * k);
  for (auto& v : x) v = value(rng);
  const Reference ref = bf16_gemm(x, m, w);
  // Swapping columns 2j and 2j+1 of W is what a swapped half does to the product.
  std::vector<std::uint32_t> codes = unpack_codes(w.codes);
  for (std::size_t r = 0; r < n; ++r)
    for (std::size_t c = 0; c + 1 < k; c += 2) std::swap(codes[r * k + c], codes[r * k + c + 1]);
  w.codes = pack_codes(codes, n, k, 2);
  const std::vector<float> got = run_model(x, m, w, 1);
  std::size_t outside = 0;
  for (std::size_t e = 0; e < got.size(); ++e) outside += std::abs(double(got[e]) - ref.y[e]) > bound(ref, e, k, 1);
  EXPECT_GT(outside, got.size() / 2);
}

}  // namespace
}  // namespace nuq
