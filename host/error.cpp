#include "nuq/error.h"

namespace nuq::detail {

void throw_internal(const char* file, int line, const char* condition, const std::string& message) {
  std::string what = std::string(file) + ":" + std::to_string(line) + ": internal error: `" +
                     condition + "` does not hold";
  if (!message.empty()) what += ": " + message;
  throw InternalError(what);
}

}  // namespace nuq::detail
