#include "args.h"

#include <algorithm>
#include <cmath>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "nuq/error.h"
#include "nuq/sharded_checkpoint.h"
#include "nuq/terminal_text.h"

namespace nuq::cli {

Range parse_range(const std::string& text, const std::string& option) {
  std::vector<double> parts;
  std::stringstream stream(text);
  std::string part;
  while (std::getline(stream, part, ':')) {
    std::size_t used = 0;
    double value = 0.0;
    try {
      value = std::stod(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    NUQ_REQUIRE(used == part.size() && used > 0 && std::isfinite(value), option, ": '", part,
                "' in '", text, "' is not a number");
    parts.push_back(value);
  }
  // getline drops an empty last field: "1:2:" has three fields, the last one empty.
  NUQ_REQUIRE(text.empty() || text.back() != ':', option, ": '", text, "' ends with ':' (an empty field)");
  NUQ_REQUIRE(parts.size() == 2 || parts.size() == 3, option, ": expected FROM:TO or FROM:TO:STEP, got '",
              text, "'");
  // FROM:FROM is the one point FROM (its step, if given, still has to be positive).
  const double default_step = parts[1] > parts[0] ? (parts[1] - parts[0]) / 100.0 : 1.0;
  Range range{parts[0], parts[1], parts.size() == 3 ? parts[2] : default_step};
  NUQ_REQUIRE(range.to >= range.from, option, ": the end must not be below the start in '", text, "'");
  NUQ_REQUIRE(range.step > 0.0, option, ": the step must be positive in '", text, "'");
  return range;
}

const CLI::Validator& non_negative_integer() {
  static const CLI::Validator validator(
      [](std::string& text) {
        const bool digits = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
        if (!digits) return "'" + text + "' is not a non-negative integer";
        // Beyond 2^64 - 1 the conversion would clamp to it without a word.
        const std::string significant = text.substr(std::min(text.find_first_not_of('0'), text.size()));
        const std::string most = "18446744073709551615";
        const bool fits = significant.size() < most.size() || (significant.size() == most.size() && significant <= most);
        if (!fits) return "'" + text + "' is above 18446744073709551615 (2^64 - 1)";
        text = significant.empty() ? "0" : significant;  // "010" is ten, not CLI11's octal eight
        return std::string();
      },
      "");
  return validator;
}

CLI::Validator whole_number_in(long long lowest, long long highest) {
  CLI::Validator validator(
      [lowest, highest](std::string& text) {
        long long value = 0;
        std::size_t used = 0;
        try {
          value = std::stoll(text, &used);
        } catch (const std::out_of_range&) {
          return "'" + text + "' is not in " + std::to_string(lowest) + " to " + std::to_string(highest);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used == 0 || used != text.size()) return "'" + text + "' is not a whole number";
        if (value < lowest || value > highest)
          return "'" + text + "' is not in " + std::to_string(lowest) + " to " + std::to_string(highest);
        text = std::to_string(value);  // "0100" is a hundred, not CLI11's octal 64
        return std::string();
      },
      "INT in [" + std::to_string(lowest) + " - " + std::to_string(highest) + "]");
  return validator;
}

void add_data_option(CLI::App& command, std::string& data, const std::string& help) {
  command.add_option("--data", data, help);  // (an empty value is refused before parsing, as every option's)
}

void add_device_option(CLI::App& command, std::string& device) {
  command
      .add_option("--device", device,
                  "Where the weights are processed: cpu, cuda, or auto (a CUDA device when one is visible, "
                  "else the CPU)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->capture_default_str();
}

void require_own_parameters(const std::string& method, const CLI::Option& mu, const CLI::Option& alpha) {
  NUQ_REQUIRE(!mu.count() || method == "mulaw", "--mu belongs to the mulaw quantizer, not ", method);
  NUQ_REQUIRE(!alpha.count() || method == "ternary", "--alpha scales the ternary quantizer only, not ", method);
}

void warn_of_checkpoint(const std::string& input) {
  for (const std::string& line : checkpoint_warnings(input)) std::cerr << warning_line(line);
}

}  // namespace nuq::cli
