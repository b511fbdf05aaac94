#include "nuq/io/file_checks.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>

#include "nuq/error.h"

namespace nuq::io {
namespace {

const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISLNK(mode)) return "a symbolic link";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

}  // namespace

void require_input_file(const std::string& path) {
  NUQ_REQUIRE(!path.empty(), "an input file name is empty");
  struct stat info {};
  NUQ_REQUIRE(::stat(path.c_str(), &info) == 0, path, ": cannot open: ", std::strerror(errno));
  NUQ_REQUIRE(S_ISREG(info.st_mode), path, ": cannot read it as a file: it is ", kind_of(info.st_mode));
  NUQ_REQUIRE(::access(path.c_str(), R_OK) == 0, path, ": cannot open: ", std::strerror(errno));
}

namespace {

// `path` can be made or replaced by a rename: its folder is there and may be written (checked before
// the work, not found out when the first file is renamed into place after a long run).
void require_writable_parent(const std::string& path) {
  const std::filesystem::path folder = std::filesystem::path(path).parent_path();
  const std::string where = folder.empty() ? "." : folder.string();
  struct stat parent {};
  NUQ_REQUIRE(::stat(where.c_str(), &parent) == 0, path, ": cannot write there: the folder ", where, ": ",
              std::strerror(errno));
  NUQ_REQUIRE(S_ISDIR(parent.st_mode), path, ": cannot write there: ", where, " is not a folder");
  NUQ_REQUIRE(::access(where.c_str(), W_OK | X_OK) == 0, path, ": cannot write there: the folder ", where, ": ",
              std::strerror(errno));
}

}  // namespace

namespace {

// Every output is written first as <name>.tmp.<pid>.<n> beside it (temporary_files.cpp): a name
// too long for that to fit the folder's limit would fail only when written, after the work.
void require_room_for_temporary_name(const std::string& path) {
  const std::filesystem::path folder = std::filesystem::path(path).parent_path();
  const long limit = ::pathconf(folder.empty() ? "." : folder.c_str(), _PC_NAME_MAX);
  const std::size_t name = std::filesystem::path(path).filename().string().size();
  // ".tmp." + this process's id + "." + a count of temporary files (a few digits in any run).
  const std::size_t suffix = 5 + std::to_string(::getpid()).size() + 1 + 4;
  if (limit <= 0 || name + suffix <= std::size_t(limit)) return;
  throw Error(detail::concat(path, ": a file name of ", name, " bytes is too long to write: nuq writes it first as "
                             "<name>.tmp.<pid>.<n> (", suffix, " bytes more), and names here take at most ", limit,
                             " bytes; shorten it by ", name + suffix - std::size_t(limit), " bytes"));
}

// "-" names standard output to most tools; nuq writes each output whole, to a temporary file renamed
// over the name, so it would make a file named "-" that the user did not ask for.
void require_not_standard_stream(const std::string& path, const std::string& option) {
  NUQ_REQUIRE(path != "-", option, ": '-' is not read as standard output: nuq writes whole files (a temporary "
              "file renamed into place); give a name (./- for a file named '-')");
}

}  // namespace

void require_output_path(const std::string& path, const std::vector<std::string>& inputs, const std::string& option) {
  NUQ_REQUIRE(!path.empty(), option, ": the file name is empty");
  require_not_standard_stream(path, option);
  struct stat info {};
  if (::lstat(path.c_str(), &info) != 0) {
    NUQ_REQUIRE(errno == ENOENT, path, ": cannot write there: ", std::strerror(errno));
    // A new file: its folder must be there now, not only when the file is written after a long run.
    require_writable_parent(path);
    require_room_for_temporary_name(path);
    return;
  }
  NUQ_REQUIRE(S_ISREG(info.st_mode), path, ": will not replace it: it is ", kind_of(info.st_mode),
              " (nuq writes regular files only)");
  require_writable_parent(path);
  require_room_for_temporary_name(path);
  for (const std::string& input : inputs) {
    struct stat source {};
    if (::stat(input.c_str(), &source) == 0 && source.st_dev == info.st_dev && source.st_ino == info.st_ino)
      throw Error(path + ": is the input " + (input == path ? "itself" : "file " + input) +
                  "; give another " + option + " so the input is kept");
  }
}

void make_folder(const std::string& path, const std::string& option) {
  NUQ_REQUIRE(!path.empty(), option, ": the folder name is empty");
  require_not_standard_stream(path, option);
  std::error_code error;
  std::filesystem::create_directories(path, error);
  NUQ_REQUIRE(!error, option, " ", path, ": cannot create the folder: ", error.message());
  NUQ_REQUIRE(std::filesystem::is_directory(path), option, " ", path, ": is not a folder");
}

bool make_output_folder(const std::string& path, const std::string& option) {
  NUQ_REQUIRE(!path.empty(), option, ": the folder name is empty");
  require_not_standard_stream(path, option);
  // (std::filesystem::path("a/") has the parent "a": the name without its trailing slashes is the folder.)
  std::string name = path;
  while (name.size() > 1 && name.back() == '/') name.pop_back();
  std::error_code error;
  bool made = false;
  if (!std::filesystem::exists(name, error)) {
    NUQ_REQUIRE(!std::filesystem::is_symlink(name, error), option, " ", path,
                ": is a symbolic link to nothing (", std::filesystem::read_symlink(name, error).string(),
                "); give a folder");
    // A folder named like a file would be taken for one by every reader (nuq's included).
    NUQ_REQUIRE(std::filesystem::path(name).extension() != ".safetensors", option, " ", path,
                ": the output is a folder of shards here (the input is sharded), and a folder named .safetensors "
                "would be read as a file; give a folder name");
    require_writable_parent(name);
    made = std::filesystem::create_directory(name, error);
    NUQ_REQUIRE(!error, option, " ", path, ": cannot create the folder: ", error.message());
  }
  NUQ_REQUIRE(std::filesystem::is_directory(name), option, " ", path, ": is not a folder");
  return made;
}

}  // namespace nuq::io
