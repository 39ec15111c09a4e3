// SPDX-License-Identifier: MIT
// KVQuant's sparse outliers (§3.4: fp16 value + index) kept per page of the store's records,
// each page one block of the cache's PagePool laid out as OutlierLayout (quant/outlier_layout.h)
// at the narrowest widths the store's shape allows. The newest page grows (CSR by token) by
// doubling and is shrunk to its exact size when it fills; seal_full_pages(), once a step is
// done (KvStore::end_step), rewrites each full page at its exact size as CSR by KV head, which
// is what attention reads (a (page, head) run's outliers are one list). Sealing after the step
// rather than as a page fills keeps a failed step's rollback from growing the cache: a sealed
// block can be larger than the growing one, and truncating into a sealed page keeps it sealed
// (its lists are cut in place, nothing allocated); appending to such a page first turns it back
// into a growing one. Context shift drops a page's outliers
// with its records, and bytes() is what the blocks cost: per sealed page its capacity word,
// head pointers and a value and cell per outlier; per growing page its capacity word, row
// pointers and a value and index per outlier of its capacity.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/fp16.h"
#include "io/byte_stream.h"
#include "kv/kv_view.h"
#include "quant/outlier_layout.h"
#include "kv/page_pool.h"
#include "kvq/status.h"

namespace kvq {

class PagedOutliers {
 public:
  PagedOutliers() = default;
  // Rows of n_heads heads of head_dim values (indices below their product), pages of
  // page_tokens rows.
  PagedOutliers(PagePool* pool, int page_tokens, int n_heads, int head_dim)
      : pool_(pool), page_(page_tokens), head_dim_(size_t(head_dim)),
        layout_(OutlierLayout::for_rows(n_heads, head_dim, page_tokens)) {}
  PagedOutliers(PagedOutliers&& o) noexcept { *this = std::move(o); }
  PagedOutliers& operator=(PagedOutliers&& o) noexcept;
  PagedOutliers(const PagedOutliers&) = delete;
  PagedOutliers& operator=(const PagedOutliers&) = delete;
  ~PagedOutliers() { truncate(0); }

  // Appends one row (token): count indices, strictly ascending below row_values, and their
  // values. kOutOfMemory leaves the rows unchanged.
  Status append_row(const uint16_t* idx, const f16_t* val, size_t count);
  // Seals every full page not sealed yet. A page the pool refuses a sealed block stays growing
  // (slower to attend, the same values) and is tried again next time.
  void seal_full_pages();
  // Keeps the first n rows. Allocates nothing.
  void truncate(size_t n_rows);
  // Drops the first n rows: n must be a multiple of the page size (whole pages go).
  void drop_front_pages(size_t n_rows);
  size_t n_rows() const { return n_rows_; }
  size_t nnz() const { return nnz_; }
  // Calls fn(index in the row, f16 value) for row `row`'s outliers, ascending indices.
  template <class Fn>
  void for_each_in_row(size_t row, const Fn& fn) const;
  size_t bytes() const { return bytes_; }
  const OutlierLayout& layout() const { return layout_; }
  // Pages sealed now (tests, accounting checks).
  size_t sealed_pages() const;
  // Sessions (engine/session.h): every page's block as in memory.
  void write(ByteWriter& w) const;
  // Reads what write() wrote into these (empty) outliers, for n_rows rows: every capacity
  // bounded by what a page's rows hold (so that its pointers fit their width); growing pages:
  // row pointers ascending within the capacity, indices strictly ascending below row_values;
  // sealed pages: head pointers ascending within the capacity, each head's cells strictly
  // ascending with slots below the page's rows and channels below head_dim (what the kernels'
  // walks rely on). Every piece is bounds-checked before it is read.
  Status read(ByteReader& r, size_t n_rows, std::string_view what);
  // The pages' blocks, for views.
  const uint8_t* const* pages() const { return pages_.data(); }

 private:
  uint32_t cap(size_t p) const { return OutlierLayout::cap_of(pages_[p]); }
  bool sealed(size_t p) const { return OutlierLayout::sealed_of(pages_[p]); }
  uint32_t ptr(size_t p, size_t s) const { return layout_.ptr_at(pages_[p], s); }
  size_t rows_in(size_t p) const;
  size_t row_values() const { return size_t(layout_.n_heads) * head_dim_; }
  // Outliers page p holds.
  size_t page_nnz(size_t p) const { return sealed(p) ? ptr(p, layout_.n_heads) : ptr(p, rows_in(p)); }
  f16_t value_at(size_t p, size_t k) const;
  // Moves growing page p into a block of capacity cap (>= its outliers). False when the pool
  // refuses.
  bool reallocate(size_t p, size_t cap);
  // Rewrites page p as sealed (exact size) / as growing with room for `extra` more outliers.
  // False when the pool refuses; the page is then as it was.
  bool seal(size_t p);
  bool unseal(size_t p, size_t extra);
  void release(size_t p);

  PagePool* pool_ = nullptr;
  int page_ = 64;
  size_t head_dim_ = 0;
  OutlierLayout layout_;
  size_t n_rows_ = 0, nnz_ = 0, bytes_ = 0;
  std::vector<uint8_t*> pages_;  // OutlierPage blocks (null while a new page is being made)
  size_t seal_from_ = 0;         // pages before it are sealed or not full
};

template <class Fn>
void PagedOutliers::for_each_in_row(size_t row, const Fn& fn) const {
  const size_t p = row / size_t(page_), s = row % size_t(page_);
  if (!sealed(p)) {
    for (size_t k = ptr(p, s), e = ptr(p, s + 1); k < e; ++k) {
      fn(layout_.idx_at(pages_[p], page_, cap(p), k), value_at(p, k));
    }
    return;
  }
  // Each head's cells ascend: its entries of slot s follow those of the slots before it.
  const int sh = layout_.ch_bits;
  for (size_t h = 0; h < layout_.n_heads; ++h) {
    for (size_t k = ptr(p, h), e = ptr(p, h + 1); k < e; ++k) {
      const uint16_t c = layout_.cell_at(pages_[p], k);
      if (size_t(c >> sh) < s) continue;
      if (size_t(c >> sh) > s) break;
      fn(uint32_t(h * head_dim_ + (c & ((1u << sh) - 1u))), value_at(p, k));
    }
  }
}

}  // namespace kvq
