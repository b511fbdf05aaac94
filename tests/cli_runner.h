// Runs the real `nuq` binary as a user would, through the shell.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace nuq::test {

struct CommandResult {
  int status;          // the exit status; -1 when killed by a signal
  std::string output;  // stdout and stderr together
};

// `arguments` is shell text: quote what needs quoting. `environment`, shell text too, goes before
// the command (e.g. "LD_DEBUG=files").
inline CommandResult run_nuq(const std::string& arguments, const std::string& environment = "") {
  const std::string command =
      (environment.empty() ? "" : environment + " ") + std::string(NUQ_BINARY) + " " + arguments + " 2>&1 </dev/null";
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return {-1, "popen failed"};
  std::string output;
  std::array<char, 4096> buffer;
  std::size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) output.append(buffer.data(), n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

}  // namespace nuq::test
