// The published numbers of the main paper (Perić, Aleksić, Nikolić, Tomić, Mathematics 10, 3435,
// 2022), as printed, so that every report can put ours beside them. Only data lives here.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "nuq/codebook.h"
#include "nuq/support.h"

namespace nuq::paper {

// Extremes of the normalised weights of the paper's MNIST MLP (Section 6).
constexpr WeightRange kMnistMlpRange{-7.063787, 4.8371024};

// Table 2 and Section 6: the outcome of Algorithm 1.
constexpr double kSptqDelta = 0.8504;
constexpr double kSptqXmax = 2.5512;
constexpr double kMsptqDelta = 0.9021;
constexpr double kMsptqXmax = 2.7063;
constexpr int kMsptqIterations = 7;

struct Table2Column {
  std::string label;  // how the paper heads the column
  double delta0;      // Delta(0)
  int iterations;     // as published
};
const std::vector<Table2Column>& table2();

// Figures the paper quotes from elsewhere, and the Lloyd-Max ceiling from the literature.
constexpr double kMuLaw255Sqnr = 4.44;    // two-bit mu-law, mu = 255, ref. [16], Table I
constexpr double kLloydMax4Sqnr = 7.54;   // four-level Lloyd-Max, unit Laplacian (Jayant [20])

// FP32 test accuracies of the paper's networks (%).
struct Baseline {
  std::string dataset;  // "mnist" or "fashion"
  std::string model;    // "mlp" or "cnn"
  double accuracy;
};
const std::vector<Baseline>& baselines();

// One column ("case") of Tables 3-7. Values the paper does not print are empty.
struct PublishedCase {
  std::string label;
  Support support;
  std::optional<double> sqnr_ex;   // dB
  std::optional<double> sqnr_th;   // dB
  std::optional<double> accuracy;  // %
  std::optional<double> within;    // % of the normalised weights inside the granular region
};

struct PublishedTable {
  std::string id;     // "3", "4", "5", "6a", "6b", "7a", "7b"
  std::string title;
  Method method;
  int bits;           // code width (the ternary quantizer has 3 levels in 2 bits)
  std::string dataset;
  std::string model;
  std::vector<PublishedCase> cases;
};

// Tables 3, 4, 5, 6a, 6b, 7a and 7b; Table 7 is split by model (MLP, CNN).
const std::vector<PublishedTable>& tables();

}  // namespace nuq::paper
