// SPDX-License-Identifier: MIT
#include "io/output_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "base/printable.h"
#include "io/input_file.h"

namespace kvq {

namespace {

namespace fs = std::filesystem;

std::string named(std::string_view flag, const std::string& path) {
  return std::string(flag) + " " + printable(path);
}

// A temporary name beside base: pid, the clock and the attempt number; a collision (O_EXCL)
// is retried by the caller with the next attempt.
std::string temp_name(const std::string& base, int attempt) {
  const auto ns = std::chrono::steady_clock::now().time_since_epoch().count();
  return base + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(ns) + "." + std::to_string(attempt);
}

// Creates target's temporary sibling; returns its descriptor and name.
StatusOr<int> create_temp(const std::string& target, mode_t mode, std::string* tmp_out,
                          std::string_view flag) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    const std::string tmp = temp_name(target, attempt);
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd >= 0) {
      *tmp_out = tmp;
      return fd;
    }
    if (errno == EEXIST) continue;
    const int err = errno;
    if (err == ENOENT) {
      // ENOENT also comes from directories that exist but take no new files (/proc).
      const fs::path dir = fs::path(target).parent_path();
      std::error_code ec;
      if (!fs::is_directory(dir.empty() ? fs::path(".") : dir, ec)) {
        return not_found("cannot write " + named(flag, target) + ": its directory does not exist");
      }
      return invalid_argument("cannot write " + named(flag, target) + ": files cannot be created in its directory");
    }
    return invalid_argument("cannot write " + named(flag, target) + ": " + std::strerror(err));
  }
  return internal_error("cannot find a free temporary name for " + printable(target));
}

// Same file: same device and inode when both exist, else the same canonical path.
bool same_file(const std::string& a, const std::string& b) {
  struct stat sa {}, sb {};
  const bool ea = ::stat(a.c_str(), &sa) == 0, eb = ::stat(b.c_str(), &sb) == 0;
  if (ea && eb) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
  std::error_code e1, e2;
  const fs::path ca = fs::weakly_canonical(a, e1), cb = fs::weakly_canonical(b, e2);
  return !e1 && !e2 && ca == cb;
}

}  // namespace

Status write_all(int fd, const void* data, size_t n, const std::string& what) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return data_loss("writing " + printable(what) + " failed: " + std::strerror(errno));
    p += w;
    n -= size_t(w);
  }
  return ok_status();
}

StatusOr<OutputFile> OutputFile::prepare(const std::string& path, std::string_view flag,
                                         std::span<const NamedPath> others) {
  if (path.empty()) return invalid_argument(std::string(flag) + " needs a file name, got ''");
  OutputFile out;
  out.path_ = path;
  out.flag_ = std::string(flag);
  struct stat st {};
  const bool exists = ::stat(path.c_str(), &st) == 0;
  if (!exists && errno != ENOENT) {
    return invalid_argument("cannot write " + named(flag, path) + ": " + std::strerror(errno));
  }
  if (exists && (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode))) {
    // Opened now, so a FIFO without a reader fails here (ENXIO) instead of blocking later.
    const int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      if (err == ENXIO) return invalid_argument(named(flag, path) + " is a FIFO with no reader");
      return invalid_argument("cannot write " + named(flag, path) + ": " + std::strerror(err));
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    out.fd_ = fd;
    return out;
  }
  if (exists && !S_ISREG(st.st_mode)) {
    return invalid_argument("cannot write " + named(flag, path) + ": it is " + file_kind_name(st.st_mode));
  }
  for (const NamedPath& o : others) {
    if (!o.path.empty() && same_file(path, o.path)) {
      return invalid_argument(named(flag, path) + " is the same file as " + named(o.flag, o.path) +
                              ": refusing to overwrite it");
    }
  }
  // Replace the file a symbolic link points to, not the link.
  std::error_code ec;
  out.target_ = exists ? fs::canonical(path, ec).string() : path;
  if (ec) out.target_ = path;
  // Probe the directory by creating (and removing) the temporary file the write will use.
  std::string probe;
  KVQ_ASSIGN_OR_RETURN(int fd, create_temp(out.target_, 0600, &probe, flag));
  ::close(fd);
  ::unlink(probe.c_str());
  return out;
}

OutputFile::OutputFile(OutputFile&& o) noexcept
    : path_(std::move(o.path_)), flag_(std::move(o.flag_)), target_(std::move(o.target_)),
      fd_(o.fd_), written_(o.written_) {
  o.fd_ = -1;
}

OutputFile& OutputFile::operator=(OutputFile&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(o.path_);
    flag_ = std::move(o.flag_);
    target_ = std::move(o.target_);
    fd_ = o.fd_;
    written_ = o.written_;
    o.fd_ = -1;
  }
  return *this;
}

OutputFile::~OutputFile() {
  if (fd_ >= 0) ::close(fd_);
}

Status OutputFile::write(std::string_view bytes) {
  return write([&](int fd) { return write_all(fd, bytes.data(), bytes.size(), path_); });
}

Status OutputFile::write(const std::function<Status(int fd)>& body) {
  if (written_) return internal_error(named(flag_, path_) + " written twice");
  written_ = true;
  if (fd_ >= 0) {
    Status s = body(fd_);
    const bool closed = ::close(fd_) == 0;
    fd_ = -1;
    if (s.ok() && !closed) s = data_loss("writing " + named(flag_, path_) + " failed: " + std::strerror(errno));
    return s;
  }
  // Keep the permissions of a file being replaced; new files get 0666 less the umask.
  struct stat st {};
  const bool existed = ::stat(target_.c_str(), &st) == 0;
  if (existed && !S_ISREG(st.st_mode)) {
    return invalid_argument("cannot write " + named(flag_, path_) + ": it is now " + file_kind_name(st.st_mode));
  }
  std::string tmp;
  KVQ_ASSIGN_OR_RETURN(int fd, create_temp(target_, 0666, &tmp, flag_));
  if (existed) ::fchmod(fd, st.st_mode & 07777);
  Status s = body(fd);
  if (::close(fd) != 0 && s.ok()) s = data_loss("writing " + named(flag_, path_) + " failed: " + std::strerror(errno));
  if (s.ok() && ::rename(tmp.c_str(), target_.c_str()) != 0) {
    s = data_loss("cannot write " + named(flag_, path_) + ": " + std::strerror(errno));
  }
  if (!s.ok()) ::unlink(tmp.c_str());
  return s;
}

}  // namespace kvq
