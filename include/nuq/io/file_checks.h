// What nuq checks before it reads or writes a file the user named, so that a mistake ends in a
// message rather than in lost data: an input must be a readable regular file; an output must be a
// new path or an existing regular file, never a directory, device, FIFO, socket or symbolic link
// (the atomic rename would replace the node itself), and never one of the command's inputs.
#pragma once

#include <string>
#include <vector>

namespace nuq::io {

// Throws nuq::Error naming `path` and the reason (errno's text, "is a directory", ...).
void require_input_file(const std::string& path);

// Throws nuq::Error when `path` is empty, names something other than a regular file, or is the
// same file (device and inode) as one of `inputs`. `option` names the option in the message.
void require_output_path(const std::string& path, const std::vector<std::string>& inputs = {},
                         const std::string& option = "output");

// Creates `path` and its parents as folders; throws nuq::Error naming `option` and the reason.
void make_folder(const std::string& path, const std::string& option);
// The folder an output of several files goes in: made if it is not there, as a file would be, in
// a folder that is (a typo in -o is an error, not a new tree of folders); throws nuq::Error naming
// the path and the reason. Returns whether this call made it (of two runs that make one folder at
// once, one did: only it may remove the folder again).
bool make_output_folder(const std::string& path, const std::string& option);

}  // namespace nuq::io
