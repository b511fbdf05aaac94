// The temporary files nuq writes its outputs into (renamed into place when whole), registered so
// that an interrupted run removes them: SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGALRM, SIGUSR1, SIGUSR2,
// SIGXCPU (a batch system's CPU limit), SIGPIPE, SIGVTALRM and SIGPROF unlink every registered file before the signal takes its
// default course. A file-size limit (SIGXFSZ) is ignored, so that a write past it fails as a full
// disk does, with an error naming the file. (SIGKILL cannot be caught: a file named
// `<output>.tmp.<pid>.<call>` is then left, never read as an output, and removed by the next run
// that writes the same output once it is a minute old.)
#pragma once

#include <memory>
#include <string>

namespace nuq::io {

// While alive, `path` is removed if the process is interrupted. Paths past the registry's size
// (1,024 at once, each up to 4095 bytes) are not registered; writing works the same.
class TemporaryFile {
 public:
  // `folder`: a folder the run made, removed after the files if it is empty then.
  explicit TemporaryFile(const std::string& path, bool folder = false);
  ~TemporaryFile();
  TemporaryFile(const TemporaryFile&) = delete;
  TemporaryFile& operator=(const TemporaryFile&) = delete;

 private:
  int slot_ = -1;
};

// `<output>.tmp.<this process's id>.<call>`, a name no other call gives (threads of one process
// writing the same output never share a file): the name to write `output` into before renaming it
// into place, in the same folder (so the rename is atomic). Files `<output>.tmp.<pid>[.<call>]` of
// processes no longer running (killed by SIGKILL, or by a power cut) and unchanged for a minute are
// removed first.
std::string temporary_path_for(const std::string& output);

// A temporary file of this call's own for `output` (a name temporary_path_for gives), created anew
// and open for writing: O_EXCL | O_NOFOLLOW, so never a file or a link found at its name, and its
// mode what the umask leaves of 0666, as for any file the user writes, or, where `output` is a file
// it will replace, that file's permission bits (set before anything is written). A name taken (left
// by a killed run that had this process id: a container's nuq is often pid 1 every time) passes on
// to the next call's name. Throws nuq::Error naming `output`. The file comes registered (kept as
// long as the caller keeps `removed_if_interrupted`); the caller closes `fd`.
struct CreatedTemporary {
  std::string path;
  int fd = -1;
  std::unique_ptr<TemporaryFile> removed_if_interrupted;  // registered before the file was made
};
CreatedTemporary create_temporary_for(const std::string& output);

// Puts a written temporary file in `output`'s place: fsync (its bytes on the disk before the name
// is), close (`fd` set to -1 first, so never closed twice even when close fails: another thread may
// reuse the number), rename_temporary_into_place. Throws nuq::Error naming `output`; the caller
// removes the file then. `synced`: the file was fsync'd since its last write, and is not again.
void move_temporary_into_place(int& fd, const std::string& temporary, const std::string& output, bool synced = false);
// For a temporary file already synced and closed: the bits of a read-only `output` given it (its
// owner kept reading and writing it until now), and the rename; no descriptor opened again, which
// could fail after the old output's index is gone.
void rename_temporary_into_place(const std::string& temporary, const std::string& output);

// While alive, the handlers below hold any signal until its end, then take it: for the phase that
// puts a run's outputs in place (renames, of shards then their index), which a signal stopping part
// way would leave with the old output's files and the new mixed. One at a time.
class SignalsDeferred {
 public:
  SignalsDeferred();
  ~SignalsDeferred();
  SignalsDeferred(const SignalsDeferred&) = delete;
  SignalsDeferred& operator=(const SignalsDeferred&) = delete;
};

// Installs the handlers, and ignores SIGXFSZ (once; the CLI's main calls it: a library's host, such
// as Python, keeps its own). Signals the process ignores stay ignored.
void remove_temporary_files_on_signals();

}  // namespace nuq::io
