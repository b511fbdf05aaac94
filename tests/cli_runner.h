// Runs the real `nuq` binary as a user would, through the shell.
#pragma once

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

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

// `nuq` run with `arguments` (no shell), its stdout and stderr into `output`: its exit status, and
// its own peak resident set in KiB (wait4's, not that of another test's child).
inline std::pair<int, long> run_nuq_measured(std::vector<std::string> arguments, const std::string& output) {
  arguments.insert(arguments.begin(), NUQ_BINARY);
  std::vector<char*> argv;
  for (std::string& a : arguments) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t child = fork();
  if (child == 0) {
    const int fd = open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) _exit(127);
    execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  rusage usage{};
  if (child < 0 || wait4(child, &status, 0, &usage) != child) return {-1, 0};
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, usage.ru_maxrss};
}

}  // namespace nuq::test
