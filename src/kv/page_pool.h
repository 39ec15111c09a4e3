// SPDX-License-Identifier: MIT
// The allocator behind a KV cache's storage. Every block a cache holds — its pages of
// records, the per-page outlier blocks of KVQuant, the fp16 window ring of KIVI — comes from
// one PagePool, which counts what is allocated (the capacity of every block it handed out, as
// asked for: malloc's own headers, about 16 bytes a block, are not counted) and refuses what
// would exceed its byte budget. A cache
// owns its pool by default; the caches of many sequences (a server) can share one, so one
// budget bounds them all. Thread-safe: sequences may append concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>

namespace kvq {

class PagePool {
 public:
  static constexpr size_t kUnlimited = SIZE_MAX;

  explicit PagePool(size_t budget_bytes = kUnlimited) : budget_(budget_bytes) {}
  PagePool(const PagePool&) = delete;
  PagePool& operator=(const PagePool&) = delete;

  // A zeroed block (16-byte aligned), or nullptr when it would take the pool past its budget or the
  // system has no memory left.
  uint8_t* acquire(size_t bytes);
  void release(uint8_t* p, size_t bytes);

  size_t bytes_in_use() const;
  size_t peak_bytes() const;
  size_t budget() const { return budget_; }

 private:
  mutable std::mutex mu_;
  size_t budget_;
  size_t in_use_ = 0;
  size_t peak_ = 0;
};

// One block of a pool, released when destroyed (move-only). Empty when default-constructed.
class PoolBlock {
 public:
  PoolBlock() = default;
  // An empty block when the pool refuses (check ok()).
  PoolBlock(PagePool* pool, size_t bytes) : pool_(pool), bytes_(bytes), p_(pool->acquire(bytes)) {
    if (!p_) bytes_ = 0;
  }
  PoolBlock(const PoolBlock&) = delete;
  PoolBlock& operator=(const PoolBlock&) = delete;
  PoolBlock(PoolBlock&& o) noexcept { *this = std::move(o); }
  PoolBlock& operator=(PoolBlock&& o) noexcept {
    std::swap(pool_, o.pool_);
    std::swap(bytes_, o.bytes_);
    std::swap(p_, o.p_);
    return *this;
  }
  ~PoolBlock() {
    if (p_) pool_->release(p_, bytes_);
  }
  bool ok() const { return p_ != nullptr; }
  uint8_t* data() { return p_; }
  const uint8_t* data() const { return p_; }
  size_t size() const { return bytes_; }
  // Bytes it costs the pool.
  size_t cost() const { return bytes_; }

 private:
  PagePool* pool_ = nullptr;
  size_t bytes_ = 0;
  uint8_t* p_ = nullptr;
};

}  // namespace kvq
