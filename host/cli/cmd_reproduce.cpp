// nuq reproduce: the main job. Trains (or loads) the papers' networks, quantizes them with every
// design and support region of Tables 3-7, prints each table with the paper's values beside ours,
// and writes report.md and report.json.
#include <algorithm>
#include <filesystem>
#include <limits>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "nuq/error.h"
#include "nuq/experiment.h"
#include "nuq/figures.h"
#include "nuq/io/atomic_file.h"
#include "nuq/io/dataset.h"
#include "nuq/io/file_checks.h"
#include "nuq/mismatch_experiment.h"
#include "nuq/theory.h"
#include "table.h"
#include "json_text.h"

namespace nuq::cli {
namespace {

struct ReproduceOptions {
  std::string paper = "all", dataset = "all", model = "all", data, out = "out", plots, bench, device = "auto";
  bool retrain = false, json = false, no_figures = false;
  bool dataset_given = false, model_given = false;  // set from the parse: --paper itc2021 refuses them
  int epochs = 10, seeds = 1;
  std::uint64_t seed = 1;
};

std::string optional_text(const std::optional<double>& v, int decimals) { return v ? fixed(*v, decimals) : "-"; }

void print_tables(const ExperimentResult& r) {
  std::cout << "\n== " << r.dataset << " " << r.model << ": FP32 accuracy " << fixed(r.fp32_accuracy, 2)
            << "% (paper " << optional_text(r.published_fp32_accuracy, 2) << "%), normalised weights in ["
            << fixed(r.w_min, 4) << ", " << fixed(r.w_max, 4) << "]\n";
  std::string table_id;
  std::unique_ptr<TextTable> table;
  auto flush = [&] {
    if (table) std::cout << table->render();
  };
  for (const CaseResult& c : r.cases) {
    if (c.table != table_id) {
      flush();
      table_id = c.table;
      std::cout << "\nTable " << c.table << ": " << c.title << " (paper | ours)\n";
      table = std::make_unique<TextTable>(std::vector<std::string>{
          "case", "region", "x_max", "SQNR_ex", "", "SQNR_th", "", "accuracy %", "", "within %", ""});
    }
    table->add_row({c.case_label, c.region, fixed(c.ptq.xmax, 4), optional_text(c.published.sqnr_ex, 4),
                    fixed(c.ptq.sqnr_ex_db, 4), optional_text(c.published.sqnr_th, 4), fixed(c.ptq.sqnr_th_db, 4),
                    optional_text(c.published.accuracy, 2), fixed(c.accuracy, 2),
                    optional_text(c.published.within, 3), fixed(c.ptq.within, 3)});
  }
  flush();
}

// The companion paper's experiment in brief (the report has every run and the probe).
void print_mismatch(const MismatchExperiment& e) {
  std::cout << "\n== ITC 2021: MNIST MLP at R = 9..16, unit-variance uniform design, sigma_w = " << fixed(e.stats.stddev(), 4)
            << " (" << fixed(20.0 * std::log10(e.stats.stddev()), 2) << " dB), FP32 accuracy " << fixed(e.fp32_accuracy, 2)
            << "%\n";
  TextTable table({"R", "normalisation", "s_w/s_ref dB", "SQNR_th", "SQNR_ex", "accuracy %", "change"});
  for (const MismatchRun& r : e.runs)
    if (r.bits >= 9)
      table.add_row({std::to_string(r.bits), to_string(r.normalisation), fixed(r.mismatch_db, 2), fixed(r.ptq.sqnr_th_db, 3),
                     fixed(r.ptq.sqnr_ex_db, 3), fixed(r.accuracy, 2), signed_fixed(-r.loss, 2)});
  std::cout << table.render();
  if (!e.floor_found) {
    std::cout << "Rule: no probed SQNR keeps the loss within " << fixed(e.options.max_loss, 2) << " points\n";
    return;
  }
  std::cout << "Rule for a loss <= " << fixed(e.options.max_loss, 2) << " points: SQNR floor " << fixed(e.sqnr_floor_db, 1)
            << " dB (noise probe)\n";
  for (const RuleChoice& c : e.choices) {
    std::cout << "  " << to_string(c.normalisation) << ": ";
    if (c.bits == 0) {
      std::cout << "no R up to " << e.options.max_bits << " reaches the floor\n";
      continue;
    }
    std::cout << "R = " << c.bits << ", measured loss " << fixed(c.measured_loss, 2) << (c.within_bound ? " (within)" : " (NOT within)");
    if (c.bits_below)
      std::cout << "; at R = " << c.bits_below << " loss " << fixed(c.loss_below, 2)
                << (c.loss_appears_below ? " (appears" : " (does not appear")
                << (c.bound_exceeded_below ? ", beyond the bound)" : ")");
    std::cout << "\n";
  }
}

std::vector<std::pair<std::string, std::string>> selected(const ReproduceOptions& o) {
  const std::vector<std::pair<std::string, std::string>> all = {{"mnist", "mlp"}, {"fashion", "mlp"}, {"fashion", "cnn"}};
  std::vector<std::pair<std::string, std::string>> chosen;
  for (const auto& [dataset, model] : all)
    if ((o.dataset == "all" || o.dataset == dataset) && (o.model == "all" || o.model == model))
      chosen.emplace_back(dataset, model);
  NUQ_REQUIRE(!chosen.empty(), "reproduce: the paper has no table for ", o.dataset, " with the ", o.model,
              " (it reports the MNIST MLP and the Fashion-MNIST MLP and CNN)");
  return chosen;
}

// The folders the checks below make, removed again (each only if still empty) when a later check
// fails: a run refused for missing data leaves no empty --out, models/ and quantized/ behind.
// (--out's own faults must still be found before the data's, so the folders are made first.)
class FoldersMade {
 public:
  FoldersMade() = default;
  FoldersMade(const FoldersMade&) = delete;
  FoldersMade& operator=(const FoldersMade&) = delete;
  ~FoldersMade() {
    // Deepest first (a folder's name is longer than its parent's): each is empty when its turn comes.
    std::sort(made_.begin(), made_.end(), [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
    std::error_code ignored;  // a folder something was put in meanwhile stays
    for (const std::string& folder : made_) std::filesystem::remove(folder, ignored);
  }
  void make(const std::string& folder, const std::string& option) {
    std::vector<std::string> missing;
    std::error_code error;
    for (std::filesystem::path p(folder); !p.empty() && !std::filesystem::exists(p, error); p = p.parent_path()) {
      missing.push_back(p.string());
      if (p == p.parent_path()) break;
    }
    io::make_folder(folder, option);
    made_.insert(made_.end(), missing.begin(), missing.end());
  }
  void keep() { made_.clear(); }

 private:
  std::vector<std::string> made_;
};

// What a run needs, checked before minutes of training rather than after: every data set it
// reads (each split read whole, as training and testing will read it; last, after the folders'
// checks, and no folder made is left when it fails), and every folder and file
// it writes that is known up front (--out, models/, quantized/, the reports, each model to be
// trained and its checkpoint), each with the reason when it cannot be.
void check_before_the_work(const ReproduceOptions& o, const ExperimentOptions& options) {
  std::vector<std::pair<std::string, std::string>> networks;  // (dataset, model)
  if (o.paper != "itc2021") networks = selected(o);
  const std::pair<std::string, std::string> companion{"mnist", "mlp"};  // the companion paper's network
  if (o.paper != "mathematics2022" && std::find(networks.begin(), networks.end(), companion) == networks.end())
    networks.push_back(companion);
  std::vector<std::string> datasets;
  for (const auto& network : networks)
    if (std::find(datasets.begin(), datasets.end(), network.first) == datasets.end()) datasets.push_back(network.first);
  FoldersMade folders;
  folders.make(o.out, "--out");
  const std::filesystem::path out(o.out);
  folders.make((out / "models").string(), "--out's models/");
  folders.make((out / "quantized").string(), "--out's quantized/");
  for (const char* report : {"report.json", "report.md"}) io::require_output_path((out / report).string(), {}, "--out");
  for (const auto& [dataset, model] : networks)
    for (int k = 0; k < o.seeds; ++k) {
      TrainConfig train = options.train;
      train.seed = o.seed + std::uint64_t(k);
      const std::string path = cached_model_path(o.out, dataset, model, train);
      std::error_code error;
      if (o.retrain || !std::filesystem::exists(path, error)) io::require_output_path(path, {}, "--out");
      io::require_output_path(path + ".checkpoint", {}, "--out");
    }
  for (const std::string& dataset : datasets)
    for (const char* split : {"train", "t10k"}) io::load_network_split(io::dataset_dir(options.data_root, dataset), split);
  folders.keep();
}

void run_reproduce(const ReproduceOptions& o) {
  // The companion paper's experiment is the MNIST MLP only: an ignored choice would mislead.
  NUQ_REQUIRE(o.paper != "itc2021" || (!o.dataset_given && !o.model_given && o.seeds == 1),
              "reproduce --paper itc2021 runs the MNIST MLP once; --dataset, --model and --seeds apply to "
              "mathematics2022 (or all)");
  NUQ_REQUIRE(o.seed <= std::numeric_limits<std::uint64_t>::max() - std::uint64_t(o.seeds - 1), "--seed ", o.seed,
              " with --seeds ", o.seeds, " runs past the largest seed, 2^64 - 1");
  if (!o.no_figures) plots_script(o.plots);  // --plots or $NUQ_PLOTS naming no script: said before the work
  NUQ_REQUIRE(o.bench.empty() || std::filesystem::is_directory(o.bench), o.bench,
              ": --bench names no folder of bench results");
  ExperimentOptions options;
  options.data_root = io::data_root(o.data);
  options.out_dir = o.out;
  options.retrain = o.retrain;
  options.train.epochs = o.epochs;
  options.train.seed = o.seed;
  check_before_the_work(o, options);
  const std::string json_path = (std::filesystem::path(o.out) / "report.json").string();
  const std::string md_path = (std::filesystem::path(o.out) / "report.md").string();
  const std::unique_ptr<Backend> backend = make_backend(parse_device(o.device));
  options.backend = backend.get();
  std::cerr << "weights quantized and quantized networks run on " << backend->name() << "\n";

  const TheoryReport theory = build_theory_report();
  const int mismatches = count_mismatches(theory);
  std::vector<ExperimentResult> results;
  if (o.paper != "itc2021")
    for (const auto& [dataset, model] : selected(o))
      for (int k = 0; k < o.seeds; ++k) {
        options.train.seed = o.seed + std::uint64_t(k);
        results.push_back(run_experiment(dataset, model, options, &std::cerr));
        if (!o.json && k == 0) print_tables(results.back());
      }
  std::optional<MismatchExperiment> mismatch;
  if (o.paper != "mathematics2022") {
    options.train.seed = o.seed;
    mismatch = run_mismatch_experiment("mnist", "mlp", options, {}, &std::cerr);
    if (!o.json) print_mismatch(*mismatch);
  }
  const std::vector<Finding> findings = check_findings(results);
  std::vector<Figure> figures;
  std::string figure_outcome = "figures skipped (--no-figures)";
  if (!o.no_figures) {
    const std::string figure_dir = (std::filesystem::path(o.out) / "figures").string();
    figures = write_figure_data(figure_dir, results, mismatch ? &*mismatch : nullptr);
    figure_outcome = render_figures(figure_dir, figures, o.plots, o.bench);
    std::cerr << figure_outcome << '\n';
  }

  nlohmann::json j = {{"theory", to_json(theory)}, {"theory_mismatches", mismatches}};
  j["experiments"] = nlohmann::json::array();
  for (const auto& r : results) j["experiments"].push_back(to_json(r));
  auto findings_json = [](const std::vector<Finding>& list) {
    nlohmann::json array = nlohmann::json::array();
    for (const auto& f : list) array.push_back({{"claim", f.claim},
                       // null: nothing in the run could test the claim
                       {"holds", f.tested == Finding::Tested::Nowhere ? nlohmann::json() : nlohmann::json(f.holds)},
                       {"verdict", verdict(f)},
                       {"evidence", f.evidence}});
    return array;
  };
  j["findings"] = findings_json(findings);
  j["figures"] = nlohmann::json::array();
  for (const auto& f : figures)
    j["figures"].push_back({{"stem", f.stem}, {"title", f.title}, {"rendered", f.rendered}});
  if (mismatch) {
    j["itc2021"] = to_json(*mismatch);
    j["itc2021"]["findings"] = findings_json(check_mismatch_findings(*mismatch));
  }
  const std::string markdown = (results.empty() ? std::string("# nuq reproduce: report\n")
                                                : render_report(results, findings, figures)) +
                               (mismatch ? render_mismatch_report(*mismatch, figures) : std::string()) +
                               "\n## Theory\n\n`nuq theory`: Table 2 and all " +
                               std::to_string(theory.sqnr.size()) + " published SQNR_th values recomputed, and " +
                               std::to_string(theory.references.size()) + " reference figures from the paper's "
                               "sources; " + std::to_string(mismatches) + " mismatch(es).\n";
  io::write_atomically(json_path, [&](std::ostream& out) { out << json_text(j) << '\n'; });
  io::write_atomically(md_path, [&](std::ostream& out) { out << markdown; });

  if (o.json) {
    std::cout << json_text(j) << '\n';
    return;
  }
  auto print_findings = [](const std::string& heading, const std::vector<Finding>& list) {
    if (!list.empty()) std::cout << "\n" << heading << "\n";
    for (const auto& f : list) std::cout << "  [" << verdict(f) << "] " << f.claim << "\n";
  };
  print_findings("The paper's findings on this run:", findings);
  if (mismatch) print_findings("The companion paper's claims (ITC 2021), as nuq tests them, on this run:", check_mismatch_findings(*mismatch));
  std::cout << "Theory (Table 2, SQNR_th of Tables 3-7, reference figures): " << mismatches << " mismatch(es).\n"
            << figure_outcome << "\nWrote " << md_path << " and " << json_path << "\n";
}

}  // namespace

void add_reproduce_command(CLI::App& app) {
  auto o = std::make_shared<ReproduceOptions>();
  CLI::App* cmd = app.add_subcommand(
      "reproduce", "Train (or load) the papers' networks, quantize them with every design and support region "
                   "of Tables 3-7, print each table beside the paper's and write report.md/report.json");
  cmd->add_option("--paper", o->paper,
                  "mathematics2022 (SPTQ/MSPTQ, Tables 2-7), itc2021 (uniform designs at 4-16 bits, the paper's 9-16 "
                  "printed and every one in the report; variance mismatch, the bit-rate rule; MNIST MLP) or all")
      ->check(CLI::IsMember({"mathematics2022", "itc2021", "all"}))->capture_default_str();
  CLI::Option* dataset = cmd->add_option("--dataset", o->dataset, "mnist, fashion or all (mathematics2022's tables)")
                             ->check(CLI::IsMember({"mnist", "fashion", "all"}))
                             ->capture_default_str();
  CLI::Option* model = cmd->add_option("--model", o->model, "mlp, cnn or all (mathematics2022's tables)")
                           ->check(CLI::IsMember({"mlp", "cnn", "all"}))
                           ->capture_default_str();
  add_device_option(*cmd, o->device);
  add_data_option(*cmd, o->data, "Data folder holding mnist/ and fashion/ (default: $NUQ_DATA or data)");
  cmd->add_option("--out", o->out, "Folder for models, quantized models and the reports")->capture_default_str();
  cmd->add_flag("--retrain", o->retrain, "Train anew even when a cached model exists");
  cmd->add_option("--epochs", o->epochs, "Training epochs")->transform(whole_number_in(1, 1000))->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed of initialisation, shuffling and dropout")
      ->transform(non_negative_integer())
      ->capture_default_str();
  cmd->add_option("--seeds", o->seeds, "Train this many networks (seeds seed, seed+1, ...) and report the spread")
      ->transform(whole_number_in(1, 100))->capture_default_str();
  cmd->add_flag("--json", o->json, "Print the whole report as JSON instead of tables");
  CLI::Option* no_figures = cmd->add_flag("--no-figures", o->no_figures, "Write neither the figures' data nor their PNGs");
  cmd->add_option("--plots", o->plots, "The plotting script (default: $NUQ_PLOTS or the repository's scripts/plots.py)")
      ->excludes(no_figures);
  cmd->add_option("--bench", o->bench,
                  "Folder of Google Benchmark JSON results for the speed-up figure (default: bench/results beside the script)");
  cmd->callback([o, dataset, model] {
    o->dataset_given = dataset->count() > 0;
    o->model_given = model->count() > 0;
    run_reproduce(*o);
  });
}

}  // namespace nuq::cli
