// Text from files (tensor names, metadata, paths) as a terminal is to show it. Such text reaches
// errors, warnings, tables and the progress line; a downloaded file's ESC sequences would otherwise
// clear the screen, recolour it or hide nuq's own lines, and a newline in a name would forge one.
#pragma once

#include <string>

namespace nuq {

// `text` with every byte a terminal acts on rather than shows written as \xNN: the C0 controls
// (ESC, CR, BEL, newline, ...) but tab, DEL, and the C1 controls' UTF-8 (U+0080-U+009F, CSI among
// them) as their two bytes. Other text, UTF-8 or not, is left as it is. nuq's own messages are one
// line each, so a whole message passes through it too.
std::string terminal_text(const std::string& text);

// The line nuq prints for a warning: "nuq: warning: " and `text` as terminal_text shows it.
std::string warning_line(const std::string& text);

}  // namespace nuq
