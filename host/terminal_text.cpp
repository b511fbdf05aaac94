#include "nuq/terminal_text.h"

#include <cstdio>

namespace nuq {

std::string terminal_text(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  const auto escape = [&](unsigned char byte) {
    char code[5];
    std::snprintf(code, sizeof code, "\\x%02x", byte);
    out += code;
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    const bool c0 = (byte < 0x20 && byte != '\t') || byte == 0x7f;
    const bool c1 = byte == 0xc2 && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) >= 0x80 &&
                    static_cast<unsigned char>(text[i + 1]) <= 0x9f;
    if (c0) {
      escape(byte);
    } else if (c1) {
      escape(byte);
      escape(static_cast<unsigned char>(text[++i]));
    } else {
      out += text[i];
    }
  }
  return out;
}

std::string warning_line(const std::string& text) { return "nuq: warning: " + terminal_text(text) + "\n"; }

}  // namespace nuq
