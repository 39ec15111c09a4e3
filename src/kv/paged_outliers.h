// SPDX-License-Identifier: MIT
// KVQuant's sparse outliers (§3.4: fp16 value + uint16 index, CSR by token) kept per page of
// the store's records, each page one block of the cache's PagePool laid out as OutlierPage
// (kv_view.h): its capacity, the page's row pointers, then indices and values. Context shift
// drops a page's outliers with its records, and bytes() is what the blocks cost. The newest
// page grows by doubling; a page that fills is shrunk to its exact size, so a long context
// holds what the paper counts plus two uint32 per page.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/fp16.h"
#include "io/byte_stream.h"
#include "kv/kv_view.h"
#include "kv/page_pool.h"
#include "kvq/status.h"

namespace kvq {

class PagedOutliers {
 public:
  PagedOutliers() = default;
  PagedOutliers(PagePool* pool, int page_tokens) : pool_(pool), page_(page_tokens) {}
  PagedOutliers(PagedOutliers&& o) noexcept { *this = std::move(o); }
  PagedOutliers& operator=(PagedOutliers&& o) noexcept;
  PagedOutliers(const PagedOutliers&) = delete;
  PagedOutliers& operator=(const PagedOutliers&) = delete;
  ~PagedOutliers() { truncate(0); }

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
  size_t bytes() const { return bytes_; }
  // Bytes a full page holding `nnz` outliers costs.
  static size_t page_bytes(int page_tokens, size_t nnz) { return OutlierPage::block_bytes(page_tokens, nnz); }
  // Sessions (engine/session.h): every page's block as in memory.
  void write(ByteWriter& w) const;
  // Reads what write() wrote into these (empty) outliers, for n_rows rows of row_values values:
  // every capacity bounded, row pointers ascending within the capacity, indices strictly
  // ascending below row_values (what the kernels' lower_bound relies on).
  Status read(ByteReader& r, size_t n_rows, size_t row_values, std::string_view what);
  // The pages' blocks, for views.
  const uint8_t* const* pages() const { return pages_.data(); }

 private:
  uint32_t cap(size_t p) const;
  uint32_t* row_ptr(size_t p) { return reinterpret_cast<uint32_t*>(pages_[p] + 4); }
  const uint32_t* row_ptr(size_t p) const { return reinterpret_cast<const uint32_t*>(pages_[p] + 4); }
  size_t rows_in(size_t p) const;
  // Moves page p into a block of capacity cap (>= its outliers). False when the pool refuses.
  bool reallocate(size_t p, size_t cap);
  void release(size_t p);

  PagePool* pool_ = nullptr;
  int page_ = 64;
  size_t n_rows_ = 0, nnz_ = 0, bytes_ = 0;
  std::vector<uint8_t*> pages_;  // OutlierPage blocks (null while a new page is being made)
};

}  // namespace kvq
