// SPDX-License-Identifier: MIT
// Bounded byte streams for binary files that hold in-memory state (session files,
// engine/session.h). ByteWriter buffers and hands full buffers to a sink (a file descriptor,
// or memory); its first error sticks, so writers of many fields check once at the end.
// ByteReader reads from a span: every read is bounds-checked, and counts read from the file are
// checked against a caller's bound before anything is allocated for them. Little-endian
// (the byte order of every machine kvq builds for).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "kvq/status.h"

namespace kvq {

class ByteWriter {
 public:
  using Sink = std::function<Status(const void* data, size_t n)>;
  explicit ByteWriter(Sink sink, size_t buffer_bytes = size_t(1) << 20) : sink_(std::move(sink)), cap_(buffer_bytes) {}
  // Appends to *out (tests, fuzzing seeds).
  static ByteWriter to_string(std::string* out);
  // Writes through fd; what names the file in errors.
  static ByteWriter to_fd(int fd, const std::string& what);

  void write(const void* data, size_t n);
  template <typename T>
  void put(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    write(&v, sizeof v);
  }
  // Flushes what is buffered; the first error of any write or flush.
  Status finish();
  // Bytes written so far (buffered ones included).
  uint64_t bytes() const { return total_; }

 private:
  Sink sink_;
  size_t cap_;
  std::string buf_;
  uint64_t total_ = 0;
  Status status_;
};

class ByteReader {
 public:
  // name: the file, for messages.
  ByteReader(std::span<const uint8_t> bytes, std::string name) : b_(bytes), name_(std::move(name)) {}

  size_t offset() const { return off_; }
  size_t left() const { return b_.size() - off_; }
  const std::string& name() const { return name_; }
  // The next n bytes in place (valid while the span is), advancing. kDataLoss naming what when
  // fewer are left.
  StatusOr<std::span<const uint8_t>> take(size_t n, std::string_view what);
  Status read(void* dst, size_t n, std::string_view what);
  template <typename T>
  Status get(T* v, std::string_view what) {
    static_assert(std::is_trivially_copyable_v<T>);
    return read(v, sizeof *v, what);
  }
  // A uint64 count that must lie in [lo, hi] (checked before the caller allocates for it).
  StatusOr<uint64_t> count(uint64_t lo, uint64_t hi, std::string_view what);
  // kDataLoss "NAME is corrupt: MESSAGE (at byte OFFSET)".
  Status corrupt(std::string_view message) const;

 private:
  std::span<const uint8_t> b_;
  std::string name_;
  size_t off_ = 0;
};

}  // namespace kvq
