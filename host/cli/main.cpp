// nuq: design quantizers for the Laplacian source, reproduce the papers' tables, and (in later
// commands) quantize and run neural networks.
#include <cstdio>
#include <exception>

#include <CLI/CLI.hpp>

#include "commands.h"
#include "nuq/error.h"

int main(int argc, char** argv) {
  CLI::App app{"nuq: post-training quantization of neural-network weights with the SPTQ, MSPTQ, "
               "uniform, ternary, mu-law and Lloyd-Max quantizers for the Laplacian source"};
  app.name("nuq");
  app.require_subcommand(1);
  app.set_version_flag("--version", "nuq 0.1.0");
  nuq::cli::add_reproduce_command(app);
  nuq::cli::add_model_commands(app);
  nuq::cli::add_design_command(app);
  nuq::cli::add_mismatch_commands(app);
  nuq::cli::add_theory_command(app);
  nuq::cli::add_devices_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const nuq::Error& e) {
    std::fprintf(stderr, "nuq: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nuq: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
