// SPDX-License-Identifier: MIT
#include "io/byte_stream.h"

#include "base/printable.h"
#include "io/output_file.h"

namespace kvq {

ByteWriter ByteWriter::to_string(std::string* out) {
  return ByteWriter([out](const void* p, size_t n) {
    out->append(static_cast<const char*>(p), n);
    return ok_status();
  });
}

ByteWriter ByteWriter::to_fd(int fd, const std::string& what) {
  return ByteWriter([fd, what](const void* p, size_t n) { return write_all(fd, p, n, what); });
}

void ByteWriter::write(const void* data, size_t n) {
  total_ += n;
  if (!status_.ok() || n == 0) return;
  if (buf_.size() + n <= cap_) {
    buf_.append(static_cast<const char*>(data), n);
    return;
  }
  status_ = finish();
  // Large pieces (whole pages) go straight to the sink.
  if (status_.ok()) {
    if (n >= cap_) {
      status_ = sink_(data, n);
    } else {
      buf_.append(static_cast<const char*>(data), n);
    }
  }
}

Status ByteWriter::finish() {
  if (status_.ok() && !buf_.empty()) status_ = sink_(buf_.data(), buf_.size());
  buf_.clear();
  return status_;
}

StatusOr<std::span<const uint8_t>> ByteReader::take(size_t n, std::string_view what) {
  if (n > left()) {
    return data_loss(printable(name_) + " is truncated: " + std::string(what) + " needs " + std::to_string(n) +
                     " bytes at byte " + std::to_string(off_) + ", " + std::to_string(left()) + " left");
  }
  const auto s = b_.subspan(off_, n);
  off_ += n;
  return s;
}

Status ByteReader::read(void* dst, size_t n, std::string_view what) {
  KVQ_ASSIGN_OR_RETURN(auto s, take(n, what));
  if (n) std::memcpy(dst, s.data(), n);
  return ok_status();
}

StatusOr<uint64_t> ByteReader::count(uint64_t lo, uint64_t hi, std::string_view what) {
  uint64_t v = 0;
  KVQ_RETURN_IF_ERROR(get(&v, what));
  if (v < lo || v > hi) {
    return corrupt(std::string(what) + " is " + std::to_string(v) + ", outside [" + std::to_string(lo) + ", " +
                   std::to_string(hi) + "]");
  }
  return v;
}

Status ByteReader::corrupt(std::string_view message) const {
  return data_loss(printable(name_) + " is corrupt: " + std::string(message) + " (at byte " + std::to_string(off_) + ")");
}

}  // namespace kvq
