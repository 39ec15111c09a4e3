// SPDX-License-Identifier: MIT
// KVQuant's sparse outliers (§3.4: fp16 value + uint16 index, CSR by token) kept per page of
// the store's records, each page one block of the cache's PagePool:
//   [row_ptr: uint32 (page_tokens + 1)] [idx: uint16 cap] [val: f16 cap]  (no padding)
// so context shift drops a page's outliers with its records, and bytes() is what the blocks
// cost. The newest page grows by doubling; a page that fills is shrunk to its exact size, so
// a long context holds exactly what the paper counts plus one uint32 per page.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/fp16.h"
#include "kv/kv_view.h"
#include "kv/page_pool.h"
#include "kvq/status.h"

namespace kvq {

class PagedOutliers {
 public:
  PagedOutliers() = default;
  PagedOutliers(PagePool* pool, int page_tokens) : pool_(pool), page_(page_tokens) {}

  // Appends one row (token). kOutOfMemory leaves the rows unchanged.
  Status append_row(const uint16_t* idx, const f16_t* val, size_t count);
  // Keeps the first n rows.
  void truncate(size_t n_rows);
  // Drops the first n rows: n must be a multiple of the page size (whole pages go).
  void drop_front_pages(size_t n_rows);
  size_t n_rows() const { return n_rows_; }
  size_t nnz() const { return nnz_; }
  std::span<const uint16_t> idx(size_t row) const;
  std::span<const f16_t> val(size_t row) const;
  size_t bytes() const;
  // Bytes a page holding `nnz` outliers costs once full.
  static size_t page_bytes(int page_tokens, size_t nnz) { return block_size(page_tokens, nnz); }
  // Per page, the CSR arrays for views (row pointers relative to the page's arrays).
  const OutlierPage* pages() const { return refs_.data(); }

 private:
  struct Page {
    PoolBlock block;
    size_t cap = 0;  // outliers the block holds
  };
  static size_t idx_offset(int page_tokens) { return (size_t(page_tokens) + 1) * 4; }
  static size_t val_offset(int page_tokens, size_t cap) { return idx_offset(page_tokens) + cap * 2; }
  static size_t block_size(int page_tokens, size_t cap) { return val_offset(page_tokens, cap) + cap * 2; }
  uint32_t* row_ptr(size_t p) { return reinterpret_cast<uint32_t*>(pages_[p].block.data()); }
  const uint32_t* row_ptr(size_t p) const { return reinterpret_cast<const uint32_t*>(pages_[p].block.data()); }
  // Moves page p into a block of capacity cap (>= its outliers). False when the pool refuses.
  bool reallocate(size_t p, size_t cap);
  void update_ref(size_t p);

  PagePool* pool_ = nullptr;
  int page_ = 64;
  size_t n_rows_ = 0, nnz_ = 0;
  std::vector<Page> pages_;
  std::vector<OutlierPage> refs_;
};

}  // namespace kvq
