// The subcommands of the `nuq` tool. Each add_* registers its options and a callback on `app`.
#pragma once

#include <CLI/CLI.hpp>

namespace nuq::cli {

void add_design_command(CLI::App& app);
void add_theory_command(CLI::App& app);
void add_devices_command(CLI::App& app);
void add_reproduce_command(CLI::App& app);
void add_model_commands(CLI::App& app);     // train, quantize, dequantize, eval
void add_mismatch_commands(CLI::App& app);  // mismatch, bitrate
void add_inspect_command(CLI::App& app);

}  // namespace nuq::cli
