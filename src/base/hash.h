// SPDX-License-Identifier: MIT
// Non-cryptographic 64-bit hashes: identities (of a model, of calibrated parameters) and
// integrity checks of files kvq writes. Neither resists a deliberate forgery; files are still
// validated field by field.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace kvq {

inline constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ull;
inline constexpr uint64_t kFnvPrime = 0x100000001b3ull;

// FNV-1a over n bytes, continuing from h.
inline uint64_t fnv1a(const void* data, size_t n, uint64_t h = kFnvOffset) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= kFnvPrime;
  }
  return h;
}

// A checksum for large blocks (GB/s), fed in pieces of any size: four interleaved lanes of
// FNV-1a's step over little-endian 64-bit words, then the lanes, the tail bytes and the length
// folded with fnv1a. Every step is a bijection of its lane, so changing any one word changes
// the lane it went to.
class Checksum64 {
 public:
  void update(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    total_ += n;
    if (fill_ > 0) {
      const size_t k = n < 32 - fill_ ? n : 32 - fill_;
      std::memcpy(tail_ + fill_, p, k);
      fill_ += k;
      p += k;
      n -= k;
      if (fill_ < 32) return;
      block(tail_);
      fill_ = 0;
    }
    for (; n >= 32; p += 32, n -= 32) block(p);
    std::memcpy(tail_, p, n);
    fill_ = n;
  }
  uint64_t value() const {
    uint64_t h = fnv1a(lane_, sizeof lane_);
    h = fnv1a(tail_, fill_, h);
    return fnv1a(&total_, sizeof total_, h);
  }

 private:
  void block(const uint8_t* p) {
    for (int k = 0; k < 4; ++k) {
      uint64_t w;
      std::memcpy(&w, p + 8 * k, 8);
      lane_[k] = (lane_[k] ^ w) * kFnvPrime;
    }
  }
  uint64_t lane_[4] = {kFnvOffset, kFnvOffset ^ 1, kFnvOffset ^ 2, kFnvOffset ^ 3};
  uint8_t tail_[32] = {};
  size_t fill_ = 0;
  uint64_t total_ = 0;
};

}  // namespace kvq
