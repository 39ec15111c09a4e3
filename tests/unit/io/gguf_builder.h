// SPDX-License-Identifier: MIT
// A GGUF byte builder for tests and the structure-aware fuzzer: unlike GgufWriter it writes
// exactly what it is told (explicit tensor offsets, duplicate names, nested arrays), so tests
// can make files that are structurally wrong in one chosen way.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace kvq::testing {

class GgufBuilder {
 public:
  template <typename T>
  static void put(std::vector<uint8_t>& out, T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out.insert(out.end(), p, p + sizeof v);
  }
  static void put_str(std::vector<uint8_t>& out, const std::string& s) {
    put<uint64_t>(out, s.size());
    out.insert(out.end(), s.begin(), s.end());
  }

  // A key with a u32 value (type 4).
  void add_u32(const std::string& key, uint32_t v) {
    put_str(kv_, key);
    put<uint32_t>(kv_, 4);
    put<uint32_t>(kv_, v);
    ++n_kv_;
  }
  void add_string(const std::string& key, const std::string& v) {
    put_str(kv_, key);
    put<uint32_t>(kv_, 8);
    put_str(kv_, v);
    ++n_kv_;
  }
  // A key whose value bytes (after the type tag) are given raw.
  void add_raw(const std::string& key, uint32_t type, const std::vector<uint8_t>& value) {
    put_str(kv_, key);
    put<uint32_t>(kv_, type);
    kv_.insert(kv_.end(), value.begin(), value.end());
    ++n_kv_;
  }
  // An F32 tensor of ne[0] = n values at an explicit offset into the data section.
  void add_f32_tensor(const std::string& name, uint64_t n, uint64_t offset) {
    put_str(ti_, name);
    put<uint32_t>(ti_, 1);
    put<uint64_t>(ti_, n);
    put<uint32_t>(ti_, 0);
    put<uint64_t>(ti_, offset);
    ++n_tensors_;
  }
  // Any tensor info: dims, ggml type and offset as given (no checks).
  void add_tensor(const std::string& name, const std::vector<uint64_t>& ne, uint32_t type, uint64_t offset) {
    put_str(ti_, name);
    put<uint32_t>(ti_, uint32_t(ne.size()));
    for (uint64_t d : ne) put<uint64_t>(ti_, d);
    put<uint32_t>(ti_, type);
    put<uint64_t>(ti_, offset);
    ++n_tensors_;
  }
  // Header, metadata, tensor infos, padding to 32 and data_bytes of data.
  std::vector<uint8_t> bytes(size_t data_bytes, uint64_t n_tensors_override = ~0ull,
                             uint64_t n_kv_override = ~0ull) const {
    std::vector<uint8_t> out;
    put<uint32_t>(out, 0x46554747);
    put<uint32_t>(out, 3);
    put<uint64_t>(out, n_tensors_override != ~0ull ? n_tensors_override : n_tensors_);
    put<uint64_t>(out, n_kv_override != ~0ull ? n_kv_override : n_kv_);
    out.insert(out.end(), kv_.begin(), kv_.end());
    out.insert(out.end(), ti_.begin(), ti_.end());
    out.resize((out.size() + 31) / 32 * 32, 0);
    for (size_t i = 0; i < data_bytes; ++i) out.push_back(uint8_t(i));
    return out;
  }

 private:
  std::vector<uint8_t> kv_, ti_;
  uint64_t n_kv_ = 0, n_tensors_ = 0;
};

}  // namespace kvq::testing
