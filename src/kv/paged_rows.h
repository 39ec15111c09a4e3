// SPDX-License-Identifier: MIT
// Fixed-size per-token records in pages of page_records tokens taken from the cache's
// PagePool on demand, per layer: the storage behind every per-token format. The page table
// is a vector of page pointers, so dropping whole pages (context shift) moves no records.
// bytes() is what the pages cost the pool.
//
// A record is n_parts parts of part_bytes (one per KV head) then extra_bytes of per-token data
// (e.g. the scales of a whole-vector group). Pages are head-major:
//   [n_parts][page_records][part_bytes]  then  [page_records][extra_bytes]
// so the rows of one KV head are contiguous within a page: attention streams them.
// Parts may differ in size (kvquant-mixed with a code width per KV head): part h is then
// part_sizes[h] bytes, and head h's rows start at part_offset(h) * page_records in a page.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "base/check.h"
#include "io/byte_stream.h"
#include "kv/kv_view.h"
#include "kv/page_pool.h"
#include "kvq/status.h"
#include "quant/bits_accounting.h"

namespace kvq {

class PagedRows {
 public:
  static constexpr int kPageTokens = kKvPageTokens;

  PagedRows() = default;
  PagedRows(PagePool* pool, size_t part_bytes, int n_parts, size_t extra_bytes, int page_records = kPageTokens)
      : PagedRows(pool, std::vector<size_t>(size_t(n_parts), part_bytes), extra_bytes, page_records) {}
  PagedRows(PagePool* pool, const std::vector<size_t>& part_sizes, size_t extra_bytes, int page_records = kPageTokens)
      : pool_(pool), n_parts_(int(part_sizes.size())), sizes_(part_sizes), extra_(extra_bytes), page_(page_records) {
    for (size_t b : part_sizes) {
      offs_.push_back(parts_);
      parts_ += b;
    }
    const bool one = std::all_of(sizes_.begin(), sizes_.end(), [&](size_t b) { return b == sizes_[0]; });
    part_ = one && !sizes_.empty() ? sizes_[0] : 0;
  }
  PagedRows(PagedRows&& o) noexcept { *this = std::move(o); }
  PagedRows& operator=(PagedRows&& o) noexcept {
    std::swap(pool_, o.pool_);
    std::swap(part_, o.part_);
    std::swap(n_parts_, o.n_parts_);
    std::swap(parts_, o.parts_);
    std::swap(sizes_, o.sizes_);
    std::swap(offs_, o.offs_);
    std::swap(extra_, o.extra_);
    std::swap(page_, o.page_);
    std::swap(n_tokens_, o.n_tokens_);
    std::swap(pages_, o.pages_);
    return *this;
  }
  PagedRows(const PagedRows&) = delete;
  PagedRows& operator=(const PagedRows&) = delete;
  ~PagedRows() { release_from(0); }
  size_t record_bytes() const { return parts_ + extra_; }
  size_t page_bytes() const { return record_bytes() * size_t(page_); }
  // Every part's size (0 when they differ: part_size).
  size_t part_bytes() const { return part_; }
  size_t part_size(int h) const { return sizes_[size_t(h)]; }
  // Bytes of a token's record before part h.
  size_t part_offset(int h) const { return offs_[size_t(h)]; }
  size_t extra_bytes() const { return extra_; }
  int n_tokens() const { return n_tokens_; }
  // Grows or shrinks to n tokens (pages no longer needed go back to the pool; records of a new
  // page are zeroed). kOutOfMemory leaves the rows unchanged.
  Status resize(int n) {
    const size_t need = (size_t(n) + size_t(page_) - 1) / size_t(page_);
    const size_t had = pages_.size();
    while (pages_.size() < need) {
      uint8_t* p = pool_->acquire(page_bytes());
      if (!p) {
        release_from(had);
        return out_of_memory("cannot allocate a KV cache page of " + std::to_string(page_bytes()) +
                             " bytes (" + std::to_string(pool_->bytes_in_use()) + " bytes in use)");
      }
      pages_.push_back(p);
    }
    release_from(need);
    n_tokens_ = n;
    return ok_status();
  }
  // Removes records [t0, t0 + n), moving the later ones down. Whole pages (t0 and n multiples
  // of page_records) are dropped from the page table without touching a record.
  void erase(int t0, int n) {
    KVQ_CHECK(t0 >= 0 && n >= 0 && t0 + n <= n_tokens_);
    if (n == 0) return;
    if (t0 % page_ == 0 && n % page_ == 0) {
      const auto first = ptrdiff_t(t0 / page_), last = std::min(ptrdiff_t((t0 + n + page_ - 1) / page_), ptrdiff_t(pages_.size()));
      for (ptrdiff_t k = first; k < last; ++k) pool_->release(pages_[size_t(k)], page_bytes());
      pages_.erase(pages_.begin() + first, pages_.begin() + last);
      n_tokens_ -= n;
      return;
    }
    for (int t = t0; t + n < n_tokens_; ++t) {
      for (int h = 0; h < n_parts_; ++h) std::memcpy(part(t, h), part(t + n, h), part_size(h));
      if (extra_) std::memcpy(extra(t), extra(t + n), extra_);
    }
    KVQ_CHECK(resize(n_tokens_ - n).ok());  // shrinking never allocates
  }
  // Part h (KV head h) of token t, and its per-token extra bytes.
  uint8_t* part(int t, int h) {
    KVQ_DCHECK(t >= 0 && t < n_tokens_ && h >= 0 && h < n_parts_);
    return pages_[size_t(t / page_)] + offs_[size_t(h)] * size_t(page_) + size_t(t % page_) * sizes_[size_t(h)];
  }
  const uint8_t* part(int t, int h) const { return const_cast<PagedRows*>(this)->part(t, h); }
  uint8_t* extra(int t) {
    KVQ_DCHECK(t >= 0 && t < n_tokens_);
    return pages_[size_t(t / page_)] + extras_offset() + size_t(t % page_) * extra_;
  }
  const uint8_t* extra(int t) const { return const_cast<PagedRows*>(this)->extra(t); }
  // Token t's record in token-major order [parts][extra], scattered to / gathered from its page.
  void put(int t, const uint8_t* rec) {
    for (int h = 0; h < n_parts_; ++h) std::memcpy(part(t, h), rec + part_offset(h), part_size(h));
    if (extra_) std::memcpy(extra(t), rec + parts_, extra_);
  }
  void get(int t, uint8_t* rec) const {
    for (int h = 0; h < n_parts_; ++h) std::memcpy(rec + part_offset(h), part(t, h), part_size(h));
    if (extra_) std::memcpy(rec + parts_, extra(t), extra_);
  }
  size_t bytes() const { return pages_.size() * page_bytes(); }
  // Sessions (engine/session.h): the record count (uint64), then every page as in memory.
  void write(ByteWriter& w) const {
    w.put(uint64_t(n_tokens_));
    for (const uint8_t* p : pages_) w.write(p, page_bytes());
  }
  // Empty rows of the same layout and pool.
  PagedRows like() const { return PagedRows(pool_, sizes_, extra_, page_); }
  // Reads what write() wrote into these (empty) rows: a count in [lo, hi], checked, and the
  // file's bytes for its pages checked, before any page is allocated.
  Status read(ByteReader& r, int lo, int hi, std::string_view what) {
    KVQ_CHECK(n_tokens_ == 0 && pages_.empty());
    KVQ_ASSIGN_OR_RETURN(const uint64_t n, r.count(uint64_t(std::max(lo, 0)), uint64_t(std::max(hi, 0)), what));
    const size_t need = size_t(bytes_for(int(n)));
    if (need > r.left()) return r.take(need, what).status();
    KVQ_RETURN_IF_ERROR(resize(int(n)));
    for (uint8_t* p : pages_) KVQ_RETURN_IF_ERROR(r.read(p, page_bytes(), what));
    return ok_status();
  }
  size_t bytes_for(int n) const { return (size_t(n) + size_t(page_) - 1) / size_t(page_) * page_bytes(); }
  // Page k holds records [k * page_records(), (k + 1) * page_records()).
  uint8_t* const* pages() const { return pages_.data(); }
  int page_records() const { return page_; }
  // Byte offsets within a page: head h's rows start at h * head_stride() (parts of one size;
  // else part_offset(h) * page_records()); the extras at extras_offset().
  size_t head_stride() const {
    KVQ_DCHECK(part_ != 0 || n_parts_ == 0);
    return size_t(page_) * part_;
  }
  size_t extras_offset() const { return size_t(page_) * parts_; }
  // The rows as a view segment starting at position t0: parts as a head's rows, the extras as
  // per-token metadata (shared by all heads). Stores add their format's constants.
  KvSegment segment(KvFormat format, int head_dim, int t0 = 0) const {
    KvSegment s;
    s.t0 = t0;
    s.n = n_tokens_;
    s.pages = pages();
    s.page_tokens = page_;
    s.token_stride = part_;
    s.head_stride = size_t(page_) * part_;  // 0 when parts differ: the store adds KvSegment::heads
    s.meta_off = extras_offset();
    s.meta_stride = extra_;
    s.proto.format = format;
    s.proto.head_dim = head_dim;
    return s;
  }

 private:
  // Hands pages [k, end) back to the pool.
  void release_from(size_t k) {
    for (size_t i = k; i < pages_.size(); ++i) pool_->release(pages_[i], page_bytes());
    if (k < pages_.size()) pages_.resize(k);
  }

  PagePool* pool_ = nullptr;
  size_t part_ = 0;  // every part's size when they are one size, else 0
  int n_parts_ = 0;
  size_t parts_ = 0;                  // bytes of all parts of a record
  std::vector<size_t> sizes_, offs_;  // each part's size and offset in a record
  size_t extra_ = 0;
  int page_ = kPageTokens;  // records per page
  int n_tokens_ = 0;
  std::vector<uint8_t*> pages_;  // blocks of page_bytes() from pool_
};

}  // namespace kvq
