// The Markdown report of `nuq reproduce` and the paper's qualitative findings checked on our run.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include <nlohmann/json.hpp>

#include "nuq/platform.h"
#include "nuq/experiment.h"
#include "nuq/figures.h"

namespace nuq {
namespace {


const CaseResult* find_case(const std::vector<ExperimentResult>& results, const std::string& dataset,
                            const std::string& table, const std::string& label, const std::string& model = "mlp") {
  for (const ExperimentResult& r : results)
    if (r.dataset == dataset && r.model == model)
      for (const CaseResult& c : r.cases)
        if (c.table == table && c.case_label == label) return &c;
  return nullptr;
}

std::string number(double v, int decimals) {
  if (std::isinf(v)) return v > 0 ? "∞" : "−∞";
  char text[32];
  std::snprintf(text, sizeof text, "%.*f", decimals, v);
  return text;
}

std::string maybe(const std::optional<double>& v, int decimals) { return v ? number(*v, decimals) : "—"; }

// A Markdown table cell: a literal '|' (as in |w_min|) would end the cell.
std::string cell(const std::string& text) {
  std::string out;
  for (char c : text) out += c == '|' ? std::string("\\|") : std::string(1, c);
  return out;
}

// Claim: at equal x_max, MSPTQ's SQNR (theoretical and experimental) is above SPTQ's.
Finding msptq_above_sptq(const std::vector<ExperimentResult>& results) {
  Finding f{"MSPTQ's SQNR is above SPTQ's at equal x_max (Tables 3/5 cases 1-3, Table 7 ±3Δ)", true, ""};
  int compared = 0;
  auto compare = [&](const CaseResult* sptq, const CaseResult* msptq, const std::string& what) {
    if (!sptq || !msptq) return;
    ++compared;
    const bool above = msptq->ptq.sqnr_ex_db > sptq->ptq.sqnr_ex_db && msptq->ptq.sqnr_th_db > sptq->ptq.sqnr_th_db;
    f.holds = f.holds && above;
    f.evidence += what + ": SQNR_ex " + number(msptq->ptq.sqnr_ex_db, 2) + " vs " + number(sptq->ptq.sqnr_ex_db, 2) +
                  " dB" + (above ? "" : " (does not hold)") + "; ";
  };
  for (const char* label : {"Case 1", "Case 2", "Case 3"})
    compare(find_case(results, "mnist", "3", label), find_case(results, "mnist", "5", label), std::string("MNIST MLP ") + label);
  for (const char* model : {"mlp", "cnn"}) {
    const std::string label = model == std::string("mlp") ? "MLP" : "CNN";
    compare(find_case(results, "fashion", "7a", label, model), find_case(results, "fashion", "7b", label, model),
            "Fashion " + label + " ±3Δ");
  }
  f.holds = f.holds && compared > 0;
  return f;
}

// Claim: with wide supports (cases 1 and 2) SPTQ keeps more accuracy than UQ.
Finding sptq_above_uq_when_wide(const std::vector<ExperimentResult>& results) {
  Finding f{"SPTQ is more accurate than UQ for wide support regions (Tables 3/4, cases 1 and 2)", true, ""};
  int compared = 0;
  for (const char* label : {"Case 1", "Case 2"}) {
    const CaseResult* sptq = find_case(results, "mnist", "3", label);
    const CaseResult* uq = find_case(results, "mnist", "4", label);
    if (!sptq || !uq) continue;
    ++compared;
    const bool above = sptq->accuracy > uq->accuracy;
    f.holds = f.holds && above;
    f.evidence += std::string(label) + ": " + number(sptq->accuracy, 2) + "% vs " + number(uq->accuracy, 2) + "%" +
                  (above ? "" : " (does not hold)") + "; ";
  }
  f.holds = f.holds && compared > 0;
  return f;
}

// Claim: the quantizer with the highest SQNR does not give the highest accuracy (Table 3).
Finding highest_sqnr_not_best(const std::vector<ExperimentResult>& results) {
  Finding f{"The highest SQNR does not give the highest accuracy (SPTQ, Table 3)", false, ""};
  const CaseResult *best_sqnr = nullptr, *best_accuracy = nullptr;
  for (const ExperimentResult& r : results)
    if (r.dataset == "mnist" && r.model == "mlp")
      for (const CaseResult& c : r.cases) {
        if (c.table != "3") continue;
        if (!best_sqnr || c.ptq.sqnr_ex_db > best_sqnr->ptq.sqnr_ex_db) best_sqnr = &c;
        if (!best_accuracy || c.accuracy > best_accuracy->accuracy) best_accuracy = &c;
      }
  if (!best_sqnr) return f;
  f.holds = best_sqnr != best_accuracy;
  f.evidence = "highest SQNR_ex: " + best_sqnr->case_label + " (" + number(best_sqnr->ptq.sqnr_ex_db, 2) + " dB, " +
               number(best_sqnr->accuracy, 2) + "%); highest accuracy: " + best_accuracy->case_label + " (" +
               number(best_accuracy->accuracy, 2) + "%, " + number(best_accuracy->ptq.sqnr_ex_db, 2) + " dB)";
  return f;
}

}  // namespace

std::string training_text(const std::string& record) {
  if (record.empty()) return "training not recorded";
  const nlohmann::json j = nlohmann::json::parse(record, nullptr, false);
  if (!j.is_object() || !j.contains("epochs") || !j["epochs"].is_number_integer()) return "trained with " + record;
  std::ostringstream text;
  text << j["epochs"].get<long long>() << (j["epochs"] == 1 ? " epoch" : " epochs");
  if (j.contains("batch") && j["batch"].is_number()) text << ", batch " << j["batch"].dump();
  if (j.contains("learning_rate") && j["learning_rate"].is_number()) text << ", learning rate " << j["learning_rate"].dump();
  return text.str();
}

std::string embed_figure(const Figure& f) {
  std::string md = "\n**" + f.title + ".** " + f.caption + "\n\n";
  if (f.rendered) return md + "![" + f.title + "](figures/" + f.stem + ".png)\n";
  return md + "*(not rendered; the data is in `figures/" + f.stem + ".csv`)*\n";
}

std::string verdict(const Finding& finding) {
  if (finding.tested == Finding::Tested::Nowhere) return "not tested";
  if (!finding.holds) return "does not hold";
  return finding.tested == Finding::Tested::Partly ? "holds where tested" : "holds";
}

std::vector<Finding> check_findings(const std::vector<ExperimentResult>& results) {
  std::vector<Finding> findings;
  for (Finding f : {msptq_above_sptq(results), sptq_above_uq_when_wide(results), highest_sqnr_not_best(results)})
    if (!f.evidence.empty()) findings.push_back(f);
  return findings;
}

// Min, mean and max over the seeds of one dataset/model, per case.
void render_spread(std::ostringstream& md, const std::vector<ExperimentResult>& results) {
  for (std::size_t first = 0; first < results.size(); ++first) {
    const ExperimentResult& base = results[first];
    std::vector<const ExperimentResult*> runs;
    bool seen_before = false;
    for (std::size_t j = 0; j < results.size(); ++j)
      if (results[j].dataset == base.dataset && results[j].model == base.model) {
        seen_before = seen_before || j < first;
        runs.push_back(&results[j]);
      }
    if (seen_before || runs.size() < 2) continue;
    md << "\n## Spread over " << runs.size() << " seeds: " << base.dataset << " " << base.model << "\n\n"
       << "Each seed trains its own network; the paper reports one.\n\n"
       << "| table | case | region | accuracy paper | min | mean | max | SQNR_ex paper | min | mean | max |\n"
       << "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    double fp32_min = 1e9, fp32_max = -1e9;
    for (const ExperimentResult* r : runs) fp32_min = std::min(fp32_min, r->fp32_accuracy), fp32_max = std::max(fp32_max, r->fp32_accuracy);
    for (std::size_t i = 0; i < base.cases.size(); ++i) {
      double acc_min = 1e9, acc_max = -1e9, acc_sum = 0, sq_min = 1e9, sq_max = -1e9, sq_sum = 0;
      for (const ExperimentResult* r : runs) {
        const CaseResult& c = r->cases[i];
        acc_min = std::min(acc_min, c.accuracy), acc_max = std::max(acc_max, c.accuracy), acc_sum += c.accuracy;
        sq_min = std::min(sq_min, c.ptq.sqnr_ex_db), sq_max = std::max(sq_max, c.ptq.sqnr_ex_db), sq_sum += c.ptq.sqnr_ex_db;
      }
      const CaseResult& c = base.cases[i];
      const double n = double(runs.size());
      md << "| " << c.table << " | " << cell(c.case_label) << " | " << cell(c.region) << " | " << maybe(c.published.accuracy, 2)
         << " | " << number(acc_min, 2) << " | " << number(acc_sum / n, 2) << " | " << number(acc_max, 2) << " | "
         << maybe(c.published.sqnr_ex, 4) << " | " << number(sq_min, 4) << " | " << number(sq_sum / n, 4) << " | "
         << number(sq_max, 4) << " |\n";
    }
    md << "\nFP32 accuracy over the seeds: " << number(fp32_min, 2) << "% to " << number(fp32_max, 2) << "%.\n";
  }
}

std::string render_report(const std::vector<ExperimentResult>& results, const std::vector<Finding>& findings,
                          const std::vector<Figure>& figures) {
  // Histograms go to their network's section, the companion paper's figures to its own report section.
  auto has_own_section = [](const Figure& f) {
    return f.stem.rfind("histogram-", 0) == 0 || f.stem.rfind("itc2021-", 0) == 0;
  };
  std::ostringstream md;
  md << "# nuq reproduce: report\n\n"
     << "Post-training quantization of the networks of Perić, Aleksić, Nikolić and Tomić, "
        "*Two Novel Non-Uniform Quantizers with Application in Post-Training Quantization* "
        "(Mathematics 10, 3435, 2022), rerun by nuq: every published case beside ours. "
        "x_max is resolved from **our** weights (cases 1 and 2 depend on their extremes), every "
        "quantized model is written as safetensors and evaluated from its packed codes.\n\n"
     << "**What is reproducible.** The designs and the theory are the same on any machine. Quantization is "
        "deterministic: the same model and thread count give the same codes, SQNR and accuracy on every run. "
        "Training (and the last bits of inference) runs through OpenBLAS, whose SGEMM kernel is chosen per "
        "processor and adds in its own order, so "
        "the same seed gives the same weights bit for bit only with the same nuq build, the same OpenBLAS "
        "kernel and the same thread count; elsewhere the weights differ in their last bits and the FP32 "
        "accuracy by a few tenths of a point (98.15 % and 98.33 % for the MNIST MLP on two machines). Each "
        "model records where it was trained (`nuq.trained_on`); this run: " << summary(this_platform()) << ".\n\n";
  std::vector<std::string> shown;
  for (const ExperimentResult& r : results) {
    const std::string key = r.dataset + "/" + r.model;
    if (std::find(shown.begin(), shown.end(), key) != shown.end()) continue;  // further seeds: spread only
    shown.push_back(key);
    const std::string name = display_name(r);
    md << "## " << name << "\n\n"
       << "- parameters: " << r.parameters << "\n"
       << "- FP32 test accuracy: " << number(r.fp32_accuracy, 2) << "% (paper " << maybe(r.published_fp32_accuracy, 2)
       << "%)\n"
       << "- normalised weights: w_min = " << number(r.w_min, 4) << ", w_max = " << number(r.w_max, 4)
       << (r.dataset == "mnist" ? " (paper −7.0638, 4.8371)" : "") << "\n"
       << "- model: seed " << r.seed << ", " << (r.trained ? "trained in this run" : "loaded from the cache") << " ("
       << training_text(r.training_settings) << "); run took " << number(r.seconds, 1) << " s\n"
       << "- trained on: " << (r.trained_on.empty() ? std::string("not recorded (a model from an older nuq)") : r.trained_on)
       << "\n\n";
    std::string table;
    for (const CaseResult& c : r.cases) {
      if (c.table != table) {
        table = c.table;
        md << "\n### Table " << c.table << ": " << c.title << "\n\n"
           << "| case | region | x_max | SQNR_ex paper | ours | SQNR_th paper | ours | accuracy paper | ours | "
              "within R_g paper | ours |\n"
           << "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
      }
      md << "| " << cell(c.case_label) << " | " << cell(c.region) << " | " << number(c.ptq.xmax, 4) << " | "
         << maybe(c.published.sqnr_ex, 4) << " | " << number(c.ptq.sqnr_ex_db, 4) << " | "
         << maybe(c.published.sqnr_th, 4) << " | " << number(c.ptq.sqnr_th_db, 4) << " | "
         << maybe(c.published.accuracy, 2) << " | " << number(c.accuracy, 2) << " | "
         << maybe(c.published.within, 3) << " | " << number(c.ptq.within, 3) << " |\n";
    }
    if (!r.controls.empty()) {
      md << "\n### Controls (beyond the paper)\n\n"
         << "Each row reruns a published case with one thing changed, to show where a gap to the paper "
            "comes from.\n\n"
         << "| table | case | what changed | region | x_max | SQNR_ex | accuracy paper | ours as published | "
            "ours with the change |\n|---|---|---|---|---:|---:|---:|---:|---:|\n";
      for (const CaseResult& control : r.controls) {
        const CaseResult* as_published = nullptr;
        for (const CaseResult& c : r.cases)
          if (c.table == control.table && c.case_index == control.case_index) as_published = &c;
        md << "| " << control.table << " | " << cell(control.case_label) << " | " << cell(control.control) << " | "
           << cell(control.region) << " | " << number(control.ptq.xmax, 4) << " | " << number(control.ptq.sqnr_ex_db, 4)
           << " | " << maybe(control.published.accuracy, 2) << " | "
           << (as_published ? number(as_published->accuracy, 2) : "—") << " | " << number(control.accuracy, 2) << " |\n";
      }
    }
    if (!r.cases.empty()) {
      const CaseResult& c = r.cases.back();
      md << "\n#### Per tensor: Table " << c.table << ", " << c.case_label << " (" << cell(c.region) << ")\n\n"
         << "| tensor | shape | bits | bytes before → after | RMSE | max error |\n|---|---|---:|---:|---:|---:|\n";
      std::size_t before = 0, after = 0;
      for (const TensorReport& t : c.ptq.tensors) {
        std::string shape;
        for (auto d : t.shape) shape += (shape.empty() ? "" : "×") + std::to_string(d);
        md << "| " << t.name << " | " << shape << " | " << t.bits << " | " << t.bytes_before << " → " << t.bytes_after
           << " | " << number(t.rmse, 6) << " | " << number(t.max_error, 6) << " |\n";
        before += t.bytes_before;
        after += t.bytes_after;
      }
      md << "| **all** | | | " << before << " → " << after << " (" << number(double(before) / double(after), 1)
         << "× smaller) | | |\n\n";
    }
    for (const Figure& f : figures)
      if (f.stem == "histogram-" + r.dataset + "-" + r.model) md << embed_figure(f);
  }
  if (std::any_of(figures.begin(), figures.end(), [&](const Figure& f) { return !has_own_section(f); })) {
    md << "\n## Figures\n";
    for (const Figure& f : figures)
      if (!has_own_section(f)) md << embed_figure(f);
  }
  render_spread(md, results);
  md << "\n## The paper's qualitative findings on our run (first seed)\n\n";
  for (const Finding& f : findings)
    md << "- **" << verdict(f) << "**: " << f.claim << ". " << f.evidence << "\n";
  return md.str();
}

}  // namespace nuq
