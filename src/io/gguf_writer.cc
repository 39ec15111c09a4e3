// SPDX-License-Identifier: MIT
#include "io/gguf_writer.h"

#include <cstdio>
#include <cstring>

#include "base/check.h"

namespace kvq {

namespace {
template <typename T>
void put(std::vector<uint8_t>& out, T v) {
  // resize + memcpy rather than insert: GCC 12 warns falsely (-Wstringop-overflow) on an insert
  // into the empty vector.
  const size_t n = out.size();
  out.resize(n + sizeof(T));
  std::memcpy(out.data() + n, &v, sizeof(T));
}
void put_str(std::vector<uint8_t>& out, std::string_view s) {
  put<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

void put_scalar(std::vector<uint8_t>& out, const GgufValue& v) {
  switch (v.type) {
    case GgufType::kU8: put<uint8_t>(out, uint8_t(v.u64)); break;
    case GgufType::kBool: put<uint8_t>(out, v.u64 ? 1 : 0); break;
    case GgufType::kI8: put<int8_t>(out, int8_t(v.i64)); break;
    case GgufType::kU16: put<uint16_t>(out, uint16_t(v.u64)); break;
    case GgufType::kI16: put<int16_t>(out, int16_t(v.i64)); break;
    case GgufType::kU32: put<uint32_t>(out, uint32_t(v.u64)); break;
    case GgufType::kI32: put<int32_t>(out, int32_t(v.i64)); break;
    case GgufType::kF32: put<float>(out, float(v.f64)); break;
    case GgufType::kU64: put<uint64_t>(out, v.u64); break;
    case GgufType::kI64: put<int64_t>(out, v.i64); break;
    case GgufType::kF64: put<double>(out, v.f64); break;
    default: KVQ_CHECK(false, "not a scalar GGUF type %u", unsigned(v.type));
  }
}

// The array body (element type, count, elements). Nested arrays carry their own kArray tag
// before each element, mirroring GgufFile's reader so that values round-trip.
void put_array(std::vector<uint8_t>& out, const GgufValue& v) {
  put<uint32_t>(out, uint32_t(v.elem_type));
  put<uint64_t>(out, v.n_elems);
  if (v.elem_type == GgufType::kString) {
    for (std::string_view s : v.strings) put_str(out, s);
  } else if (v.elem_type == GgufType::kArray) {
    for (const GgufValue& a : v.arrays) {
      put<uint32_t>(out, uint32_t(GgufType::kArray));
      put_array(out, a);
    }
  } else {
    out.insert(out.end(), v.elem_data, v.elem_data + v.n_elems * gguf_scalar_bytes(v.elem_type));
  }
}

uint64_t align_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

}  // namespace

void GgufWriter::put_key(std::string_view key, GgufType type) {
  put_str(kv_bytes_, key);
  put<uint32_t>(kv_bytes_, uint32_t(type));
  ++n_kv_;
}

void GgufWriter::add_u32(std::string_view k, uint32_t v) { put_key(k, GgufType::kU32); put(kv_bytes_, v); }
void GgufWriter::add_i32(std::string_view k, int32_t v) { put_key(k, GgufType::kI32); put(kv_bytes_, v); }
void GgufWriter::add_u64(std::string_view k, uint64_t v) { put_key(k, GgufType::kU64); put(kv_bytes_, v); }
void GgufWriter::add_f32(std::string_view k, float v) { put_key(k, GgufType::kF32); put(kv_bytes_, v); }
void GgufWriter::add_bool(std::string_view k, bool v) {
  put_key(k, GgufType::kBool);
  put<uint8_t>(kv_bytes_, v ? 1 : 0);
}
void GgufWriter::add_string(std::string_view k, std::string_view v) {
  put_key(k, GgufType::kString);
  put_str(kv_bytes_, v);
}
void GgufWriter::add_f32_array(std::string_view k, std::span<const float> v) {
  put_key(k, GgufType::kArray);
  put<uint32_t>(kv_bytes_, uint32_t(GgufType::kF32));
  put<uint64_t>(kv_bytes_, v.size());
  for (float x : v) put(kv_bytes_, x);
}
void GgufWriter::add_i32_array(std::string_view k, std::span<const int32_t> v) {
  put_key(k, GgufType::kArray);
  put<uint32_t>(kv_bytes_, uint32_t(GgufType::kI32));
  put<uint64_t>(kv_bytes_, v.size());
  for (int32_t x : v) put(kv_bytes_, x);
}
void GgufWriter::add_string_array(std::string_view k, std::span<const std::string> v) {
  put_key(k, GgufType::kArray);
  put<uint32_t>(kv_bytes_, uint32_t(GgufType::kString));
  put<uint64_t>(kv_bytes_, v.size());
  for (const auto& s : v) put_str(kv_bytes_, s);
}

void GgufWriter::add_value(std::string_view k, const GgufValue& v) {
  put_key(k, v.type);
  if (v.type == GgufType::kString) {
    put_str(kv_bytes_, v.str);
  } else if (v.type == GgufType::kArray) {
    put_array(kv_bytes_, v);
  } else {
    put_scalar(kv_bytes_, v);
  }
}

void GgufWriter::add_tensor(std::string_view name, std::span<const uint64_t> ne, uint32_t type,
                            std::span<const uint8_t> data) {
  tensors_.push_back({std::string(name), {ne.begin(), ne.end()}, type, data.size(), {data.begin(), data.end()}});
}

Status GgufWriter::declare_tensor(std::string_view name, std::span<const uint64_t> ne, uint32_t type) {
  const GgmlBlockInfo b = ggml_block_info(type);
  if (b.block_elems == 0) return invalid_argument("tensor type " + ggml_type_name(type) + " has no known size");
  if (ne.empty() || ne[0] % b.block_elems != 0) {
    return invalid_argument("tensor '" + std::string(name) + "': its row length " +
                            (ne.empty() ? std::string("0") : std::to_string(ne[0])) + " is not a multiple of " +
                            std::to_string(b.block_elems) + " as " + ggml_type_name(type) + " needs");
  }
  uint64_t n_blocks = 1;
  for (uint64_t d : ne) {
    if (__builtin_mul_overflow(n_blocks, d, &n_blocks)) return invalid_argument("tensor '" + std::string(name) + "' is too big");
  }
  n_blocks /= b.block_elems;
  uint64_t n_bytes = 0;
  if (__builtin_mul_overflow(n_blocks, uint64_t(b.block_bytes), &n_bytes)) {
    return invalid_argument("tensor '" + std::string(name) + "' is too big");
  }
  tensors_.push_back({std::string(name), {ne.begin(), ne.end()}, type, n_bytes, {}});
  return ok_status();
}

std::vector<uint64_t> GgufWriter::tensor_bytes() const {
  std::vector<uint64_t> r;
  for (const auto& t : tensors_) r.push_back(t.n_bytes);
  return r;
}

std::vector<uint8_t> GgufWriter::serialize_header(uint32_t alignment) const {
  std::vector<uint8_t> out;
  put<uint32_t>(out, 0x46554747);
  put<uint32_t>(out, 3);
  put<uint64_t>(out, tensors_.size());
  put<uint64_t>(out, n_kv_);
  out.insert(out.end(), kv_bytes_.begin(), kv_bytes_.end());
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    put_str(out, t.name);
    put<uint32_t>(out, uint32_t(t.ne.size()));
    for (uint64_t d : t.ne) put(out, d);
    put<uint32_t>(out, t.type);
    put<uint64_t>(out, offset);
    offset += align_up(t.n_bytes, alignment);
  }
  out.resize(align_up(out.size(), alignment), 0);
  return out;
}

std::vector<uint8_t> GgufWriter::serialize(uint32_t alignment) const {
  std::vector<uint8_t> out = serialize_header(alignment);
  for (const auto& t : tensors_) {
    KVQ_CHECK(t.data.size() == t.n_bytes, "tensor '%s' was declared: stream it with GgufStream", t.name.c_str());
    out.insert(out.end(), t.data.begin(), t.data.end());
    out.resize((out.size() + alignment - 1) / alignment * alignment, 0);
  }
  return out;
}

Status GgufWriter::write_file(const std::string& path) const {
  KVQ_ASSIGN_OR_RETURN(OutputFile out, OutputFile::prepare(path, "output"));
  return write_to(out);
}

Status GgufWriter::write_to(OutputFile& out) const {
  const std::vector<uint8_t> bytes = serialize();
  return out.write(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

}  // namespace kvq
