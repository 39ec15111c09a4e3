// SPDX-License-Identifier: MIT
// Read-only memory-mapped file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "kvq/status.h"

namespace kvq {

class MappedFile {
 public:
  // Maps the whole file read-only. Errors: kNotFound (missing), kInvalidArgument (a directory),
  // kDataLoss (unreadable).
  static StatusOr<std::unique_ptr<MappedFile>> open(const std::string& path);
  // Wraps a caller-owned buffer (tests, fuzzing); the buffer must outlive this object.
  static std::unique_ptr<MappedFile> from_memory(std::span<const uint8_t> bytes,
                                                 std::string name = "<memory>");
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }
  // Reads one byte of every page, so the whole file is resident (in the page cache and this
  // process's RSS) before a measurement that must not count its page-in.
  void page_in() const;

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool owns_mapping_ = false;
  std::string path_;
};

}  // namespace kvq
