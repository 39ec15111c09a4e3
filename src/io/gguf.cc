// SPDX-License-Identifier: MIT
#include "io/gguf.h"

#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <limits>
#include <unordered_set>

#include "base/printable.h"

namespace kvq {

size_t gguf_scalar_bytes(GgufType t) {
  switch (t) {
    case GgufType::kU8: case GgufType::kI8: case GgufType::kBool: return 1;
    case GgufType::kU16: case GgufType::kI16: return 2;
    case GgufType::kU32: case GgufType::kI32: case GgufType::kF32: return 4;
    case GgufType::kU64: case GgufType::kI64: case GgufType::kF64: return 8;
    default: return 0;
  }
}

namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" little-endian
constexpr int kMaxArrayDepth = 8;
constexpr uint32_t kMaxDims = 4;

// Bounds-checked little-endian reader over the mapping.
class Cursor {
 public:
  explicit Cursor(std::span<const uint8_t> b) : b_(b) {}
  size_t pos() const { return pos_; }
  size_t remaining() const { return b_.size() - pos_; }
  const uint8_t* here() const { return b_.data() + pos_; }

  template <typename T>
  Status read(T* out, const char* what) {
    if (remaining() < sizeof(T)) return truncated(what);
    std::memcpy(out, here(), sizeof(T));
    pos_ += sizeof(T);
    return ok_status();
  }
  Status skip(uint64_t n, const char* what) {
    if (remaining() < n) return truncated(what);
    pos_ += size_t(n);
    return ok_status();
  }
  Status read_string(std::string_view* out, const char* what) {
    uint64_t len = 0;
    KVQ_RETURN_IF_ERROR(read(&len, what));
    if (len > remaining()) return truncated(what);
    *out = std::string_view(reinterpret_cast<const char*>(here()), size_t(len));
    pos_ += size_t(len);
    return ok_status();
  }
  Status truncated(const char* what) const {
    return data_loss("file is truncated or corrupt: reading " + std::string(what) +
                     " at byte " + std::to_string(pos_) + " of " + std::to_string(b_.size()));
  }

 private:
  std::span<const uint8_t> b_;
  size_t pos_ = 0;
};


bool valid_type(uint32_t t) { return t <= uint32_t(GgufType::kF64); }

// Reads one scalar element at p (of a known-valid fixed-size type) into v.
void decode_scalar(GgufType t, const uint8_t* p, GgufValue* v) {
  v->type = t;
  switch (t) {
    case GgufType::kU8: v->u64 = p[0]; break;
    case GgufType::kBool: v->u64 = p[0] != 0; break;
    case GgufType::kI8: v->i64 = int8_t(p[0]); break;
    case GgufType::kU16: { uint16_t x; std::memcpy(&x, p, 2); v->u64 = x; break; }
    case GgufType::kI16: { int16_t x; std::memcpy(&x, p, 2); v->i64 = x; break; }
    case GgufType::kU32: { uint32_t x; std::memcpy(&x, p, 4); v->u64 = x; break; }
    case GgufType::kI32: { int32_t x; std::memcpy(&x, p, 4); v->i64 = x; break; }
    case GgufType::kF32: { float x; std::memcpy(&x, p, 4); v->f64 = x; break; }
    case GgufType::kU64: { uint64_t x; std::memcpy(&x, p, 8); v->u64 = x; break; }
    case GgufType::kI64: { int64_t x; std::memcpy(&x, p, 8); v->i64 = x; break; }
    case GgufType::kF64: { double x; std::memcpy(&x, p, 8); v->f64 = x; break; }
    default: break;
  }
}

Status read_value(Cursor& c, GgufType type, int depth, GgufValue* v) {
  v->type = type;
  if (const size_t sz = gguf_scalar_bytes(type)) {
    if (c.remaining() < sz) return c.truncated("metadata value");
    decode_scalar(type, c.here(), v);
    return c.skip(sz, "metadata value");
  }
  if (type == GgufType::kString) return c.read_string(&v->str, "metadata string");
  if (type != GgufType::kArray) {
    return data_loss("corrupt metadata: unknown value type " + std::to_string(uint32_t(type)));
  }
  if (depth >= kMaxArrayDepth) return data_loss("corrupt metadata: arrays nested too deeply");
  uint32_t et = 0;
  KVQ_RETURN_IF_ERROR(c.read(&et, "array element type"));
  if (!valid_type(et)) {
    return data_loss("corrupt metadata: unknown array element type " + std::to_string(et));
  }
  v->elem_type = GgufType(et);
  KVQ_RETURN_IF_ERROR(c.read(&v->n_elems, "array length"));
  if (const size_t sz = gguf_scalar_bytes(v->elem_type)) {
    if (v->n_elems > c.remaining() / sz) return c.truncated("array data");
    v->elem_data = c.here();
    return c.skip(v->n_elems * sz, "array data");
  }
  // Strings take >= 8 bytes and arrays >= 12: a count the file cannot hold is corrupt, and
  // checking it first keeps a hostile count from reserving gigabytes.
  const uint64_t min_size = v->elem_type == GgufType::kString ? 8 : 12;
  if (v->n_elems > c.remaining() / min_size) return c.truncated("array elements");
  if (v->elem_type == GgufType::kString) {
    v->strings.resize(size_t(v->n_elems));
    for (auto& s : v->strings) KVQ_RETURN_IF_ERROR(c.read_string(&s, "array string"));
    return ok_status();
  }
  // GGUF spec: an array of arrays holds each element as an array value without a type tag of
  // its own (the outer element type says it is an array): element type, count, elements.
  v->arrays.resize(size_t(v->n_elems));
  for (auto& a : v->arrays) KVQ_RETURN_IF_ERROR(read_value(c, GgufType::kArray, depth + 1, &a));
  return ok_status();
}

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

}  // namespace

const char* gguf_type_name(GgufType t) {
  static constexpr const char* kNames[] = {"u8",  "i8",     "u16",   "i16", "u32",
                                           "i32", "f32",    "bool",  "string", "array",
                                           "u64", "i64",    "f64"};
  const auto i = uint32_t(t);
  return i < std::size(kNames) ? kNames[i] : "unknown";
}

std::string ggml_type_name(uint32_t type) {
  switch (GgmlType(type)) {
    case GgmlType::kF32: return "F32";
    case GgmlType::kF16: return "F16";
    case GgmlType::kQ4_0: return "Q4_0";
    case GgmlType::kQ4_1: return "Q4_1";
    case GgmlType::kQ5_0: return "Q5_0";
    case GgmlType::kQ5_1: return "Q5_1";
    case GgmlType::kQ8_0: return "Q8_0";
    case GgmlType::kQ8_1: return "Q8_1";
    case GgmlType::kQ2_K: return "Q2_K";
    case GgmlType::kQ3_K: return "Q3_K";
    case GgmlType::kQ4_K: return "Q4_K";
    case GgmlType::kQ5_K: return "Q5_K";
    case GgmlType::kQ6_K: return "Q6_K";
    case GgmlType::kQ8_K: return "Q8_K";
    case GgmlType::kIQ2_XXS: return "IQ2_XXS";
    case GgmlType::kIQ2_XS: return "IQ2_XS";
    case GgmlType::kIQ3_XXS: return "IQ3_XXS";
    case GgmlType::kIQ1_S: return "IQ1_S";
    case GgmlType::kIQ4_NL: return "IQ4_NL";
    case GgmlType::kIQ3_S: return "IQ3_S";
    case GgmlType::kIQ2_S: return "IQ2_S";
    case GgmlType::kIQ4_XS: return "IQ4_XS";
    case GgmlType::kI8: return "I8";
    case GgmlType::kI16: return "I16";
    case GgmlType::kI32: return "I32";
    case GgmlType::kI64: return "I64";
    case GgmlType::kF64: return "F64";
    case GgmlType::kIQ1_M: return "IQ1_M";
    case GgmlType::kBF16: return "BF16";
    case GgmlType::kTQ1_0: return "TQ1_0";
    case GgmlType::kTQ2_0: return "TQ2_0";
  }
  return "type#" + std::to_string(type);
}

GgmlBlockInfo ggml_block_info(uint32_t type) {
  switch (GgmlType(type)) {
    case GgmlType::kF32: case GgmlType::kI32: return {1, 4};
    case GgmlType::kF16: case GgmlType::kBF16: case GgmlType::kI16: return {1, 2};
    case GgmlType::kI8: return {1, 1};
    case GgmlType::kI64: case GgmlType::kF64: return {1, 8};
    case GgmlType::kQ4_0: return {32, 18};
    case GgmlType::kQ4_1: return {32, 20};
    case GgmlType::kQ5_0: return {32, 22};
    case GgmlType::kQ5_1: return {32, 24};
    case GgmlType::kQ8_0: return {32, 34};
    case GgmlType::kQ8_1: return {32, 36};
    case GgmlType::kQ2_K: return {256, 84};
    case GgmlType::kQ3_K: return {256, 110};
    case GgmlType::kQ4_K: return {256, 144};
    case GgmlType::kQ5_K: return {256, 176};
    case GgmlType::kQ6_K: return {256, 210};
    case GgmlType::kQ8_K: return {256, 292};
    case GgmlType::kIQ4_NL: return {32, 18};
    case GgmlType::kIQ4_XS: return {256, 136};
    default: return {0, 0};
  }
}

StatusOr<std::unique_ptr<GgufFile>> GgufFile::open(const std::string& path) {
  KVQ_ASSIGN_OR_RETURN(auto file, MappedFile::open(path));
  auto r = parse(std::move(file));
  if (!r.ok()) return r.status().with_context(path);
  return r;
}

StatusOr<std::unique_ptr<GgufFile>> GgufFile::parse(std::unique_ptr<MappedFile> file) {
  std::unique_ptr<GgufFile> g(new GgufFile());
  g->file_ = std::move(file);
  const auto bytes = g->file_->bytes();
  Cursor c(bytes);

  uint32_t magic = 0;
  if (bytes.size() < 4) return data_loss("not a GGUF file (shorter than its 4-byte magic)");
  KVQ_RETURN_IF_ERROR(c.read(&magic, "magic"));
  if (magic != kGgufMagic) return data_loss("not a GGUF file (bad magic)");
  KVQ_RETURN_IF_ERROR(c.read(&g->version_, "version"));
  if (g->version_ != 2 && g->version_ != 3) {
    return unimplemented("GGUF version " + std::to_string(g->version_) +
                         " is not supported (only versions 2 and 3)");
  }
  uint64_t n_tensors = 0, n_kv = 0;
  KVQ_RETURN_IF_ERROR(c.read(&n_tensors, "tensor count"));
  KVQ_RETURN_IF_ERROR(c.read(&n_kv, "metadata count"));
  // Each kv takes >= 12 bytes and each tensor info >= 24: reject impossible counts up front.
  if (n_kv > c.remaining() / 12) return c.truncated("metadata (count exceeds file size)");
  if (n_tensors > c.remaining() / 24) return c.truncated("tensor infos (count exceeds file size)");

  // Duplicate keys and tensor names are refused, as llama.cpp's gguf reader does: with
  // first-wins lookups a second copy would silently hide the first (or be hidden).
  std::unordered_set<std::string_view> seen;
  g->kvs_.resize(size_t(n_kv));
  for (auto& kv : g->kvs_) {
    KVQ_RETURN_IF_ERROR(c.read_string(&kv.key, "metadata key"));
    if (!seen.insert(kv.key).second) {
      return data_loss("corrupt metadata: duplicate key '" + printable(kv.key) + "'");
    }
    uint32_t type = 0;
    KVQ_RETURN_IF_ERROR(c.read(&type, "metadata type"));
    if (!valid_type(type)) {
      return data_loss("corrupt metadata: key '" + printable(kv.key) +
                       "' has unknown type " + std::to_string(type));
    }
    KVQ_RETURN_IF_ERROR(read_value(c, GgufType(type), 0, &kv.value));
  }
  seen.clear();

  if (const GgufValue* a = g->find("general.alignment")) {
    if (a->type != GgufType::kU32 || a->u64 == 0 || (a->u64 & (a->u64 - 1)) != 0) {
      return data_loss("corrupt metadata: general.alignment must be a power-of-two u32");
    }
    g->alignment_ = a->u64;
  }

  g->tensors_.resize(size_t(n_tensors));
  for (auto& t : g->tensors_) {
    KVQ_RETURN_IF_ERROR(c.read_string(&t.name, "tensor name"));
    if (!seen.insert(t.name).second) {
      return data_loss("corrupt tensor info: duplicate tensor name '" + printable(t.name) + "'");
    }
    uint32_t n_dims = 0;
    KVQ_RETURN_IF_ERROR(c.read(&n_dims, "tensor dims"));
    if (n_dims == 0 || n_dims > kMaxDims) {
      return data_loss("corrupt tensor info: '" + printable(t.name) + "' has " +
                       std::to_string(n_dims) + " dimensions");
    }
    t.ne.resize(n_dims);
    t.n_elems = 1;
    for (auto& d : t.ne) {
      KVQ_RETURN_IF_ERROR(c.read(&d, "tensor shape"));
      if (d == 0 || mul_overflows(t.n_elems, d, &t.n_elems)) {
        return data_loss("corrupt tensor info: '" + printable(t.name) + "' has a bad shape");
      }
    }
    KVQ_RETURN_IF_ERROR(c.read(&t.type, "tensor type"));
    KVQ_RETURN_IF_ERROR(c.read(&t.offset, "tensor offset"));
    const GgmlBlockInfo bi = ggml_block_info(t.type);
    if (bi.block_elems == 0) {
      // Unknown to the size table: the loader reports the type by name if it is ever used.
      t.n_bytes = 0;
      continue;
    }
    if (t.ne[0] % bi.block_elems != 0) {
      return data_loss("corrupt tensor info: '" + printable(t.name) + "' row of " +
                       std::to_string(t.ne[0]) + " is not a multiple of the " +
                       ggml_type_name(t.type) + " block size");
    }
    if (mul_overflows(t.n_elems / bi.block_elems, bi.block_bytes, &t.n_bytes)) {
      return data_loss("corrupt tensor info: '" + printable(t.name) + "' is too large");
    }
  }

  // The data section starts at the next multiple of the alignment.
  const uint64_t data_start = (c.pos() + g->alignment_ - 1) / g->alignment_ * g->alignment_;
  if (data_start > bytes.size() && n_tensors > 0) return c.truncated("tensor data");
  for (auto& t : g->tensors_) {
    if (t.offset % g->alignment_ != 0) {
      return data_loss("corrupt tensor info: '" + printable(t.name) + "' offset " +
                       std::to_string(t.offset) + " is not aligned");
    }
    uint64_t end = 0;
    if (__builtin_add_overflow(data_start, t.offset, &end) ||
        __builtin_add_overflow(end, t.n_bytes, &end) || end > bytes.size()) {
      return data_loss("file is truncated or corrupt: tensor '" + printable(t.name) +
                       "' extends past the end of the file (" + std::to_string(bytes.size()) +
                       " bytes)");
    }
    t.data = bytes.data() + data_start + t.offset;
  }
  // Tensors may not share bytes (llama.cpp requires each to start where the previous ended,
  // padded): overlapping data would alias two weights.
  std::vector<const GgufTensorInfo*> by_offset;
  for (const auto& t : g->tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensorInfo& a = *by_offset[i - 1];
    const GgufTensorInfo& b = *by_offset[i];
    // A tensor of a type without a size table still may not start where another does.
    if (b.offset < a.offset + a.n_bytes || b.offset == a.offset) {
      return data_loss("corrupt tensor info: the data of '" + printable(a.name) + "' and '" +
                       printable(b.name) + "' overlap");
    }
  }
  return g;
}

const GgufValue* GgufFile::find(std::string_view key) const {
  for (const auto& kv : kvs_) {
    if (kv.key == key) return &kv.value;
  }
  return nullptr;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  for (const auto& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

namespace {
Status missing(std::string_view key) { return not_found("metadata key '" + printable(key) + "' is missing"); }
Status wrong_type(std::string_view key, const GgufValue& v, const char* want) {
  return invalid_argument("metadata key '" + printable(key) + "' has type " +
                          gguf_type_name(v.type) + ", expected " + want);
}
bool is_unsigned(GgufType t) {
  return t == GgufType::kU8 || t == GgufType::kU16 || t == GgufType::kU32 ||
         t == GgufType::kU64 || t == GgufType::kBool;
}
bool is_signed(GgufType t) {
  return t == GgufType::kI8 || t == GgufType::kI16 || t == GgufType::kI32 || t == GgufType::kI64;
}
}  // namespace

StatusOr<uint64_t> GgufFile::get_u64(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing(key);
  if (is_unsigned(v->type)) return v->u64;
  if (is_signed(v->type) && v->i64 >= 0) return uint64_t(v->i64);
  return wrong_type(key, *v, "a non-negative integer");
}

StatusOr<int64_t> GgufFile::get_i64(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing(key);
  if (is_signed(v->type)) return v->i64;
  if (is_unsigned(v->type) && v->u64 <= uint64_t(std::numeric_limits<int64_t>::max())) {
    return int64_t(v->u64);
  }
  return wrong_type(key, *v, "an integer");
}

StatusOr<double> GgufFile::get_f64(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing(key);
  if (v->type == GgufType::kF32 || v->type == GgufType::kF64) return v->f64;
  if (is_unsigned(v->type)) return double(v->u64);
  if (is_signed(v->type)) return double(v->i64);
  return wrong_type(key, *v, "a number");
}

StatusOr<bool> GgufFile::get_bool(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing(key);
  if (v->type == GgufType::kBool) return v->u64 != 0;
  return wrong_type(key, *v, "bool");
}

StatusOr<std::string> GgufFile::get_string(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing(key);
  if (v->type == GgufType::kString) return std::string(v->str);
  return wrong_type(key, *v, "string");
}

StatusOr<std::vector<std::string_view>> GgufFile::get_string_array(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing(key);
  if (v->type == GgufType::kArray && v->elem_type == GgufType::kString) return v->strings;
  return wrong_type(key, *v, "array of strings");
}

StatusOr<std::vector<float>> GgufFile::get_f32_array(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing(key);
  if (v->type != GgufType::kArray || v->elem_type != GgufType::kF32) {
    return wrong_type(key, *v, "array of f32");
  }
  std::vector<float> out(size_t(v->n_elems));
  if (!out.empty()) std::memcpy(out.data(), v->elem_data, out.size() * 4);
  return out;
}

StatusOr<std::vector<int32_t>> GgufFile::get_i32_array(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing(key);
  if (v->type != GgufType::kArray || gguf_scalar_bytes(v->elem_type) == 0 ||
      v->elem_type == GgufType::kF32 || v->elem_type == GgufType::kF64) {
    return wrong_type(key, *v, "array of integers");
  }
  std::vector<int32_t> out(size_t(v->n_elems));
  const size_t sz = gguf_scalar_bytes(v->elem_type);
  for (size_t i = 0; i < out.size(); ++i) {
    GgufValue e;
    decode_scalar(v->elem_type, v->elem_data + i * sz, &e);
    out[i] = is_signed(v->elem_type) ? int32_t(e.i64) : int32_t(e.u64);
  }
  return out;
}

uint64_t gguf_tensor_table_hash(const GgufFile& file) {
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&](const void* p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      h ^= static_cast<const uint8_t*>(p)[i];
      h *= 0x100000001b3ull;
    }
  };
  for (const auto& t : file.tensors()) {
    mix(t.name.data(), t.name.size());
    mix(&t.type, sizeof t.type);
    for (uint64_t d : t.ne) mix(&d, sizeof d);
    mix(&t.offset, sizeof t.offset);
  }
  return h;
}

uint64_t gguf_content_hash(const GgufFile& file) {
  uint64_t h = gguf_tensor_table_hash(file);
  auto mix = [&](const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      h ^= p[i];
      h *= 0x100000001b3ull;
    }
  };
  constexpr uint64_t kSample = 4096;
  for (const auto& t : file.tensors()) {
    if (!t.data || t.n_bytes == 0) continue;
    const uint64_t n = std::min(kSample, t.n_bytes);
    mix(t.data, size_t(n));
    mix(t.data + (t.n_bytes - n) / 2, size_t(n));
    mix(t.data + t.n_bytes - n, size_t(n));
  }
  return h;
}

std::string gguf_value_to_string(const GgufValue& v, size_t max_elems) {
  char buf[64];
  switch (v.type) {
    case GgufType::kString: {
      // Appended, not "\"" + std::string: GCC 12 warns falsely on that (-Wrestrict, its bug 105329).
      std::string s(1, '"');
      s += printable(v.str.substr(0, 200));
      s += '"';
      return s;
    }
    case GgufType::kBool: return v.u64 ? "true" : "false";
    case GgufType::kF32: case GgufType::kF64:
      std::snprintf(buf, sizeof buf, "%g", v.f64);
      return buf;
    case GgufType::kArray: {
      std::string s = std::string(gguf_type_name(v.elem_type)) + "[" +
                      std::to_string(v.n_elems) + "]";
      if (v.elem_type == GgufType::kString) {
        s += " [";
        for (size_t i = 0; i < v.strings.size() && i < max_elems; ++i) {
          s += (i ? ", \"" : "\"") + printable(v.strings[i].substr(0, 32)) + "\"";
        }
        if (v.strings.size() > max_elems) s += ", ...";
        s += "]";
      }
      return s;
    }
    default:
      if (is_signed(v.type)) return std::to_string(v.i64);
      return std::to_string(v.u64);
  }
}

}  // namespace kvq
