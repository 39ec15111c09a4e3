// SPDX-License-Identifier: MIT
#include "io/input_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/printable.h"

namespace kvq {

const char* file_kind_name(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return "a regular file";
    case S_IFDIR: return "a directory";
    case S_IFIFO: return "a FIFO";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    case S_IFSOCK: return "a socket";
    case S_IFLNK: return "a symbolic link";
  }
  return "a special file";
}

namespace {
std::string named(const std::string& path, std::string_view what) {
  return (what.empty() ? std::string() : std::string(what) + " ") + printable(path);
}
}  // namespace

Status check_input_file(const std::string& path, std::string_view what) {
  if (path.empty()) return invalid_argument(std::string(what) + " needs a file name, got ''");
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) return not_found("cannot open " + named(path, what) + ": no such file");
    return data_loss("cannot open " + named(path, what) + ": " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    return invalid_argument(named(path, what) + " is " + file_kind_name(st.st_mode) +
                            ", not a regular file");
  }
  return ok_status();
}

StatusOr<std::string> read_input_file(const std::string& path, std::string_view what) {
  KVQ_RETURN_IF_ERROR(check_input_file(path, what));
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return data_loss("cannot open " + named(path, what) + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return invalid_argument(named(path, what) + " is not a regular file");
  }
  std::string out;
  out.reserve(size_t(st.st_size));
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return data_loss("error reading " + named(path, what) + ": " + std::strerror(err));
    }
    if (n == 0) break;
    out.append(buf, size_t(n));
  }
  ::close(fd);
  return out;
}

}  // namespace kvq
