// Variance mismatch (companion paper, ITC 50(3) 2021): a uniform quantizer designed for a
// Laplacian of standard deviation sigma_ref is applied to a Laplacian of standard deviation sigma.
// SQNR(sigma) exactly (the design engine's closed form) and by the usual high-rate approximation,
// and the bit-rate rule: the smallest R whose SQNR stays above a floor over a range of mismatch.
// Derivations in docs/variance-mismatch.md.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "nuq/codebook.h"

namespace nuq {

// The uniform quantizer with 2^bits levels designed for Laplace(0, sigma_ref^2) by the iterative
// support rule (the companion paper's design).
Codebook mismatch_design(int bits, double sigma_ref = 1.0);

// High-rate approximation of the distortion of a uniform codebook on Laplace(0, sigma^2): the
// granular term Delta^2/12 weighted by P(|x| <= x_max), plus the overload term (exact for the
// Laplacian given the outermost levels at ±(x_max - Delta/2)). Throws for a non-uniform codebook.
double approximate_uniform_distortion(const Codebook& codebook, double sigma);

struct MismatchPoint {
  double mismatch_db = 0.0;  // 20 log10(sigma / sigma_ref)
  double sigma = 0.0;
  double sqnr_db = 0.0;        // exact
  double approx_sqnr_db = 0.0;  // high-rate approximation
  double overload_share = 0.0;  // fraction of the exact distortion from the overload region
};

// SQNR against mismatch for `codebook` (designed for its provenance's sigma) over
// [from_db, to_db] in steps of step_db (both ends included).
std::vector<MismatchPoint> mismatch_curve(const Codebook& codebook, double from_db, double to_db, double step_db);

// The rule: the smallest R in [min_bits, max_bits] whose design (for sigma_ref = 1) keeps the
// exact SQNR >= sqnr_min_db at every mismatch of the grid over [from_db, to_db]; empty if none.
struct BitRateChoice {
  int bits = 0;
  double worst_sqnr_db = 0.0;  // the minimum over the range at that R
  double worst_at_db = 0.0;    // where that minimum is
};
std::optional<BitRateChoice> choose_bit_rate(double sqnr_min_db, double from_db, double to_db, double step_db = 1.0,
                                             int min_bits = 1, int max_bits = 16);

// Exact distortion of a uniform codebook (levels first + k·step, thresholds at their midpoints) on
// Laplace(mean, sigma^2): a source off the codebook's centre, as unnormalised weights with a mean of
// their own meet it. In closed form: the interior cells on either side of the mean differ only by
// their distance from it, so each side is a geometric series. Throws for a non-uniform codebook.
double offset_laplace_distortion(const Codebook& codebook, double mean, double sigma);
// Its SQNR, the mean counted as signal (eq. (31)): 10 log10((sigma^2 + mean^2) / D).
double offset_laplace_sqnr_db(const Codebook& codebook, double mean, double sigma);

// Weights as measured (`nuq bitrate --model`): a tensor's, or all of a model's together; their
// mean, sigma and count. Quantized unnormalised by the unit-variance design, they meet it as the
// Laplacian of their own mean and sigma; weights of no spread (a constant tensor, which no
// Laplacian describes) as the one value they hold, which meets one level.
struct WeightScale {
  double mean = 0.0, sigma = 0.0;
  std::uint64_t count = 1;
};
// The rule for each tensor (--per-tensor): each R's worst case over `scales`, each judged by its
// own SQNR; worst_at_db is 20 log10 of the worst one's rms. Every scale must hold some signal.
std::vector<BitRateChoice> worst_cases_of(const std::vector<WeightScale>& scales, int min_bits, int max_bits);
// The rule for the weights together, as `nuq quantize --normalise none` measures its summary: the
// signal and the distortion of every tensor summed by their counts, each tensor meeting the design
// at its own mean and sigma (tensors of other scales or means are not one Laplacian: pooled into
// one, a tensor at 20 among tensors at 0 was given 8 bits for 30 dB and measured 3.7 dB).
// worst_at_db is 20 log10 of their rms together.
std::vector<BitRateChoice> pooled_cases(const std::vector<WeightScale>& scales, int min_bits, int max_bits);

// The worst case of one R over the range (what the rule compares with the floor); an error names
// `what`, the caller the user ran.
BitRateChoice worst_case(int bits, double from_db, double to_db, double step_db = 1.0, const char* what = "bitrate");
// The worst case of each R in [min_bits, max_bits], in order: the rule's table, whose first entry
// that keeps a floor is choose_bit_rate's answer. The range and its cost are checked first.
std::vector<BitRateChoice> worst_cases(double from_db, double to_db, double step_db, int min_bits, int max_bits);

}  // namespace nuq
