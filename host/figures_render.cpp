// Running scripts/plots.py: finding the script and a Python with matplotlib, and spawning it
// without a shell (paths are passed as arguments, never pasted into a command line).
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "nuq/error.h"
#include "nuq/figures.h"

extern char** environ;

namespace nuq {
namespace {

namespace fs = std::filesystem;

// Exit status of argv[0] run with argv (PATH searched); -1 when it could not start. Output goes
// to `log` (appended) or nowhere.
int run(const std::vector<std::string>& argv, const std::string& log = "") {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  const std::string sink = log.empty() ? "/dev/null" : log;
  posix_spawn_file_actions_addopen(&actions, 1, sink.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = 0;
  const int started = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (started != 0) return -1;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

std::string plots_script(const std::string& given) {
  if (!given.empty()) {  // asked for by name: its absence is the user's mistake to hear of, not a skip
    NUQ_REQUIRE(fs::is_regular_file(given), given, ": --plots names no script (", fs::exists(given) ? "not a file" : "no such file", ")");
    return given;
  }
  if (const char* env = std::getenv("NUQ_PLOTS"); env && *env) {  // asked for too, by the environment
    NUQ_REQUIRE(fs::is_regular_file(env), "$NUQ_PLOTS=", env, " names no script (",
                fs::exists(env) ? "not a file" : "no such file", "); unset it for the repository's scripts/plots.py");
    return env;
  }
  std::error_code error;
  const fs::path exe = fs::read_symlink("/proc/self/exe", error);
  if (!error)  // build/nuq or build/<anything>/nuq below the repository root
    for (fs::path dir = exe.parent_path(); !dir.empty() && dir != dir.root_path(); dir = dir.parent_path())
      if (fs::exists(dir / "scripts" / "plots.py")) return (dir / "scripts" / "plots.py").string();
  return fs::exists("scripts/plots.py") ? "scripts/plots.py" : "";
}

namespace {

std::string find_python() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("NUQ_PYTHON"); env && *env) candidates.push_back(env);
  candidates.insert(candidates.end(), {"python3", "/usr/bin/python3"});
  for (const std::string& python : candidates)
    if (run({python, "-c", "import matplotlib"}) == 0) return python;
  return "";
}

}  // namespace

std::string render_figures(const std::string& dir, std::vector<Figure>& figures, const std::string& script,
                           const std::string& bench_dir) {
  const std::string plots = plots_script(script);
  if (plots.empty()) return "figures not rendered: scripts/plots.py not found (give --plots or set NUQ_PLOTS)";
  const std::string python = find_python();
  if (python.empty())
    return "figures not rendered: no Python with matplotlib (scripts/setup installs python3-matplotlib; or set NUQ_PYTHON)";
  NUQ_REQUIRE(bench_dir.empty() || fs::is_directory(bench_dir), bench_dir, ": --bench names no folder of bench results");
  std::vector<std::string> argv{python, plots, dir};
  const fs::path bench = bench_dir.empty() ? fs::path(plots).parent_path().parent_path() / "bench" / "results" : fs::path(bench_dir);
  if (fs::is_directory(bench)) argv.insert(argv.end(), {"--bench", bench.string()});
  const std::string log = (fs::path(dir) / "plots.log").string();
  std::error_code ignored;
  fs::remove(log, ignored);
  // An earlier run's images would be counted (and embedded in the report) as this run's.
  for (const Figure& f : figures) fs::remove(fs::path(dir) / (f.stem + ".png"), ignored);
  fs::remove(fs::path(dir) / "bench-speedup.png", ignored);
  const int status = run(argv, log);
  if (fs::exists(fs::path(dir) / "bench-speedup.png"))
    figures.push_back({"bench-speedup", "Speed-up of the fused quantized GEMM",
                       "From bench/results: time of the FP32 peer divided by nuq's time for the same product, "
                       "per batch size and code width; the dashed lines are the byte-ratio limits 32/bits that "
                       "a memory-bound product can reach."});
  int rendered = 0;
  for (Figure& f : figures) rendered += f.rendered = fs::exists(fs::path(dir) / (f.stem + ".png"));
  std::string outcome = std::to_string(rendered) + " of " + std::to_string(figures.size()) + " figures rendered by " +
                        plots + " (" + python + ")";
  if (status != 0) outcome += "; plots.py exited with status " + std::to_string(status) + ", see " + log;
  return outcome;
}

}  // namespace nuq
