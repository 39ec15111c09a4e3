// SPDX-License-Identifier: MIT
#include "io/gguf_writer.h"

#include <cstdio>
#include <cstring>

namespace kvq {

namespace {
template <typename T>
void put(std::vector<uint8_t>& out, T v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}
void put_str(std::vector<uint8_t>& out, std::string_view s) {
  put<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}
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

void GgufWriter::add_tensor(std::string_view name, std::span<const uint64_t> ne, uint32_t type,
                            std::span<const uint8_t> data) {
  tensors_.push_back({std::string(name), {ne.begin(), ne.end()}, type, {data.begin(), data.end()}});
}

std::vector<uint8_t> GgufWriter::serialize(uint32_t alignment) const {
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
    offset += (t.data.size() + alignment - 1) / alignment * alignment;
  }
  out.resize((out.size() + alignment - 1) / alignment * alignment, 0);
  for (const auto& t : tensors_) {
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
