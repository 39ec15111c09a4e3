// SPDX-License-Identifier: MIT
#include "io/gguf_stream.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace kvq {

namespace {
uint64_t align_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }
}  // namespace

StatusOr<std::unique_ptr<GgufStream>> GgufStream::create(const GgufWriter& header, const std::string& path,
                                                         uint32_t alignment) {
  std::unique_ptr<GgufStream> s(new GgufStream());
  s->path_ = path;
  s->alignment_ = alignment;
  s->sizes_ = header.tensor_bytes();
  // A unique name, so that two writers of the same target never share a temporary file.
  std::string tmpl = path + ".tmp.XXXXXX";
  const int fd = mkstemp(tmpl.data());
  if (fd < 0) return invalid_argument("cannot create a temporary file beside " + path + ": " + std::strerror(errno));
  s->tmp_ = tmpl;
  fchmod(fd, 0644);  // mkstemp's 0600 would make the renamed model private
  s->f_ = fdopen(fd, "wb");
  if (!s->f_) {
    close(fd);
    return data_loss("cannot open " + s->tmp_ + ": " + std::strerror(errno));
  }
  const std::vector<uint8_t> head = header.serialize_header(alignment);
  s->total_ = head.size();
  for (uint64_t b : s->sizes_) s->total_ += align_up(b, alignment);
  KVQ_RETURN_IF_ERROR(s->write_raw(head.data(), head.size()));
  KVQ_RETURN_IF_ERROR(s->finish_tensors());  // zero-byte tensors at the front
  return s;
}

GgufStream::~GgufStream() {
  if (f_) std::fclose(f_);
  if (!committed_ && !tmp_.empty()) std::remove(tmp_.c_str());
}

Status GgufStream::write_raw(const void* p, size_t n) {
  if (n && std::fwrite(p, 1, n, f_) != n) {
    return data_loss("writing " + tmp_ + " failed: " + std::strerror(errno));
  }
  written_ += n;
  return ok_status();
}

Status GgufStream::finish_tensors() {
  static constexpr uint8_t kZeros[64] = {};
  while (tensor_ < sizes_.size() && in_tensor_ == sizes_[tensor_]) {
    const uint64_t pad = align_up(in_tensor_, alignment_) - in_tensor_;
    for (uint64_t left = pad; left > 0;) {
      const size_t n = size_t(std::min<uint64_t>(left, sizeof kZeros));
      KVQ_RETURN_IF_ERROR(write_raw(kZeros, n));
      left -= n;
    }
    ++tensor_;
    in_tensor_ = 0;
  }
  return ok_status();
}

Status GgufStream::append(std::span<const uint8_t> bytes) {
  while (!bytes.empty()) {
    if (tensor_ >= sizes_.size()) return invalid_argument("GgufStream: more data than the declared tensors hold");
    const size_t n = size_t(std::min<uint64_t>(bytes.size(), sizes_[tensor_] - in_tensor_));
    KVQ_RETURN_IF_ERROR(write_raw(bytes.data(), n));
    in_tensor_ += n;
    bytes = bytes.subspan(n);
    KVQ_RETURN_IF_ERROR(finish_tensors());
  }
  return ok_status();
}

Status GgufStream::commit() {
  if (tensor_ != sizes_.size()) {
    return invalid_argument("GgufStream: tensor " + std::to_string(tensor_) + " of " + std::to_string(sizes_.size()) +
                            " is incomplete");
  }
  FILE* f = f_;
  f_ = nullptr;
  if (std::fclose(f) != 0) return data_loss("closing " + tmp_ + " failed: " + std::strerror(errno));
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    return data_loss("cannot rename " + tmp_ + " to " + path_ + ": " + std::strerror(errno));
  }
  committed_ = true;
  return ok_status();
}

}  // namespace kvq
