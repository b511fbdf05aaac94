// The data behind the report's figures. nuq computes every number and writes it as CSV;
// scripts/plots.py (matplotlib) only draws, so a figure can be checked against its data file and
// redrawn in any other tool. Each figure has a stem: <stem>.csv (and <stem>-*.csv for overlays)
// hold the data, <stem>.png the picture.
#pragma once

#include <string>
#include <vector>

#include "nuq/experiment.h"
#include "nuq/mismatch_experiment.h"
#include "nuq/model.h"

namespace nuq {

// One CSV file: a header and rows of cells (numbers already formatted).
struct CsvTable {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  void add(const std::vector<double>& values);
  void add(const std::vector<std::string>& cells);
};
std::string to_csv(const CsvTable& table);

// Fig. 2: the transfer characteristic Q(x) of SPTQ and MSPTQ at their iterative optima.
CsvTable transfer_characteristic_data(double from = -4.0, double to = 4.0, std::size_t points = 1601);

// Fig. 5: the iterates of rule (18) from the five Delta(0) of Table 2, and of rule (28) from
// SPTQ's converged Delta (columns: design, delta0, iteration, delta).
CsvTable convergence_data();

// Fig. 6: D against Delta for SPTQ and MSPTQ (x_max = 3 Delta); the iterative optima separately.
CsvTable distortion_sweep_data(double from = 0.4, double to = 1.6, double step = 0.005);
CsvTable distortion_optima_data();

// Beyond the paper: SQNR_th on the unit Laplacian against x_max for every two-bit design, with the
// four-level Lloyd-Max optimum as a ceiling column.
CsvTable sqnr_vs_xmax_data(double from = 0.25, double to = 8.0, double step = 0.025);

// Figs. 7 and 8: histogram of the globally normalised parameters (density per unit), and the
// x_max of each published case run on them (columns: label, xmax).
CsvTable weight_histogram_data(const Model& model, double bin_width = 0.1);
CsvTable support_regions_data(const ExperimentResult& result);

// Companion paper: SQNR against variance mismatch of the unit-variance uniform design at R = 9..16,
// exact and high-rate approximation (columns: mismatch_db, then r<R> and r<R>_approx per R).
CsvTable mismatch_data(int min_bits = 9, int max_bits = 16, double from_db = -40.0, double to_db = 20.0,
                       double step_db = 0.5);

// Beyond the paper: accuracy of every published case against its x_max, with the FP32 accuracy.
CsvTable accuracy_vs_xmax_data(const std::vector<ExperimentResult>& results);

// Companion paper's experiment: every run (columns: normalisation, bits, mismatch_db, sqnr_th_db,
// sqnr_ex_db, within, accuracy, loss, chosen = 1 at the R the rule picked) and the noise probe
// (sqnr_db, worst_loss, mean_loss, max_loss, floor = 1 at the SQNR floor).
CsvTable mismatch_runs_data(const MismatchExperiment& experiment);
CsvTable noise_probe_data(const MismatchExperiment& experiment);

// The report's figures are nuq::Figure (experiment.h): a stem, a title and a caption.
// Writes the CSV files of the figures this run can make into `dir` (atomically) and returns the
// figures in report order. Histograms come from the first seed's model file of each network; the
// companion paper's figure ("itc2021-rate") is added when `mismatch` is given.
std::vector<Figure> write_figure_data(const std::string& dir, const std::vector<ExperimentResult>& results,
                                      const MismatchExperiment* mismatch = nullptr);

// The plotting script render_figures runs: `script` when given, else $NUQ_PLOTS, else the copy
// beside the nuq binary's source tree, or "" when there is none. A script asked for (by `script`
// or $NUQ_PLOTS) that is not a file is an error naming it: callers check it before their work.
std::string plots_script(const std::string& script = "");

// Renders the PNGs with plots_script(script); the first Python of $NUQ_PYTHON, python3 and
// /usr/bin/python3 that has matplotlib runs it. `bench_dir` (Google Benchmark JSON; default the
// repository's bench/results) adds the speed-up figure when it holds results. Marks each figure whose PNG now exists and returns a line
// saying what happened (a script or Python not found is said there, not thrown; a script asked
// for that is not a file throws, as plots_script does).
std::string render_figures(const std::string& dir, std::vector<Figure>& figures, const std::string& script = "",
                           const std::string& bench_dir = "");

}  // namespace nuq
