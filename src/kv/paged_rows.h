// SPDX-License-Identifier: MIT
// Fixed-size per-token records in pages of kPageTokens tokens allocated on demand, per layer:
// the storage behind every per-token format. bytes() is what is allocated.
#pragma once

#include <cstdint>
#include <vector>

#include "base/aligned_buffer.h"
#include "base/check.h"
#include "kvq/status.h"

namespace kvq {

class PagedRows {
 public:
  static constexpr int kPageTokens = 64;

  explicit PagedRows(size_t record_bytes = 0, int page_records = kPageTokens)
      : record_bytes_(record_bytes), page_(page_records) {}
  size_t record_bytes() const { return record_bytes_; }
  int n_tokens() const { return n_tokens_; }
  // Grows to n tokens (new records zeroed). kOutOfMemory leaves the rows unchanged.
  Status resize(int n) {
    const size_t need = (size_t(n) + page_ - 1) / page_;
    while (pages_.size() < need) {
      AlignedBuffer<uint8_t> p;
      if (!p.resize(record_bytes_ * page_)) return out_of_memory("cannot allocate KV cache pages");
      ptrs_.push_back(p.data());
      pages_.push_back(std::move(p));
    }
    if (n < n_tokens_) {
      pages_.resize(need);
      ptrs_.resize(need);
    }
    n_tokens_ = n;
    return ok_status();
  }
  uint8_t* record(int t) {
    KVQ_DCHECK(t >= 0 && t < n_tokens_);
    return pages_[size_t(t / page_)].data() + size_t(t % page_) * record_bytes_;
  }
  const uint8_t* record(int t) const { return const_cast<PagedRows*>(this)->record(t); }
  size_t bytes() const { return pages_.size() * record_bytes_ * page_; }
  // Page k holds records [k * page_records(), (k + 1) * page_records()).
  const uint8_t* const* pages() const { return ptrs_.data(); }
  int page_records() const { return page_; }
  size_t bytes_for(int n) const {
    return (size_t(n) + page_ - 1) / page_ * record_bytes_ * page_;
  }

 private:
  size_t record_bytes_;
  int page_;  // records per page
  int n_tokens_ = 0;
  std::vector<AlignedBuffer<uint8_t>> pages_;
  std::vector<const uint8_t*> ptrs_;  // pages_[k].data(), for views
};

}  // namespace kvq
