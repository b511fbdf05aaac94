// The companion paper's experiment (ITC 50(3) 2021): the MNIST MLP's parameters quantized with the
// unit-variance uniform design at R bits, once WITHOUT normalisation (the design meets the
// weights' own sigma: a real variance mismatch) and once WITH Algorithm 1's global normalisation,
// and the bit-rate rule in its accuracy form: the R that keeps the accuracy loss within a bound.
//
// The accuracy form of the rule needs an SQNR floor for "a loss of at most L points". nuq measures
// it on the FP32 network without quantizing anything: it adds uniform noise (the high-rate model
// of quantization error) at a series of SQNRs and takes the lowest SQNR from which every higher
// one costs at most L points on average over the draws. (Any perturbation flips a few borderline
// test images either way, so a single draw's loss scatters by about ±0.03 points even at 40 dB;
// the mean is the expected loss the rule is about.) The rule of nuq/mismatch.h then turns that
// floor into R at the weights' mismatch. The quantized runs check the prediction: at the chosen R
// the loss is within L; below it the loss appears.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "nuq/experiment.h"
#include "nuq/ptq.h"

namespace nuq {

struct MismatchRun {
  int bits = 0;
  Normalisation normalisation = Normalisation::None;
  double mismatch_db = 0.0;  // 20 log10(sigma_w / sigma_ref) as the codebook sees the weights
  PtqReport ptq;             // x_max, SQNR_th (at that mismatch), SQNR_ex, % inside the support
  double accuracy = 0.0;     // from the quantized file
  double loss = 0.0;         // FP32 accuracy - accuracy, in points (negative: a gain)
  std::string quantized_file;
};

struct NoiseProbePoint {
  double sqnr_db = 0.0;     // of the injected noise against the parameters (eqs. (30)-(31))
  double mean_loss = 0.0;   // over the draws, in points: what the floor is set by
  double worst_loss = 0.0;  // the largest single draw
};

struct RuleChoice {
  Normalisation normalisation = Normalisation::None;
  int bits = 0;                  // 0: no R up to max_bits reaches the floor
  double predicted_sqnr_db = 0;  // SQNR_th at that R and mismatch
  double measured_loss = 0.0;    // of the quantized run at that R
  bool within_bound = false;     // measured_loss <= max_loss
  int bits_below = 0;            // R - 1 (0 when R is the lowest run)
  double loss_below = 0.0;       // measured at R - 1
  bool loss_appears_below = false;  // loss_below > 0 and above the loss at R: accuracy starts to drop
  bool bound_exceeded_below = false;  // loss_below > max_loss
};

struct MismatchExperimentOptions {
  int min_bits = 4, max_bits = 16;  // the runs; the paper's table is R = 9..16
  double max_loss = 0.02;           // accuracy points the rule may give away
  double probe_from_db = 10.0, probe_to_db = 50.0, probe_step_db = 1.0;
  int probe_draws = 5;
};

struct MismatchExperiment {
  std::string dataset, model;
  std::uint64_t seed = 1;
  std::string model_file;
  std::string training_settings;  // Model::training of that model ("" if not recorded)
  double fp32_accuracy = 0.0;
  WeightStats stats;  // of the FP32 parameters
  MismatchExperimentOptions options;
  std::vector<MismatchRun> runs;  // R = min..max without, then with normalisation
  std::vector<NoiseProbePoint> probe;
  double sqnr_floor_db = 0.0;     // lowest probed SQNR from which every mean loss <= max_loss
  bool floor_found = false;
  std::vector<RuleChoice> choices;  // one per normalisation
  double seconds = 0.0;
};

// Loads (or trains) the network as run_experiment does, then the runs, the probe and the rule.
MismatchExperiment run_mismatch_experiment(const std::string& dataset, const std::string& model,
                                           const ExperimentOptions& options,
                                           const MismatchExperimentOptions& mismatch = {},
                                           std::ostream* progress = nullptr);

// The lowest grid SQNR from which every point (it and all above) has mean_loss <= max_loss.
// Points must be in ascending SQNR. Returns false when even the highest point loses more.
// Losses are differences of percentages of whole images: a tolerance of 1e-9 keeps 98.15 - 98.13
// at 0.02.
constexpr double kLossTolerance = 1e-9;
bool sqnr_floor(const std::vector<NoiseProbePoint>& probe, double max_loss, double* floor_db);

// The abstract's claims checked on the run: SQNR_ex follows SQNR_th (within 1 dB wherever every
// parameter is inside the support); the rule's R keeps the loss within the bound, with and without
// normalisation; one bit below it the loss appears.
std::vector<Finding> check_mismatch_findings(const MismatchExperiment& experiment);

nlohmann::json to_json(const MismatchExperiment& experiment);
// The report's section (Markdown): the paper's table (R = 9..16 both ways), SQNR_ex against
// SQNR_th, the rule and its check, the findings; embeds the figure "itc2021-rate" when `figures` has it.
std::string render_mismatch_report(const MismatchExperiment& experiment, const std::vector<Figure>& figures = {});

}  // namespace nuq
