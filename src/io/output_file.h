// SPDX-License-Identifier: MIT
// The one way kvq writes an output file (--json, --plot, --save-logits, calibrate -o).
// prepare() checks the path before any computation; write() then
//  - writes a regular file (or a path that does not exist yet) atomically: a temporary file in
//    the same directory, renamed over the path only when complete, removed on any failure;
//  - writes a character device or a FIFO directly, through the descriptor opened by prepare()
//    (renaming over /dev/null would replace the device with a regular file);
//  - refuses a directory, a block device or a socket.
// An output that is the same file as one of the command's other files (an input, or another
// output) is an error: compared by device and inode when it exists, and by canonical path.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "kvq/status.h"

namespace kvq {

// A file the command reads or writes, with the flag that named it (for messages).
struct NamedPath {
  std::string flag;
  std::string path;
};

class OutputFile {
 public:
  // Errors (kInvalidArgument unless said): empty path; a directory or other non-writable type;
  // a missing directory (kNotFound) or one where no file can be created (probed by creating and
  // removing a temporary file); a FIFO without a reader; a path that is one of others.
  static StatusOr<OutputFile> prepare(const std::string& path, std::string_view flag,
                                      std::span<const NamedPath> others = {});
  OutputFile(OutputFile&& o) noexcept;
  OutputFile& operator=(OutputFile&& o) noexcept;
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  ~OutputFile();

  // Runs body with a descriptor open for writing and commits what it wrote; a body error (or a
  // failed write, close or rename) leaves no file behind and an existing file untouched.
  // May be called once.
  Status write(const std::function<Status(int fd)>& body);
  Status write(std::string_view bytes);

  const std::string& path() const { return path_; }
  const std::string& flag() const { return flag_; }
  // True for a character device or FIFO, written in place.
  bool direct() const { return fd_ >= 0; }

 private:
  OutputFile() = default;
  std::string path_, flag_;
  std::string target_;  // the regular file to replace (symbolic links resolved)
  int fd_ = -1;         // device or FIFO opened by prepare()
  bool written_ = false;
};

// Writes all n bytes to fd (retrying short writes and EINTR); what names the file in errors.
Status write_all(int fd, const void* data, size_t n, const std::string& what);

}  // namespace kvq
