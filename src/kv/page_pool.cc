// SPDX-License-Identifier: MIT
#include "kv/page_pool.h"

#include <cstdlib>
#include <cstring>

#include "base/check.h"

namespace kvq {

uint8_t* PagePool::acquire(size_t bytes) {
  if (bytes == 0) return nullptr;
  const size_t b = bytes;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (b > budget_ - in_use_) return nullptr;
    in_use_ += b;  // reserved before the allocation, so concurrent callers respect the budget
  }
  // calloc: malloc's 16-byte alignment (every kernel loads cache rows unaligned) and its
  // smallest per-block overhead; pages of a long context are many small blocks.
  auto* p = static_cast<uint8_t*>(std::calloc(1, b));
  std::lock_guard<std::mutex> lock(mu_);
  if (!p) {
    in_use_ -= b;
    return nullptr;
  }
  if (in_use_ > peak_) peak_ = in_use_;
  return p;
}

void PagePool::release(uint8_t* p, size_t bytes) {
  if (!p) return;
  std::free(p);
  const size_t b = bytes;
  std::lock_guard<std::mutex> lock(mu_);
  KVQ_CHECK(in_use_ >= b);
  in_use_ -= b;
}

size_t PagePool::bytes_in_use() const {
  std::lock_guard<std::mutex> lock(mu_);
  return in_use_;
}

size_t PagePool::peak_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return peak_;
}

}  // namespace kvq
