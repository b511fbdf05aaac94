#include "nuq/io/temporary_files.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>

#include "nuq/error.h"

namespace nuq::io {
namespace {

// A fixed table the handler can read without allocating or locking: a slot's path is written
// before `used` is set, and `used` is cleared before the slot is written again.
struct Slot {
  std::atomic<bool> claimed{false};  // owned by a TemporaryFile (its path may still be being written)
  std::atomic<bool> used{false};     // the path is complete: the handler removes it
  bool folder = false;               // a folder the run made, removed (if empty) after the files
  char path[4096]{};  // initialised, so that the table is constant-initialised (below)
};
// A sharded checkpoint quantized shard by shard keeps a temporary per shard until the end (every
// shard's header waits for the last): room for the largest checkpoints' shard counts (a few
// hundred). A temporary beyond them is still removed by a later run. Untouched slots cost no
// memory only while the table is constant-initialised (zero pages of .bss): with `path` left
// uninitialised, C++17 gave Slot no constexpr constructor, and every process touched all 1,024
// pages at start (page faults: a sixth of `nuq design`'s time, 4 MB of memory).
constexpr bool constant_initialisable() {
  Slot probe{};  // compiles in a constant expression only while Slot's constructor is constexpr
  return probe.path[0] == '\0';
}
static_assert(constant_initialisable(), "the table of temporaries must be constant-initialised");
Slot slots[1024];

// While a run puts its outputs in place (SignalsDeferred) a signal waits: that phase is renames
// only, and stopping it part way would leave the old output and the new mixed.
std::atomic<bool> deferring{false};
std::atomic<int> deferred{0};

extern "C" void remove_and_reraise(int signal_number) {
  if (deferring.load(std::memory_order_acquire)) {
    int none = 0;
    deferred.compare_exchange_strong(none, signal_number);
    return;
  }
  for (Slot& slot : slots)
    if (slot.used.load(std::memory_order_acquire) && !slot.folder) ::unlink(slot.path);  // async-signal-safe
  for (Slot& slot : slots)  // then the folders a run made, now empty of its files (rmdir leaves any other)
    if (slot.used.load(std::memory_order_acquire) && slot.folder) ::rmdir(slot.path);
  ::signal(signal_number, SIG_DFL);
  ::raise(signal_number);
}

}  // namespace

SignalsDeferred::SignalsDeferred() { deferring.store(true, std::memory_order_release); }

SignalsDeferred::~SignalsDeferred() {
  deferring.store(false, std::memory_order_release);
  if (const int signal_number = deferred.exchange(0)) ::raise(signal_number);  // its handler runs now
}

TemporaryFile::TemporaryFile(const std::string& path, bool folder) {
  if (path.size() >= sizeof(Slot::path)) return;
  for (int i = 0; i < int(std::size(slots)); ++i) {
    bool expected = false;
    if (!slots[i].claimed.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) continue;
    slots[i].folder = folder;
    std::memcpy(slots[i].path, path.c_str(), path.size() + 1);
    slots[i].used.store(true, std::memory_order_release);
    slot_ = i;
    return;
  }
}

TemporaryFile::~TemporaryFile() {
  if (slot_ < 0) return;
  slots[slot_].used.store(false, std::memory_order_release);
  slots[slot_].claimed.store(false, std::memory_order_release);
}

// The largest pid this system hands out (Linux's pid_max), or 2^22 when it cannot be read.
long largest_pid() {
  std::ifstream in("/proc/sys/kernel/pid_max");
  long most = 0;
  return in >> most && most > 0 ? most : 4194304L;
}

std::string temporary_path_for(const std::string& output) {
  namespace fs = std::filesystem;
  const fs::path path(output);
  const std::string prefix = path.filename().string() + ".tmp.";
  // A killed run's file is left alone for a minute: a writer whose pid this process cannot see (a
  // container sharing the folder) is still writing to it.
  const auto settled = fs::file_time_type::clock::now() - std::chrono::minutes(1);
  const long most = largest_pid();
  std::error_code ec;  // a folder that cannot be listed leaves its leftovers; writing will say why it fails
  const fs::path folder = path.has_parent_path() ? path.parent_path() : fs::path(".");
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    // `<pid>.<call>` as nuq writes it (or `<pid>` alone, as it did): no sign, no leading zero.
    const std::string rest = name.substr(prefix.size());
    const std::size_t dot = rest.find('.');
    const std::string digits = rest.substr(0, dot), call = dot == std::string::npos ? "0" : rest.substr(dot + 1);
    const auto number = [](const std::string& text, std::size_t longest) {
      return !text.empty() && text.size() <= longest && text.find_first_not_of("0123456789") == std::string::npos &&
             (text[0] != '0' || text == "0");
    };
    if (!number(digits, 9) || digits == "0" || !number(call, 19)) continue;
    const long pid = std::stol(digits);
    // Not running: kill(pid, 0) fails with ESRCH (EPERM means it runs under another user).
    if (pid > most || pid == long(::getpid()) || ::kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;
    std::error_code ignored;
    if (it->is_regular_file(ignored) && !it->is_symlink(ignored) && fs::last_write_time(it->path(), ignored) < settled)
      fs::remove(it->path(), ignored);
  }
  // Threads of one process writing the same output (Python's nuq.save) each get a file of their own.
  static std::atomic<std::uint64_t> calls{0};
  return output + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(calls.fetch_add(1));
}

CreatedTemporary create_temporary_for(const std::string& output) {
  constexpr int kNames = 64;  // names taken by this pid's earlier lives; beyond that, something else is wrong
  for (int attempt = 1;; ++attempt) {
    CreatedTemporary created{temporary_path_for(output), -1, nullptr};
    // Registered before it exists: a signal between the file's creation and its registration
    // would leave it. (Removing the name before it is made removes nothing, or a killed earlier
    // life's leftover of this pid, which is no one's.)
    created.removed_if_interrupted = std::make_unique<TemporaryFile>(created.path);
    created.fd = ::open(created.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (created.fd >= 0) {
      // A file written over keeps its permission bits (a private checkpoint stays private, as with
      // editors' and rsync's replacements), from before the first byte is written; a new one has the
      // umask's. The owner keeps reading and writing the temporary until it is moved into place
      // (a writer set aside opens it again), where a read-only file's bits are given it whole. At
      // best effort: a file system without modes (vfat) keeps its own.
      struct stat replaced {};
      if (::stat(output.c_str(), &replaced) == 0 && S_ISREG(replaced.st_mode))
        static_cast<void>(::fchmod(created.fd, (replaced.st_mode & 0777) | S_IRUSR | S_IWUSR));
      return created;
    }
    NUQ_REQUIRE(errno == EEXIST && attempt < kNames, output, ": cannot write there (creating ", created.path, "): ",
                std::strerror(errno));
  }
}

namespace {

// The bits of the file `output` replaces, where the owner's reading or writing was left out of them
// (create_temporary_for kept both for the owner while the temporary was written); else none.
std::optional<mode_t> read_only_bits_of(const std::string& output) {
  struct stat replaced {};
  if (::stat(output.c_str(), &replaced) != 0 || !S_ISREG(replaced.st_mode) ||
      (replaced.st_mode & (S_IRUSR | S_IWUSR)) == (S_IRUSR | S_IWUSR))
    return std::nullopt;
  return replaced.st_mode & 0777;
}

}  // namespace

void move_temporary_into_place(int& fd, const std::string& temporary, const std::string& output, bool synced) {
  NUQ_REQUIRE(synced || ::fsync(fd) == 0, output, ": writing failed (disk full?): ", std::strerror(errno));
  const int closing = fd;
  fd = -1;
  NUQ_REQUIRE(::close(closing) == 0, output, ": writing failed: ", std::strerror(errno));
  rename_temporary_into_place(temporary, output);
}

void rename_temporary_into_place(const std::string& temporary, const std::string& output) {
  if (const std::optional<mode_t> bits = read_only_bits_of(output))
    static_cast<void>(::chmod(temporary.c_str(), *bits));
  NUQ_REQUIRE(std::rename(temporary.c_str(), output.c_str()) == 0, output, ": cannot replace the file: ",
              std::strerror(errno));
}

void remove_temporary_files_on_signals() {
  ::signal(SIGXFSZ, SIG_IGN);  // write() then fails with EFBIG, and the error names the file
  for (int signal_number :
       {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGALRM, SIGUSR1, SIGUSR2, SIGXCPU, SIGPIPE, SIGVTALRM, SIGPROF}) {
    struct sigaction current {};
    if (::sigaction(signal_number, nullptr, &current) == 0 && current.sa_handler == SIG_IGN) continue;  // nohup
    struct sigaction action {};
    action.sa_handler = remove_and_reraise;
    sigemptyset(&action.sa_mask);
    ::sigaction(signal_number, &action, nullptr);
  }
}

}  // namespace nuq::io
