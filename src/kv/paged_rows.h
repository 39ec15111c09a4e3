// SPDX-License-Identifier: MIT
// Fixed-size per-token records in pages of page_records tokens allocated on demand, per layer:
// the storage behind every per-token format. bytes() is what is allocated.
//
// A record is n_parts parts of part_bytes (one per KV head) then extra_bytes of per-token data
// (e.g. the scales of a whole-vector group). Pages are head-major:
//   [n_parts][page_records][part_bytes]  then  [page_records][extra_bytes]
// so the rows of one KV head are contiguous within a page: attention streams them.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "base/aligned_buffer.h"
#include "base/check.h"
#include "kv/kv_view.h"
#include "kvq/status.h"

namespace kvq {

class PagedRows {
 public:
  static constexpr int kPageTokens = 64;

  PagedRows() = default;
  PagedRows(size_t part_bytes, int n_parts, size_t extra_bytes, int page_records = kPageTokens)
      : part_(part_bytes), n_parts_(n_parts), extra_(extra_bytes), page_(page_records) {}
  size_t record_bytes() const { return size_t(n_parts_) * part_ + extra_; }
  size_t part_bytes() const { return part_; }
  size_t extra_bytes() const { return extra_; }
  int n_tokens() const { return n_tokens_; }
  // Grows to n tokens (new records zeroed). kOutOfMemory leaves the rows unchanged.
  Status resize(int n) {
    const size_t need = (size_t(n) + page_ - 1) / page_;
    while (pages_.size() < need) {
      AlignedBuffer<uint8_t> p;
      if (!p.resize(record_bytes() * page_)) return out_of_memory("cannot allocate KV cache pages");
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
  // Part h (KV head h) of token t, and its per-token extra bytes.
  uint8_t* part(int t, int h) {
    KVQ_DCHECK(t >= 0 && t < n_tokens_ && h >= 0 && h < n_parts_);
    return pages_[size_t(t / page_)].data() + (size_t(h) * page_ + size_t(t % page_)) * part_;
  }
  const uint8_t* part(int t, int h) const { return const_cast<PagedRows*>(this)->part(t, h); }
  uint8_t* extra(int t) {
    KVQ_DCHECK(t >= 0 && t < n_tokens_);
    return pages_[size_t(t / page_)].data() + extras_offset() + size_t(t % page_) * extra_;
  }
  const uint8_t* extra(int t) const { return const_cast<PagedRows*>(this)->extra(t); }
  // Token t's record in token-major order [parts][extra], scattered to / gathered from its page.
  void put(int t, const uint8_t* rec) {
    for (int h = 0; h < n_parts_; ++h) std::memcpy(part(t, h), rec + size_t(h) * part_, part_);
    if (extra_) std::memcpy(extra(t), rec + size_t(n_parts_) * part_, extra_);
  }
  void get(int t, uint8_t* rec) const {
    for (int h = 0; h < n_parts_; ++h) std::memcpy(rec + size_t(h) * part_, part(t, h), part_);
    if (extra_) std::memcpy(rec + size_t(n_parts_) * part_, extra(t), extra_);
  }
  size_t bytes() const { return pages_.size() * record_bytes() * page_; }
  size_t bytes_for(int n) const { return (size_t(n) + page_ - 1) / page_ * record_bytes() * page_; }
  // Page k holds records [k * page_records(), (k + 1) * page_records()).
  const uint8_t* const* pages() const { return ptrs_.data(); }
  int page_records() const { return page_; }
  // Byte offsets within a page: head h's rows start at h * head_stride(); the extras at
  // extras_offset().
  size_t head_stride() const { return size_t(page_) * part_; }
  size_t extras_offset() const { return size_t(n_parts_) * head_stride(); }
  // The rows as a view segment starting at position t0: parts as a head's rows, the extras as
  // per-token metadata (shared by all heads). Stores add their format's constants.
  KvSegment segment(KvFormat format, int head_dim, int t0 = 0) const {
    KvSegment s;
    s.t0 = t0;
    s.n = n_tokens_;
    s.pages = pages();
    s.page_tokens = page_;
    s.token_stride = part_;
    s.head_stride = head_stride();
    s.meta_off = extras_offset();
    s.meta_stride = extra_;
    s.proto.format = format;
    s.proto.head_dim = head_dim;
    return s;
  }

 private:
  size_t part_ = 0;
  int n_parts_ = 1;
  size_t extra_ = 0;
  int page_ = kPageTokens;  // records per page
  int n_tokens_ = 0;
  std::vector<AlignedBuffer<uint8_t>> pages_;
  std::vector<const uint8_t*> ptrs_;  // pages_[k].data(), for views
};

}  // namespace kvq
