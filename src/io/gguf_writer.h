// SPDX-License-Identifier: MIT
// Minimal GGUF v3 writer: metadata and tensors into a byte buffer. Used for calibration files,
// tests and fuzz seeds. Tensors too big to hold are declared instead and their data streamed
// by GgufStream (io/gguf_stream.h) after serialize_header().
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/gguf.h"
#include "io/output_file.h"
#include "kvq/status.h"

namespace kvq {

class GgufWriter {
 public:
  void add_u32(std::string_view key, uint32_t v);
  void add_i32(std::string_view key, int32_t v);
  void add_u64(std::string_view key, uint64_t v);
  void add_f32(std::string_view key, float v);
  void add_bool(std::string_view key, bool v);
  void add_string(std::string_view key, std::string_view v);
  void add_f32_array(std::string_view key, std::span<const float> v);
  void add_i32_array(std::string_view key, std::span<const int32_t> v);
  void add_string_array(std::string_view key, std::span<const std::string> v);
  // Copies a value read by GgufFile, whatever its type (e.g. tokenizer metadata between files).
  void add_value(std::string_view key, const GgufValue& v);
  // ne in ggml order (ne[0] innermost); data is copied.
  void add_tensor(std::string_view name, std::span<const uint64_t> ne, uint32_t ggml_type,
                  std::span<const uint8_t> data);
  // Declares a tensor whose data is not held here but streamed later in declaration order;
  // kInvalidArgument when ne[0] is not a whole number of the type's blocks.
  Status declare_tensor(std::string_view name, std::span<const uint64_t> ne, uint32_t ggml_type);

  // Needs every tensor's data (none declared-only).
  std::vector<uint8_t> serialize(uint32_t alignment = 32) const;
  // Everything before the first tensor's data, padded to the alignment.
  std::vector<uint8_t> serialize_header(uint32_t alignment = 32) const;
  // Data bytes of each tensor in order, before padding.
  std::vector<uint64_t> tensor_bytes() const;
  // Writes through an OutputFile (io/output_file.h): atomically for a regular file, so a
  // failure never leaves a partial file behind; directly for a device or FIFO.
  Status write_to(OutputFile& out) const;
  // The same for a path checked now (no other files to compare against).
  Status write_file(const std::string& path) const;

 private:
  void put_key(std::string_view key, GgufType type);
  std::vector<uint8_t> kv_bytes_;
  uint64_t n_kv_ = 0;
  struct Tensor {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t type;
    uint64_t n_bytes;
    std::vector<uint8_t> data;  // empty for a declared tensor
  };
  std::vector<Tensor> tensors_;
};

}  // namespace kvq
