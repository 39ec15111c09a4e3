// SPDX-License-Identifier: MIT
// KVQuant's sparse outliers (§3.4: fp16 value + index, CSR by token) kept per page of the
// store's records, each page one block of the cache's PagePool laid out as OutlierLayout
// (quant/outlier_layout.h): its capacity, the page's row pointers (page-local offsets), then
// values and indices, at the narrowest widths the store's row length allows (uint8 indices
// for d_kv <= 256, uint16 pointers when a page of every value fits in them). Context shift
// drops a page's outliers with its records, and bytes() is what the blocks cost. The newest
// page grows by doubling; a page that fills is shrunk to its exact size, so a long context
// holds what the accounting counts: per outlier its value and index, per token a pointer, per
// page a capacity and one more pointer.
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
  // Rows of row_values values (indices below it), pages of page_tokens rows.
  PagedOutliers(PagePool* pool, int page_tokens, size_t row_values)
      : pool_(pool), page_(page_tokens), row_values_(row_values),
        layout_(OutlierLayout::for_rows(row_values, page_tokens)) {}
  PagedOutliers(PagedOutliers&& o) noexcept { *this = std::move(o); }
  PagedOutliers& operator=(PagedOutliers&& o) noexcept;
  PagedOutliers(const PagedOutliers&) = delete;
  PagedOutliers& operator=(const PagedOutliers&) = delete;
  ~PagedOutliers() { truncate(0); }

  // Appends one row (token): count indices, strictly ascending below row_values, and their
  // values. kOutOfMemory leaves the rows unchanged.
  Status append_row(const uint16_t* idx, const f16_t* val, size_t count);
  // Keeps the first n rows.
  void truncate(size_t n_rows);
  // Drops the first n rows: n must be a multiple of the page size (whole pages go).
  void drop_front_pages(size_t n_rows);
  size_t n_rows() const { return n_rows_; }
  size_t nnz() const { return nnz_; }
  // Row `row`'s outliers: count, then the k-th index and value.
  size_t count(size_t row) const;
  uint32_t index(size_t row, size_t k) const;
  f16_t value(size_t row, size_t k) const;
  size_t bytes() const { return bytes_; }
  const OutlierLayout& layout() const { return layout_; }
  // Bytes a full page holding `nnz` outliers costs.
  size_t page_bytes(size_t nnz) const { return layout_.block_bytes(page_, nnz); }
  // Sessions (engine/session.h): every page's block as in memory.
  void write(ByteWriter& w) const;
  // Reads what write() wrote into these (empty) outliers, for n_rows rows: every capacity
  // bounded by what a page's rows hold (so that its pointers fit their width), row pointers
  // ascending within the capacity, indices strictly ascending below row_values (what the
  // kernels' walk relies on). Every piece is bounds-checked before it is read.
  Status read(ByteReader& r, size_t n_rows, std::string_view what);
  // The pages' blocks, for views.
  const uint8_t* const* pages() const { return pages_.data(); }

 private:
  uint32_t cap(size_t p) const { return OutlierLayout::cap_of(pages_[p]); }
  uint32_t ptr(size_t p, size_t s) const { return layout_.ptr_at(pages_[p], s); }
  size_t rows_in(size_t p) const;
  // Moves page p into a block of capacity cap (>= its outliers). False when the pool refuses.
  bool reallocate(size_t p, size_t cap);
  void release(size_t p);

  PagePool* pool_ = nullptr;
  int page_ = 64;
  size_t row_values_ = 0;
  OutlierLayout layout_;
  size_t n_rows_ = 0, nnz_ = 0, bytes_ = 0;
  std::vector<uint8_t*> pages_;  // OutlierPage blocks (null while a new page is being made)
};

}  // namespace kvq
