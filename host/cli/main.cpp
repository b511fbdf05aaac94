// nuq: design quantizers for the Laplacian source, reproduce the papers' tables, quantize and run
// neural networks.
//
// Exit status (README, "Exit status"): 0 success; 1 the user's mistake or the environment's
// (a bad option or value, a broken or missing file, an output that cannot be written, a check that
// found a mismatch, a question with no answer such as `bitrate` finding no rate); 2 an internal
// error (a broken invariant: a bug in nuq, to be reported).
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <iostream>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <CLI/CLI.hpp>
#include <cblas.h>

#include "commands.h"
#include "nuq/cpu_threads.h"
#include "nuq/error.h"
#include "nuq/io/temporary_files.h"
#include "nuq/terminal_text.h"

namespace {
constexpr int kUserError = 1;
constexpr int kInternalError = 2;

// The option given an empty value (`--xmax ""`, `--tolerance=`), else empty: never a value, where
// CLI11 would read it as no value (the default) or as 0 depending on the option's type.
std::string option_with_empty_value(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.size() > 3 && arg.rfind("--", 0) == 0 && arg.back() == '=') return arg.substr(0, arg.size() - 1);
    if (arg.empty() && i > 1 && argv[i - 1][0] == '-' && std::string(argv[i - 1]) != "--") return argv[i - 1];
  }
  return "";
}
}  // namespace

int main(int argc, char** argv) {
#if defined(__GLIBC__)
  // A fixed threshold: glibc's own rises with each large block freed (up to 32 MB), after which
  // buffers of a few MB come from the heap, where a small block placed above them keeps their pages
  // from going back. Which run that happened to depended on timing: quantizing 200,000 tensors
  // peaked at 460 or 614 MB; fixed, at 461 MB every time, and no slower on a 1 GB checkpoint.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
#endif
  CLI::App app{"nuq: post-training quantization of neural-network weights with the SPTQ, MSPTQ, "
               "uniform, ternary, mu-law and Lloyd-Max quantizers for the Laplacian source"};
  app.name("nuq");
  app.require_subcommand(1);
  app.set_version_flag("--version", "nuq " NUQ_VERSION);
  app.failure_message([](const CLI::App* failed, const CLI::Error& e) {
    return "nuq: error: " + CLI::FailureMessage::simple(failed, e);
  });
  app.footer("Exit status: 0 success, 1 a user or input error (message on stderr), 2 an internal error.");
  // Before every command's options or after them: subcommands pass options they do not know to nuq.
  app.fallthrough();
  app.add_option_function<int>(
         "--threads",
         [](int threads) {
           nuq::set_cpu_threads(threads);
           openblas_set_num_threads(threads);  // training's and the FP32 networks' GEMMs
         },
         "CPU threads for nuq's loops and OpenBLAS (default: OpenMP's, OMP_NUM_THREADS or every CPU; "
         "`nuq devices` shows it)")
      ->check(CLI::Range(1, nuq::kMaxCpuThreads))
      ->trigger_on_parse();
  nuq::cli::add_reproduce_command(app);
  nuq::cli::add_model_commands(app);
  nuq::cli::add_inspect_command(app);
  nuq::cli::add_design_command(app);
  nuq::cli::add_mismatch_commands(app);
  nuq::cli::add_theory_command(app);
  nuq::cli::add_devices_command(app);
  // nuq's own options pass through every command (fallthrough above); each command's help says so.
  for (CLI::App* command : app.get_subcommands([](CLI::App*) { return true; }))
    command->footer("Every command also takes --threads N (CPU threads; nuq --help).");
  nuq::io::remove_temporary_files_on_signals();  // an interrupted run leaves no <output>.tmp.<pid>.<call> behind
  if (const std::string option = option_with_empty_value(argc, argv); !option.empty()) {
    std::fprintf(stderr, "nuq: error: %s: an empty value (give one, or leave the option out for its default)\n",
                 nuq::terminal_text(option).c_str());
    return kUserError;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version end parsing with code 0; every other parse error is the user's (CLI11
    // numbers them 100-127, which the README's scheme folds into 1).
    const int code = app.exit(e);
    if (code == 0 && (std::fflush(stdout) != 0 || std::ferror(stdout) || !std::cout.flush())) {
      std::fprintf(stderr, "nuq: error: cannot write the help to standard output: %s\n", std::strerror(errno));
      return kUserError;
    }
    return code == 0 ? 0 : kUserError;
  } catch (const nuq::InternalError& e) {
    std::fprintf(stderr, "nuq: internal error: %s\n", nuq::terminal_text(e.what()).c_str());
    return kInternalError;
  } catch (const nuq::Error& e) {
    std::fprintf(stderr, "nuq: error: %s\n", nuq::terminal_text(e.what()).c_str());
    return kUserError;
  } catch (const std::filesystem::filesystem_error& e) {
    // The file system refused (permissions, a read-only mount, no space): the environment's error.
    std::fprintf(stderr, "nuq: error: %s\n", nuq::terminal_text(e.what()).c_str());
    return kUserError;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "nuq: error: out of memory\n");
    return kUserError;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nuq: internal error: %s\n", nuq::terminal_text(e.what()).c_str());
    return kInternalError;
  }
  // A report that did not reach its reader (a full disk, a closed pipe) is a failed run.
  std::cout.flush();
  if (!std::cout || std::fflush(stdout) != 0 || std::ferror(stdout)) {
    std::fprintf(stderr, "nuq: error: cannot write the report to standard output: %s\n", std::strerror(errno));
    return kUserError;
  }
  return 0;
}
