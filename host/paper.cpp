#include "nuq/paper.h"

namespace nuq::paper {
namespace {

constexpr Support kCase1{SupportRule::MinAbsWeight};
constexpr Support kCase2{SupportRule::MaxAbsWeight};
constexpr Support kThreeDelta{SupportRule::SptqOptimum};
constexpr Support kThreeDeltaMod{SupportRule::MsptqOptimum};
constexpr Support kHui{SupportRule::Hui};
constexpr Support kJayant{SupportRule::Jayant};

Support ternary_alpha(double alpha) { return Support{SupportRule::TernaryOptimum, 0.0, alpha}; }

}  // namespace

const std::vector<Table2Column>& table2() {
  static const std::vector<Table2Column> columns = {
      {"Δ(0) = 1", 1.0, 40},
      {"Δ(0) = |w_max|/3", kMnistMlpRange.max / 3.0, 39},
      {"Δ(0) = |w_min|/3", -kMnistMlpRange.min / 3.0, 40},
      {"Δ(0) = x_max[H]/3", kXmaxHui / 3.0, 41},
      {"Δ(0) = x_max[J]/3", kXmaxJayant / 3.0, 41},
  };
  return columns;
}

const std::vector<Baseline>& baselines() {
  static const std::vector<Baseline> values = {
      {"mnist", "mlp", 98.1},
      {"fashion", "mlp", 88.96},
      {"fashion", "cnn", 91.53},
  };
  return values;
}

// Transcribed from the paper; a printed "−" that the source text garbled is restored.
const std::vector<PublishedTable>& tables() {
  static const std::vector<PublishedTable> all = {
      {"3", "SPTQ, MNIST MLP", Method::Sptq, 2, "mnist", "mlp",
       {{"Case 1", kCase1, 4.6899, 4.4438, 97.61, 99.988},
        {"Case 2", kCase2, 2.5745, 1.6044, 97.42, 100.0},
        {"Case 3", kThreeDelta, 7.8099, 6.9790, 95.75, 98.567},
        {"Case 4", kHui, 7.9051, 6.5437, 93.77, 94.787},
        {"Case 5", kJayant, 8.0068, 6.8086, 94.52, 96.691}}},
      {"4", "UQ, MNIST MLP", Method::Uniform, 2, "mnist", "mlp",
       {{"Case 1", kCase1, 2.8821, 1.9360, 96.97, 99.988},
        {"Case 2", kCase2, -1.2402, -2.0066, 94.58, 100.0},
        {"Case 3", kThreeDelta, 8.2325, 6.8237, 97.12, 98.567},
        {"Case 4", kHui, 8.7676, 6.9787, 96.34, 94.787},
        {"Case 5", kJayant, 8.7639, 7.0707, 96.74, 96.691}}},
      {"5", "MSPTQ, MNIST MLP", Method::Msptq, 2, "mnist", "mlp",
       {{"Case 1", kCase1, 5.5741, 5.0581, 97.91, 99.988},
        {"Case 2", kCase2, 2.9114, 1.9158, 96.98, 100.0},
        {"Case 3", kThreeDelta, 8.6839, 7.4890, 97.17, 98.567},
        {"Case 4", kThreeDeltaMod, 8.5608, 7.5165, 97.23, 99.001}}},
      {"6a", "ternary, MNIST MLP", Method::Ternary, 2, "mnist", "mlp",
       {{"Case 1", kCase1, 1.6988, 2.7275, 90.56, 99.988},
        {"Case 2", kCase2, 0.43, 1.1827, 24.02, 100.0},
        {"Case 3", kThreeDelta, 5.7178, 5.5681, 96.58, 98.567},
        {"Case 4", kHui, 6.7273, 5.7436, 94.1, 94.787},
        {"Case 5", kJayant, 6.47, 5.7762, 95.01, 96.691}}},
      {"6b", "ternary scaled by α, MNIST MLP", Method::Ternary, 2, "mnist", "mlp",
       {{"Case 1", ternary_alpha(0.25), 2.52, 2.1424, 22.01, 41.142},
        {"Case 2", ternary_alpha(0.5), 5.01, 4.0509, 94.37, 72.968},
        {"Case 3", ternary_alpha(0.75), 6.6, 5.3544, 94.81, 89.17},
        {"Case 4", ternary_alpha(1.0), 6.552, 5.7800, 94.68, 96.283},
        {"Case 5", ternary_alpha(1.25), 5.49, 5.4708, 96.49, 98.869},
        {"Case 6", ternary_alpha(1.5), 4.28, 4.8068, 97.51, 99.648},
        {"Case 7", ternary_alpha(1.75), 3.23, 4.0695, 97.33, 99.887}}},
      {"7a", "SPTQ, Fashion-MNIST", Method::Sptq, 2, "fashion", "mlp",
       {{"MLP", kThreeDelta, 7.3242, 6.9790, 86.05, 98.112}}},
      {"7a", "SPTQ, Fashion-MNIST", Method::Sptq, 2, "fashion", "cnn",
       {{"CNN", kThreeDelta, 7.51, 6.9790, 83.69, 97.696}}},
      {"7b", "MSPTQ, Fashion-MNIST", Method::Msptq, 2, "fashion", "mlp",
       {{"MLP", kThreeDelta, 8.13, 7.4890, 87.95, 98.118},
        {"MLP", kThreeDeltaMod, 8.082, 7.5165, 87.42, 98.552}}},
      {"7b", "MSPTQ, Fashion-MNIST", Method::Msptq, 2, "fashion", "cnn",
       {{"CNN", kThreeDelta, 8.12, 7.4890, 83.0, 97.696},
        {"CNN", kThreeDeltaMod, 8.13, 7.5165, 83.72, 98.232}}},
  };
  return all;
}

}  // namespace nuq::paper
