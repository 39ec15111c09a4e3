// SPDX-License-Identifier: MIT
// Input files are regular files. A FIFO would block the reader forever, a directory reads as an
// empty text and a device never ends, so each is refused by its type, found with stat() before
// anything is opened.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "kvq/status.h"

namespace kvq {

// "a directory", "a FIFO", "a character device", ... for the S_IFMT bits of mode.
const char* file_kind_name(mode_t mode);

// what names the input in messages ("text file (-f)", "model (-m)"; may be empty). Errors: kNotFound when
// path does not exist, kInvalidArgument when it is empty or not a regular file (saying what it
// is), kDataLoss when it cannot be examined.
Status check_input_file(const std::string& path, std::string_view what);

// The whole file, after check_input_file. Opened with O_NONBLOCK so that a FIFO swapped in
// after the check cannot block; fstat() then confirms the opened file is regular.
StatusOr<std::string> read_input_file(const std::string& path, std::string_view what);

}  // namespace kvq
