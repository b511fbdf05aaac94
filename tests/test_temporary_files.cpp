// An interrupted run leaves no temporary output behind: a child process with registered files
// takes SIGINT, SIGTERM, SIGHUP or another signal that ends a process; the files it still held are gone, a file it had let go of (renamed
// into place) stays, and the child ends by the signal itself (its exit status tells the shell so).
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "nuq/error.h"
#include "nuq/io/atomic_file.h"
#include "nuq/io/safetensors.h"
#include "nuq/io/safetensors_stream.h"
#include "nuq/io/temporary_files.h"
#include "temp_dir.h"

namespace nuq::io {
namespace {

TEST(TemporaryFiles, AnInterruptedRunRemovesWhatItHeld) {
  for (int signal_number :
       {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGALRM, SIGUSR1, SIGUSR2, SIGXCPU, SIGPIPE, SIGVTALRM, SIGPROF}) {
    test::TempDir dir;
    const std::string held = dir.file("out.safetensors.tmp.1"), second = dir.file("other.tmp.1"),
                      released = dir.file("done.tmp.1"), folder = dir.file("made");
    for (const std::string& path : {held, second, released}) std::ofstream(path) << "partial";
    std::filesystem::create_directory(folder);  // a folder of shards the run made, empty again
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {  // only async-signal-safe work from here on, then the signal
      const struct rlimit no_core {0, 0};
      ::setrlimit(RLIMIT_CORE, &no_core);  // SIGQUIT's default dumps one
      remove_temporary_files_on_signals();
      { const TemporaryFile let_go(released); }
      const TemporaryFile made(folder, /*folder=*/true), a(held), b(second);
      ::raise(signal_number);
      ::_exit(0);  // not reached: the signal ends the child
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == signal_number) << "signal " << signal_number;
    EXPECT_FALSE(std::filesystem::exists(held)) << signal_number;
    EXPECT_FALSE(std::filesystem::exists(second)) << signal_number;
    EXPECT_TRUE(std::filesystem::exists(released)) << signal_number;
    EXPECT_FALSE(std::filesystem::exists(folder)) << signal_number;
  }
}

// While outputs are put in place (renames only), a signal waits for the end of that phase, then
// takes its course: the files it held are removed, and what the phase did is whole.
TEST(TemporaryFiles, ASignalWhileOutputsGoInPlaceWaitsForTheirEnd) {
  test::TempDir dir;
  const std::string held = dir.file("out.tmp.1"), done = dir.file("done");
  std::ofstream(held) << "partial";
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    remove_temporary_files_on_signals();
    const TemporaryFile a(held);
    {
      const SignalsDeferred deferred;
      ::raise(SIGTERM);
      ::raise(SIGINT);  // a second waits too; the first is the one taken
      std::ofstream(done) << "the phase ran to its end";
    }
    ::_exit(0);  // not reached: the deferred signal ends the child
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM) << "status " << status;
  EXPECT_TRUE(std::filesystem::exists(done));
  EXPECT_FALSE(std::filesystem::exists(held));
}

// A file-size limit (ulimit -f) is not a kill: writing past it fails as a full disk does, with an
// error that names the file, and the temporary goes as after any failed write.
TEST(TemporaryFiles, AFileSizeLimitIsAFailedWriteNotAKill) {
  test::TempDir dir;
  const std::string output = dir.file("out.safetensors");
  std::ofstream(output) << "old";
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    remove_temporary_files_on_signals();
    const struct rlimit limit {4096, 4096};
    ::setrlimit(RLIMIT_FSIZE, &limit);
    int code = 3;
    try {
      TensorFile big;
      big.tensors["w"] = f32_tensor({4096}, std::vector<float>(4096, 1.0f));
      write_safetensors(output, big);
    } catch (const Error& e) {
      code = std::string(e.what()).find(output + ": writing failed: File too large") != std::string::npos ? 7 : 5;
    }
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 7) << "status " << status;
  std::string kept;
  std::getline(std::ifstream(output), kept);
  EXPECT_EQ(kept, "old");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), std::filesystem::directory_iterator()), 1);
}

TEST(TemporaryFiles, AnIgnoredSignalStaysIgnored) {
  test::TempDir dir;
  const std::string held = dir.file("x.tmp.1");
  std::ofstream(held) << "partial";
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::signal(SIGHUP, SIG_IGN);  // as under nohup
    remove_temporary_files_on_signals();
    const TemporaryFile a(held);
    ::raise(SIGHUP);
    ::_exit(7);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 7);
  EXPECT_TRUE(std::filesystem::exists(held));
}

// SIGKILL leaves `<output>.tmp.<pid>.<call>`; the next run that writes the same output removes it
// once it has lain a minute, and only it: not a running process's file, not a fresh one, not
// another output's, not a name that is not a pid and call as nuq writes them (or a pid alone, as
// earlier versions wrote it).
TEST(TemporaryFiles, LeftoversOfKilledRunsAreRemovedByTheNextWriter) {
  test::TempDir dir;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);  // reaped: its pid runs nothing now
  const std::string dead = std::to_string(child), alive = std::to_string(::getppid());
  const std::string output = dir.file("out.safetensors");
  const auto an_hour_ago = std::filesystem::file_time_type::clock::now() - std::chrono::hours(1);
  const std::vector<std::string> removed = {"out.safetensors.tmp." + dead, "out.safetensors.tmp." + dead + ".0",
                                            "out.safetensors.tmp." + dead + ".17"};
  const std::vector<std::string> kept = {"out.safetensors.tmp." + alive + ".3",   std::string("out.safetensors.tmp.x1"),
                                         "other.safetensors.tmp." + dead + ".0", "out.safetensors.tmp.0" + dead,
                                         "out.safetensors.tmp." + dead + "0000000000", "out.safetensors.tmp." + dead + ".01",
                                         "out.safetensors.tmp." + dead + ".", "out.safetensors.tmp." + dead + ".1.2"};
  for (const std::vector<std::string>* names : {&removed, &kept})
    for (const std::string& name : *names) {
      std::ofstream(dir.file(name)) << "partial";
      std::filesystem::last_write_time(dir.file(name), an_hour_ago);
    }
  const std::string mine = temporary_path_for(output), next = temporary_path_for(output);
  const std::string own_prefix = output + ".tmp." + std::to_string(::getpid()) + ".";
  EXPECT_EQ(mine.rfind(own_prefix, 0), 0u) << mine;
  EXPECT_EQ(next.rfind(own_prefix, 0), 0u) << next;
  EXPECT_NE(mine, next);  // two writers of one output in one process never share a file
  for (const std::string& name : removed) EXPECT_FALSE(std::filesystem::exists(dir.file(name))) << name;
  for (const std::string& name : kept) EXPECT_TRUE(std::filesystem::exists(dir.file(name))) << name;
  std::ofstream(output + ".tmp." + dead + ".0") << "a killed run's, seconds ago";  // may be another container's writer
  temporary_path_for(output);
  EXPECT_TRUE(std::filesystem::exists(output + ".tmp." + dead + ".0"));
}

// The names this process's next `count` calls of temporary_path_for(output) will give.
std::vector<std::string> next_temporary_names(const std::string& output, int count) {
  const std::string taken = temporary_path_for(output);
  const std::size_t dot = taken.rfind('.') + 1;
  std::vector<std::string> names;
  for (int i = 1; i <= count; ++i) names.push_back(taken.substr(0, dot) + std::to_string(std::stoull(taken.substr(dot)) + i));
  return names;
}

std::string text_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Both writers (write_atomically: reports, indexes, predictions, figures' tables, IDX; and the
// streaming SafetensorsWriter) write a temporary file of their own. A link planted at the name it
// would take is never followed (its target is left as it was), and a file left there by a killed
// earlier run with this process id (a container's nuq is pid 1 every time) does not stop the write:
// each passes to the next name, and neither is touched. The file gets the mode the umask leaves.
TEST(TemporaryFiles, WritersTakeANameOfTheirOwnPastPlantedLinksAndLeftovers) {
  test::TempDir dir;
  const std::string victim = dir.file("victim.txt");
  std::ofstream(victim) << "untouched";
  for (const bool streamed : {false, true}) {
    const std::string output = dir.file(streamed ? "s.safetensors" : "report.md");
    const std::vector<std::string> next = next_temporary_names(output, 2);
    ASSERT_EQ(::symlink(victim.c_str(), next[0].c_str()), 0);
    std::ofstream(next[1]) << "a killed run's";
    const mode_t before = ::umask(0002);
    if (streamed) {
      SafetensorsWriter writer(output, {}, {{"t", TensorEntry{DType::U8, {2}}}});
      const std::uint8_t bytes[2] = {1, 2};
      writer.append(bytes, 2);
      writer.finish();
    } else {
      write_atomically(output, [](std::ostream& out) { out << std::string(200000, 'x') << "end"; });  // past one buffer
    }
    ::umask(before);
    EXPECT_EQ(text_of(victim), "untouched");
    EXPECT_TRUE(std::filesystem::is_symlink(next[0]));
    EXPECT_EQ(text_of(next[1]), "a killed run's");
    const auto permissions = std::filesystem::status(output).permissions();
    EXPECT_NE(permissions & std::filesystem::perms::group_write, std::filesystem::perms::none);
    EXPECT_EQ(permissions & std::filesystem::perms::others_write, std::filesystem::perms::none);
    if (streamed) {
      EXPECT_EQ(read_safetensors(output).tensors.at("t").data, (std::vector<std::uint8_t>{1, 2}));
    } else {
      const std::string text = text_of(output);
      EXPECT_EQ(text.size(), 200003u);
      EXPECT_EQ(text.substr(text.size() - 4), "xend");
    }
  }
}

// A file written over keeps its permission bits (a private checkpoint stays private), by either
// writer, and so does its temporary while it is written (no one else may open a private file's
// new contents meanwhile); a new one takes the umask's.
TEST(TemporaryFiles, AFileWrittenOverKeepsItsPermissions) {
  test::TempDir dir;
  const mode_t before = ::umask(0022);
  const auto mode_of = [](const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
  };
  // The temporary beside `output` (the one file named like one).
  const auto temporary_of = [&](const std::string& output) {
    std::string found;
    for (const auto& entry : std::filesystem::directory_iterator(dir.file("")))
      if (entry.path().filename().string().rfind(std::filesystem::path(output).filename().string() + ".tmp.", 0) == 0)
        found = entry.path().string();
    EXPECT_FALSE(found.empty()) << output;
    return found;
  };
  for (const bool streamed : {false, true}) {
    const std::string output = dir.file(streamed ? "s.safetensors" : "report.md");
    mode_t while_written = 0;
    const auto write = [&] {
      if (streamed) {
        SafetensorsWriter writer(output, {}, {{"t", TensorEntry{DType::U8, {2}}}});
        const std::uint8_t bytes[2] = {1, 2};
        writer.append(bytes, 1);
        while_written = mode_of(temporary_of(output));
        writer.append(bytes + 1, 1);
        writer.finish();
      } else {
        write_atomically(output, [&](std::ostream& out) {
          out << "text";
          while_written = mode_of(temporary_of(output));
        });
      }
    };
    write();
    EXPECT_EQ(mode_of(output), 0644u) << output;
    EXPECT_EQ(while_written, 0644u) << output;
    for (mode_t chosen : {0600u, 0640u, 0755u}) {
      ASSERT_EQ(::chmod(output.c_str(), chosen), 0);
      write();
      EXPECT_EQ(mode_of(output), chosen) << output;
      EXPECT_EQ(while_written, chosen) << output << " while it was written";
    }
  }
  ::umask(before);
}

}  // namespace
}  // namespace nuq::io
