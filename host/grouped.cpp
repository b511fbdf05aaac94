#include "nuq/grouped.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <optional>
#include <vector>

#include "nuq/error.h"
#include "nuq/io/safetensors.h"
#include "nuq/quantized_file.h"

#include "packed_simd.h"
#include "panel_gemm.h"
#include "qgemm_lut.h"
#include "row_blocks.h"

namespace nuq {

Affine group_map(const Affine& group, double tensor_mean) {
  const double offset = group.mean - tensor_mean;  // RMS about m = sqrt(variance + (mean - m)^2)
  return {tensor_mean, double(float(std::sqrt(group.scale * group.scale + offset * offset)))};
}

std::vector<float> normalised_levels(const Codebook& codebook, int bits) {
  return make_quantize_table(codebook, bits, {Affine{0.0, 1.0}}).levels;
}

QuantizeTable grouped_quantize_table(const Codebook& codebook, int bits, const std::vector<Affine>& maps,
                                     const std::string& where) {
  QuantizeTable table = make_quantize_table(codebook, bits, maps, where);
  const std::vector<float> normalised = normalised_levels(codebook, bits);
  const std::size_t per_group = normalised.size();
  for (std::size_t g = 0; g < maps.size(); ++g)
    for (std::size_t k = 0; k < per_group; ++k)
      table.levels[g * per_group + k] = group_level(maps[g].mean, float(maps[g].scale), normalised[k]);
  return table;
}

std::vector<float> group_levels(double mean, const std::vector<float>& scales, const std::vector<float>& normalised) {
  std::vector<float> levels(scales.size() * normalised.size());
  for (std::size_t g = 0; g < scales.size(); ++g)
    for (std::size_t k = 0; k < normalised.size(); ++k)
      levels[g * normalised.size() + k] = group_level(mean, scales[g], normalised[k]);
  return levels;
}

void check_grouped(const QuantizedTensor& w, const std::string& what) {
  NUQ_REQUIRE(w.group_size > 0, what, ": the tensor is not grouped");
  NUQ_REQUIRE(is_packable_bits(w.matrix.codes.bits), what, ": ", w.matrix.codes.bits, "-bit codes are not supported");
  const auto [n, k] = matrix_view(w.shape, io::element_count(w.shape));
  const PackedCodes& codes = w.matrix.codes;
  NUQ_REQUIRE(k % w.group_size == 0 && codes.rows == n * (k / w.group_size) && codes.cols == w.group_size &&
                  codes.bytes.size() == codes.rows * packed_row_bytes(codes.cols, codes.bits),
              what, ": grouped codes of ", codes.rows, " x ", codes.cols, " do not fit shape ", n, " x ", k,
              " in groups of ", w.group_size);
  NUQ_REQUIRE(w.scales.size() == codes.rows && w.normalised_levels.size() == (std::size_t{1} << codes.bits), what,
              ": ", w.scales.size(), " scales and ", w.normalised_levels.size(), " normalised levels for ", codes.rows,
              " groups of ", codes.bits, "-bit codes");
}

void check_group_levels_finite(const QuantizedTensor& w, const std::string& where) {
  for (std::size_t i = 0; i < w.normalised_levels.size(); ++i)
    NUQ_REQUIRE(std::isfinite(w.normalised_levels[i]), where, ".codebook: level ", i, " is ", w.normalised_levels[i],
                "; every level must be finite");
  NUQ_REQUIRE(std::isfinite(w.mean), where, ": mean ", w.mean, " must be finite");
  if (w.normalised_levels.empty()) return;
  // mean + scale * n is monotone in n, so the table's extremes tell.
  const auto [lowest, highest] = std::minmax_element(w.normalised_levels.begin(), w.normalised_levels.end());
  for (std::size_t g = 0; g < w.scales.size(); ++g) {
    // A scale is an RMS (docs/format.md): a negative one would turn the group's table upside down.
    NUQ_REQUIRE(!(w.scales[g] < 0.0f), where, ".scales: group ", g, " has scale ", w.scales[g],
                "; a group's scale is the RMS of its weights, never negative");
    NUQ_REQUIRE(std::isfinite(w.scales[g]) && std::isfinite(group_level(w.mean, w.scales[g], *lowest)) &&
                    std::isfinite(group_level(w.mean, w.scales[g], *highest)),
                where, ".scales: group ", g, " has scale ", w.scales[g], " (its levels about mean ", w.mean,
                " must be finite)");
  }
}

namespace {

#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__)
// GCC 12 warns about the undefined pass-through operand inside its own AVX-512 intrinsics.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#if defined(__AVX512VBMI__)
using BytePlanes = detail::BytePlaneLevels;
// The normalised levels' byte planes, where 8-bit groups hold whole blocks of 64 codes.
std::optional<BytePlanes> byte_planes_of(const QuantizedTensor& w) {
  if (w.matrix.codes.bits != 8 || w.group_size % BytePlanes::kCodes || w.normalised_levels.size() != 256)
    return std::nullopt;
  return BytePlanes(w.normalised_levels.data());
}
#else
struct BytePlanes {};
std::optional<BytePlanes> byte_planes_of(const QuantizedTensor&) { return std::nullopt; }
#endif

// Group g's levels in out[0, group_size), as group_level gives them. With AVX-512 sixteen at a
// time: up to 4 bits the group's own table (at most 16 levels) sits in a register and a lane
// permute looks it up; at 8 bits (256 levels, more than a group has weights) the normalised levels
// are looked up in `planes` 64 at a time (gathered where there are none, and for the rest),
// widened to double, scale * level + mean, narrowed. The product of two floats is
// exact in double, so that is group_level's one rounding of the sum and one to float, fused or not.
// (`planes`: the normalised levels' byte planes where VBMI looks 8-bit codes up 64 at a time, built
// once for all the groups a call decodes; null elsewhere.)
void decode_group(const QuantizedTensor& w, std::size_t g, float* out, const BytePlanes* planes) {
  const PackedCodes& codes = w.matrix.codes;
  const std::size_t size = w.group_size;
  const float* normalised = w.normalised_levels.data();
  std::size_t done = 0;
#if defined(__AVX512F__)
  const int bits = codes.bits;
  const std::uint8_t* row = codes.bytes.data() + g * packed_row_bytes(size, bits);
  if (bits <= 4) {
    float levels[16] = {};
    for (std::size_t j = 0; j < (std::size_t{1} << bits); ++j) levels[j] = group_level(w.mean, w.scales[g], normalised[j]);
    const __m512 table = _mm512_loadu_ps(levels);
    for (; done + 16 <= size; done += 16)
      _mm512_storeu_ps(out + done, _mm512_permutexvar_ps(detail::unpack16(row, done / 16, bits), table));
  } else {
    const __m512d mean = _mm512_set1_pd(w.mean), scale = _mm512_set1_pd(double(w.scales[g]));
    const auto store = [&](__m512 level, float* to) {
      const __m256 low = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(level), 0));
      const __m256 high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(level), 1));
      _mm256_storeu_ps(to, _mm512_cvtpd_ps(_mm512_fmadd_pd(scale, _mm512_cvtps_pd(low), mean)));
      _mm256_storeu_ps(to + 8, _mm512_cvtpd_ps(_mm512_fmadd_pd(scale, _mm512_cvtps_pd(high), mean)));
    };
#if defined(__AVX512VBMI__)
    if (planes)
      for (__m512 levels[4]; done + 64 <= size; done += 64) {
        (*planes)(row + done, levels);
        for (std::size_t u = 0; u < 4; ++u) store(levels[u], out + done + 16 * u);
      }
#endif
    for (; done + 16 <= size; done += 16)
      store(_mm512_i32gather_ps(detail::unpack16(row, done / 16, bits), normalised, 4), out + done);
  }
#endif
  for (std::size_t c = done; c < size; ++c) out[c] = group_level(w.mean, w.scales[g], normalised[codes.at(g, c)]);
}

#if defined(__AVX512F__)
// sums[i] = the dot products of a decoded row with rows i < M of x (row stride k). The decoded
// sixteen are loaded once for all M accumulators; one row alone gets four, so that it waits on the
// FMA's latency no more than a batch does.
template <std::size_t M>
void dot_decoded(const float* decoded, std::size_t k, const float* x, float* sums) {
  constexpr std::size_t kLanes = M == 1 ? 4 : 1;  // accumulators per row of x
  __m512 acc[M][kLanes];
  for (auto& row : acc)
    for (__m512& a : row) a = _mm512_setzero_ps();
  std::size_t c = 0;
  for (; c + 16 * kLanes <= k; c += 16 * kLanes)
    for (std::size_t u = 0; u < kLanes; ++u) {
      const __m512 weights = _mm512_loadu_ps(decoded + c + 16 * u);
      for (std::size_t i = 0; i < M; ++i)
        acc[i][u] = _mm512_fmadd_ps(weights, _mm512_loadu_ps(x + i * k + c + 16 * u), acc[i][u]);
    }
  for (; c + 16 <= k; c += 16)
    for (std::size_t i = 0; i < M; ++i)
      acc[i][0] = _mm512_fmadd_ps(_mm512_loadu_ps(decoded + c), _mm512_loadu_ps(x + i * k + c), acc[i][0]);
  for (std::size_t i = 0; i < M; ++i) {
    for (std::size_t u = 1; u < kLanes; ++u) acc[i][0] = _mm512_add_ps(acc[i][0], acc[i][u]);
    float sum = _mm512_reduce_add_ps(acc[i][0]);
    for (std::size_t t = c; t < k; ++t) sum += x[i * k + t] * decoded[t];
    sums[i] = sum;
  }
}
#endif

#if defined(__AVX512F__)
// sums[i] = the dot products of row r of a grouped tensor, less its mean's part (mean_part), with
// rows i < M of x (row stride k), for groups of whole runs of sixteen: each sixteen codes'
// normalised levels looked up (`levels`: up to 4 bits from a register; at 8 bits computed where
// they are on a uniform grid, else from `planes` 64 at a time and gathered for what is left), times
// the group's scale, loaded once for all M rows of X. No weight is stored, and no double is formed.
template <std::size_t M>
void dot_scaled_groups(const QuantizedTensor& w, const detail::Levels16& levels, const BytePlanes* planes,
                       std::size_t r, const float* x, std::size_t k, float* sums) {
  const int bits = w.matrix.codes.bits;
  const std::size_t size = w.group_size, group_bytes = packed_row_bytes(size, bits), groups = k / size;
  constexpr std::size_t kLanes = M == 1 ? 4 : 1;  // accumulators per row of X, as in dot_decoded
  __m512 acc[M][kLanes];
  for (auto& row : acc)
    for (__m512& a : row) a = _mm512_setzero_ps();
  const auto step = [&](const std::uint8_t* codes, std::size_t chunk, __m512 scale, const float* xg, std::size_t u) {
    const __m512 weights = _mm512_mul_ps(levels(detail::unpack16(codes, chunk, bits)), scale);
    for (std::size_t i = 0; i < M; ++i)
      acc[i][u] = _mm512_fmadd_ps(weights, _mm512_loadu_ps(xg + i * k + 16 * chunk), acc[i][u]);
  };
  for (std::size_t g = 0; g < groups; ++g) {
    const std::uint8_t* codes = w.matrix.codes.bytes.data() + (r * groups + g) * group_bytes;
    const __m512 scale = _mm512_set1_ps(w.scales[r * groups + g]);
    const float* xg = x + g * size;
    std::size_t chunk = 0;
#if defined(__AVX512VBMI__)
    // Four chunks at a time from the byte planes, each to the accumulator the loop below gives it.
    if (planes)
      for (__m512 looked_up[4]; chunk + 4 <= size / 16; chunk += 4) {
        (*planes)(codes + 16 * chunk, looked_up);
        for (std::size_t u = 0; u < 4; ++u) {
          const __m512 weights = _mm512_mul_ps(looked_up[u], scale);
          for (std::size_t i = 0; i < M; ++i)
            acc[i][u % kLanes] =
                _mm512_fmadd_ps(weights, _mm512_loadu_ps(xg + i * k + 16 * (chunk + u)), acc[i][u % kLanes]);
        }
      }
#endif
    for (; chunk + kLanes <= size / 16; chunk += kLanes)
      for (std::size_t u = 0; u < kLanes; ++u) step(codes, chunk + u, scale, xg, u);
    for (; chunk < size / 16; ++chunk) step(codes, chunk, scale, xg, 0);
  }
  for (std::size_t i = 0; i < M; ++i)
    for (std::size_t u = 1; u < kLanes; ++u) acc[i][0] = _mm512_add_ps(acc[i][0], acc[i][u]);
  for (std::size_t i = 0; i < M; ++i) sums[i] = _mm512_reduce_add_ps(acc[i][0]);
}
#endif

// sums[i] = the dot products of a decoded row with rows i < m of x (row stride k), m <= kRowBatch.
void dot_rows(const float* decoded, std::size_t k, const float* x, std::size_t m, float* sums) {
#if defined(__AVX512F__)
  for (std::size_t first = 0; first < m; first += detail::kRowsPerPass)
    detail::with_row_count(std::min(detail::kRowsPerPass, m - first), [&](auto rows) {
      dot_decoded<rows()>(decoded, k, x + first * k, sums + first);
    });
#else
  for (std::size_t i = 0; i < m; ++i) {
    const float* xi = x + i * k;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (std::size_t c = 0; c < k; ++c) sum += xi[c] * decoded[c];
    sums[i] = sum;
  }
#endif
}

// Up to this batch each output row is decoded once into a buffer the size of a row (in L1 or L2)
// and meets every row of X there; above, panels of rows are decoded for sgemm.
constexpr std::size_t kRowBatch = 16;

}  // namespace

void dequantize_groups(const QuantizedTensor& w, std::size_t first, std::size_t count, float* out) {
  const std::optional<BytePlanes> planes = byte_planes_of(w);
  for (std::size_t g = first; g < first + count; ++g, out += w.group_size)
    decode_group(w, g, out, planes ? &*planes : nullptr);
}

namespace {

std::pair<std::size_t, std::size_t> view_of(const QuantizedTensor& w) {
  return matrix_view(w.shape, io::element_count(w.shape));
}

// y = x W^T (+ bias) for a checked grouped tensor, from its look-up layout where there is one.
void multiply_groups(const float* x, std::size_t m, const QuantizedTensor& w, const detail::LutLayout* layout,
                     const float* bias, float* y) {
  // Named variables, not a structured binding: OpenMP regions (clang's) cannot refer to one.
  const std::pair<std::size_t, std::size_t> view = view_of(w);
  const std::size_t n = view.first, k = view.second;
  const std::size_t groups_per_row = k / w.group_size;
  if (m == 0 || n == 0) return;
  NUQ_REQUIRE(k <= std::size_t(INT_MAX) && m <= std::size_t(INT_MAX), "qgemm: ", m, " x ", k,
              " exceeds the 32-bit dimensions of the BLAS interface");
  // 1-4-bit groups of whole words, up to lut_max_batch: by look-up, without decoding a weight.
  if (detail::qgemm_lut_grouped(x, m, n, k, w, layout, bias, y)) return;
#if defined(__AVX512F__)
  // Up to kRowBatch rows of X, groups of whole runs of sixteen codes: each row's groups meet every
  // row of X in registers, scaled as they come.
  if (m <= kRowBatch && w.group_size % 16 == 0 && detail::all_finite(x, m * k)) {
    float shifts[kRowBatch];
    for (std::size_t i = 0; i < m; ++i) shifts[i] = detail::mean_part(w.mean, x + i * k, k);
    const std::vector<float>& normalised = w.normalised_levels;
    const int bits = w.matrix.codes.bits;
    const std::optional<LevelGrid> grid = bits == 8 ? level_grid(normalised.data(), normalised.size()) : std::nullopt;
    const detail::Levels16 levels(normalised.data(), bits, grid);
    const std::optional<BytePlanes> planes = grid ? std::nullopt : byte_planes_of(w);  // levels off a grid
    const auto rows = static_cast<std::ptrdiff_t>(n);
#pragma omp parallel for schedule(static) if (n * k >= detail::kParallelMinWeights) num_threads(cpu_threads())
    for (std::ptrdiff_t r = 0; r < rows; ++r) {
      float sums[kRowBatch];
      for (std::size_t first = 0; first < m; first += detail::kRowsPerPass)
        detail::with_row_count(std::min(detail::kRowsPerPass, m - first), [&](auto count) {
          dot_scaled_groups<count()>(w, levels, planes ? &*planes : nullptr, std::size_t(r), x + first * k, k,
                                    sums + first);
        });
      for (std::size_t i = 0; i < m; ++i) y[i * n + std::size_t(r)] = sums[i] + shifts[i] + (bias ? bias[r] : 0.0f);
    }
    return;
  }
#endif
  if (m <= kRowBatch) {
    const auto rows = static_cast<std::ptrdiff_t>(n);
#pragma omp parallel for schedule(static) if (n * k >= detail::kParallelMinWeights) num_threads(cpu_threads())
    for (std::ptrdiff_t r = 0; r < rows; ++r) {
      thread_local std::vector<float> buffer;
      buffer.resize(k);
      float* const decoded = buffer.data();
      dequantize_groups(w, std::size_t(r) * groups_per_row, groups_per_row, decoded);
      float sums[kRowBatch];
      dot_rows(decoded, k, x, m, sums);
      for (std::size_t i = 0; i < m; ++i) y[i * n + std::size_t(r)] = sums[i] + (bias ? bias[r] : 0.0f);
    }
    return;
  }
  detail::panel_gemm(x, m, n, k, bias, y, [&](std::size_t first, std::size_t rows, float* out) {
    dequantize_groups(w, first * groups_per_row, rows * groups_per_row, out);  // whole rows: in order
  });
}

}  // namespace

void qgemm_grouped(const float* x, std::size_t m, const QuantizedTensor& w, const float* bias, float* y) {
  check_grouped(w, "qgemm");
  multiply_groups(x, m, w, nullptr, bias, y);
}

bool cpu_layout_used(const QuantizedTensor& w, std::size_t m) {
  if (!w.group_size || m == 0) return false;
  const int bits = w.matrix.codes.bits;
  const std::size_t k = view_of(w).second;
  return detail::lut_compiled() && m <= detail::lut_max_batch(bits) &&
         detail::grouped_lut_applies(bits, packed_row_bytes(w.group_size, bits), k / w.group_size);
}

PreparedGrouped::PreparedGrouped(const QuantizedTensor& w) : tensor_(w) {
  check_grouped(w, "prepare");
  const std::pair<std::size_t, std::size_t> view = view_of(w);
  layout_ = std::make_unique<detail::LutLayout>(detail::make_grouped_lut_layout(w, view.first, view.second));
}

PreparedGrouped::~PreparedGrouped() = default;

std::size_t PreparedGrouped::layout_bytes() const { return layout_->words.size() * sizeof(std::uint32_t); }

void qgemm_grouped(const float* x, std::size_t m, const PreparedGrouped& w, const float* bias, float* y) {
  multiply_groups(x, m, w.tensor_, w.layout_->empty() ? nullptr : w.layout_.get(), bias, y);
}

}  // namespace nuq
