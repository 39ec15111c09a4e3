// SPDX-License-Identifier: MIT
// Writes a GGUF file larger than memory: the header comes from a GgufWriter whose tensors were
// declared (GgufWriter::declare_tensor), then append() takes each tensor's bytes in declaration
// order, in pieces of any size, and pads between tensors. Bytes go to a temporary file beside
// the target (same directory, so the final rename is atomic and never crosses filesystems);
// commit() renames it into place and destroying an uncommitted stream removes it, so a failure
// or an early return never leaves a partial file behind.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "io/gguf_writer.h"
#include "kvq/status.h"

namespace kvq {

class GgufStream {
 public:
  static StatusOr<std::unique_ptr<GgufStream>> create(const GgufWriter& header, const std::string& path,
                                                      uint32_t alignment = 32);
  ~GgufStream();
  GgufStream(const GgufStream&) = delete;
  GgufStream& operator=(const GgufStream&) = delete;

  // kInvalidArgument when the bytes run past the declared tensors; kDataLoss on a write error.
  Status append(std::span<const uint8_t> bytes);
  // kInvalidArgument unless every declared byte was appended.
  Status commit();

  uint64_t total_bytes() const { return total_; }    // the whole file
  uint64_t written_bytes() const { return written_; }
  const std::string& temp_path() const { return tmp_; }

 private:
  GgufStream() = default;
  Status write_raw(const void* p, size_t n);
  Status finish_tensors();  // pads and moves past tensors that are complete

  FILE* f_ = nullptr;
  std::string path_, tmp_;
  uint32_t alignment_ = 32;
  std::vector<uint64_t> sizes_;
  size_t tensor_ = 0;      // tensor being written
  uint64_t in_tensor_ = 0; // its bytes written so far
  uint64_t total_ = 0, written_ = 0;
  bool committed_ = false;
};

}  // namespace kvq
