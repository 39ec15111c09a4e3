// SPDX-License-Identifier: MIT
// GGUF reader (versions 2 and 3). The file is memory-mapped; metadata and tensor infos are
// parsed eagerly with every count, size and offset bounds-checked against the file, so a
// truncated or corrupt file is a kDataLoss error and never a read outside the mapping.
// Spec: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/mapped_file.h"
#include "kvq/status.h"

namespace kvq {

enum class GgufType : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

// Bytes of one value of a fixed-size type; 0 for strings, arrays and unknown types.
size_t gguf_scalar_bytes(GgufType t);
const char* gguf_type_name(GgufType t);

// ggml tensor element types (ids as stored in GGUF). model/weight_format.h lists the ones kvq
// computes with; the others are named so that errors can say what the file holds.
enum class GgmlType : uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8, kQ8_1 = 9,
  kQ2_K = 10, kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kQ8_K = 15, kIQ2_XXS = 16,
  kIQ2_XS = 17, kIQ3_XXS = 18, kIQ1_S = 19, kIQ4_NL = 20, kIQ3_S = 21, kIQ2_S = 22,
  kIQ4_XS = 23, kI8 = 24, kI16 = 25, kI32 = 26, kI64 = 27, kF64 = 28, kIQ1_M = 29, kBF16 = 30,
  kTQ1_0 = 34, kTQ2_0 = 35,
};
// "F32", "Q4_K", ... or "type#N" for an unknown id.
std::string ggml_type_name(uint32_t type);
// Elements per block and bytes per block; {0, 0} for unknown types.
struct GgmlBlockInfo {
  uint32_t block_elems;
  uint32_t block_bytes;
};
GgmlBlockInfo ggml_block_info(uint32_t type);

// One metadata value. Scalars are widened into u64/i64/f64; arrays of fixed-size scalars keep a
// pointer into the mapping; arrays of strings and nested arrays are parsed into vectors.
struct GgufValue {
  GgufType type = GgufType::kU8;
  uint64_t u64 = 0;  // unsigned ints and bool
  int64_t i64 = 0;   // signed ints
  double f64 = 0;    // floats
  std::string_view str;
  // Arrays.
  GgufType elem_type = GgufType::kU8;
  uint64_t n_elems = 0;
  const uint8_t* elem_data = nullptr;      // fixed-size scalar elements, little-endian
  std::vector<std::string_view> strings;   // elem_type == kString
  std::vector<GgufValue> arrays;           // elem_type == kArray
};

struct GgufKv {
  std::string_view key;
  GgufValue value;
};

struct GgufTensorInfo {
  std::string_view name;
  std::vector<uint64_t> ne;  // ggml order: ne[0] is the innermost (contiguous) dimension
  uint32_t type = 0;
  uint64_t offset = 0;       // relative to the data section
  uint64_t n_elems = 0;
  uint64_t n_bytes = 0;
  const uint8_t* data = nullptr;
  // Shape outermost-first, as the rest of kvq writes shapes: [ne[n-1], ..., ne[0]].
  std::vector<uint64_t> shape() const { return {ne.rbegin(), ne.rend()}; }
};

class GgufFile {
 public:
  static StatusOr<std::unique_ptr<GgufFile>> open(const std::string& path);
  // Parses bytes the caller keeps alive (fuzzing, tests).
  static StatusOr<std::unique_ptr<GgufFile>> parse(std::unique_ptr<MappedFile> file);

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::string& path() const { return file_->path(); }
  // Makes every byte of the file resident (MappedFile::page_in).
  void page_in() const { file_->page_in(); }
  const std::vector<GgufKv>& kvs() const { return kvs_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }

  const GgufValue* find(std::string_view key) const;
  const GgufTensorInfo* find_tensor(std::string_view name) const;

  // Typed getters: kNotFound if missing, kInvalidArgument if the type does not convert.
  StatusOr<uint64_t> get_u64(std::string_view key) const;
  StatusOr<int64_t> get_i64(std::string_view key) const;
  StatusOr<double> get_f64(std::string_view key) const;
  StatusOr<bool> get_bool(std::string_view key) const;
  StatusOr<std::string> get_string(std::string_view key) const;
  StatusOr<std::vector<std::string_view>> get_string_array(std::string_view key) const;
  StatusOr<std::vector<float>> get_f32_array(std::string_view key) const;
  StatusOr<std::vector<int32_t>> get_i32_array(std::string_view key) const;

 private:
  GgufFile() = default;
  std::unique_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::vector<GgufKv> kvs_;
  std::vector<GgufTensorInfo> tensors_;
};

// FNV-1a over every tensor's name, type, shape and offset: identifies a model's weights
// layout (calibration files are bound to it).
uint64_t gguf_tensor_table_hash(const GgufFile& file);
// The tensor table hash mixed with sampled tensor data (up to 4 KiB at the start, middle and
// end of every tensor): tells apart models with the same shapes and names (a fine-tune) at a
// cost independent of the model size.
uint64_t gguf_content_hash(const GgufFile& file);

// Renders a value for `kvq info` (arrays abbreviated after `max_elems`).
std::string gguf_value_to_string(const GgufValue& v, size_t max_elems = 8);

}  // namespace kvq
