// Errors in nuq come in two tiers (as in faiss): `nuq::Error` for anything a user can cause
// (bad arguments, bad files, numbers that make no sense), and `nuq::InternalError` for a broken
// invariant of nuq itself. Both are exceptions, never abort(), so tests and the CLI can see them.
#pragma once

#include <cmath>
#include <cstddef>
#include <sstream>
#include <stdexcept>
#include <string>

namespace nuq {

class Error : public std::runtime_error {
 public:
  // what() is read as a C string: a NUL in a quoted name (a tensor's, or a shard's in an index)
  // would end the message there, before its cause, so each is written as the text \x00.
  explicit Error(const std::string& message) : std::runtime_error(without_nul(message)) {}
  explicit Error(const char* message) : std::runtime_error(message) {}

 private:
  static std::string without_nul(const std::string& message);
};

// A NaN or Inf among weights that must be finite. `index` counts from the first of the weights
// the check was given: a caller that gave it part of a tensor (a piece, a share) rethrows it with
// the element's place in the whole tensor (locating_nonfinite, tensor_pieces.h).
class NonFiniteWeight : public Error {
 public:
  // "<where>: element <place> is <value>; weights must be finite (...)", place the index unless given.
  NonFiniteWeight(const std::string& where, std::size_t index, double value, const std::string& place = "");
  std::size_t index;
  double value;
};

class InternalError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

namespace detail {
[[noreturn]] void throw_internal(const char* file, int line, const char* condition,
                                 const std::string& message);

// A part as a message shows it: a NaN as "nan" whatever its sign bit (the stream writes "-nan" for
// one with it set, a bfloat16 NaN as PyTorch makes it, which tells the reader nothing more).
template <typename T>
const T& shown(const T& part) {
  return part;
}
inline double shown(double part) { return std::isnan(part) ? std::fabs(part) : part; }
inline float shown(float part) { return std::isnan(part) ? std::fabs(part) : part; }

template <typename... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  out.precision(10);
  (out << ... << shown(parts));
  return out.str();
}
}  // namespace detail

}  // namespace nuq

// A user-facing check: throws nuq::Error with the message built from the remaining arguments.
#define NUQ_REQUIRE(condition, ...)                                   \
  do {                                                                \
    if (!(condition)) throw ::nuq::Error(::nuq::detail::concat(__VA_ARGS__)); \
  } while (0)

// An invariant of nuq itself: throws nuq::InternalError naming file, line and condition.
#define NUQ_ASSERT(condition, ...)                                                         \
  do {                                                                                     \
    if (!(condition))                                                                      \
      ::nuq::detail::throw_internal(__FILE__, __LINE__, #condition,                        \
                                    ::nuq::detail::concat(__VA_ARGS__));                   \
  } while (0)
