// SPDX-License-Identifier: MIT
#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/printable.h"
#include "io/input_file.h"

namespace kvq {

StatusOr<std::unique_ptr<MappedFile>> MappedFile::open(const std::string& path) {
  // The type is checked before opening: open() on a FIFO blocks until a writer appears.
  KVQ_RETURN_IF_ERROR(check_input_file(path, ""));
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return not_found("no such file: " + printable(path));
    return data_loss("cannot open " + printable(path) + ": " + std::strerror(err));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return data_loss("cannot stat " + printable(path) + ": " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return invalid_argument(printable(path) + " is " + file_kind_name(st.st_mode) + ", not a regular file");
  }
  std::unique_ptr<MappedFile> f(new MappedFile());
  f->path_ = path;
  f->size_ = size_t(st.st_size);
  if (f->size_ > 0) {
    void* p = mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return data_loss("cannot map " + printable(path) + ": " + std::strerror(err));
    }
    f->data_ = static_cast<const uint8_t*>(p);
    f->owns_mapping_ = true;
  }
  ::close(fd);
  return f;
}

std::unique_ptr<MappedFile> MappedFile::from_memory(std::span<const uint8_t> bytes,
                                                    std::string name) {
  std::unique_ptr<MappedFile> f(new MappedFile());
  f->data_ = bytes.data();
  f->size_ = bytes.size();
  f->path_ = std::move(name);
  return f;
}

MappedFile::~MappedFile() {
  if (owns_mapping_) munmap(const_cast<uint8_t*>(data_), size_);
}

void MappedFile::page_in() const {
  if (size_ == 0) return;
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  if (owns_mapping_) (void)madvise(const_cast<uint8_t*>(data_), size_, MADV_WILLNEED);
  volatile uint8_t sink = 0;
  for (size_t i = 0; i < size_; i += page) sink = sink + data_[i];
  sink = sink + data_[size_ - 1];
}

}  // namespace kvq
