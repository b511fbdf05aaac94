// Argument forms shared by several subcommands.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

namespace nuq::cli {

// "FROM:TO" or "FROM:TO:STEP" (step default: 100 intervals). Throws nuq::Error naming `option`.
struct Range {
  double from = 0.0;
  double to = 0.0;
  double step = 0.0;
};
Range parse_range(const std::string& text, const std::string& option);

// Both validators below are transforms (`->transform(...)`, not `->check`): they hand CLI11 the
// number they read, in plain decimal, because CLI11 converts in C's base 0, where "0100" is octal
// 64 and "09" no number, and would otherwise use another value than the one checked.

// A seed or count given as digits only: CLI11 would read "-1" into an unsigned option as 2^64 - 1,
// and its NonNegativeNumber prints a 300-digit bound.
const CLI::Validator& non_negative_integer();

// A whole number from `lowest` to `highest`: CLI11's Range answers "abc" and "2.5" with "not in
// range", which sends the user looking for a bound rather than a typo. Its help reads "INT in [a - b]".
CLI::Validator whole_number_in(long long lowest, long long highest);

// --data FOLDER (the data sets' root, default $NUQ_DATA, then data/) with `help`.
void add_data_option(CLI::App& command, std::string& data, const std::string& help);

// --device cpu|cuda|auto on a command that computes (auto: a CUDA device when one is visible).
void add_device_option(CLI::App& command, std::string& device);

// On standard error, before the work: an index that disagrees with its shards' headers (followed
// as other tools follow it, by the headers) and the files of a folder not read as its shards, a
// warning each (checkpoint_warnings).
void warn_of_checkpoint(const std::string& input);

// --mu given for a method other than mulaw, or --alpha for one other than ternary, is refused,
// whatever its value (the design refuses only values other than the default it cannot tell apart).
void require_own_parameters(const std::string& method, const CLI::Option& mu, const CLI::Option& alpha);

}  // namespace nuq::cli
