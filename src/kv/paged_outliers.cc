// SPDX-License-Identifier: MIT
#include "kv/paged_outliers.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "base/check.h"

namespace kvq {

PagedOutliers& PagedOutliers::operator=(PagedOutliers&& o) noexcept {
  std::swap(pool_, o.pool_);
  std::swap(page_, o.page_);
  std::swap(row_values_, o.row_values_);
  std::swap(layout_, o.layout_);
  std::swap(n_rows_, o.n_rows_);
  std::swap(nnz_, o.nnz_);
  std::swap(bytes_, o.bytes_);
  std::swap(pages_, o.pages_);
  return *this;
}

size_t PagedOutliers::rows_in(size_t p) const { return std::min(n_rows_ - p * size_t(page_), size_t(page_)); }

void PagedOutliers::release(size_t p) {
  const size_t b = layout_.block_bytes(page_, cap(p));
  pool_->release(pages_[p], b);
  bytes_ -= b;
}

bool PagedOutliers::reallocate(size_t p, size_t new_cap) {
  const size_t b = layout_.block_bytes(page_, new_cap);
  uint8_t* blk = pool_->acquire(b);
  if (!blk) return false;
  const auto c32 = uint32_t(new_cap);
  std::memcpy(blk, &c32, 4);
  if (pages_[p]) {
    const uint8_t* old = pages_[p];
    const size_t rows = rows_in(p), old_cap = cap(p);
    const size_t n = ptr(p, rows);
    std::memcpy(blk + layout_.ptr_offset(), old + layout_.ptr_offset(), (rows + 1) * layout_.ptr_bytes);
    std::memcpy(blk + layout_.val_offset(page_), old + layout_.val_offset(page_), n * OutlierLayout::kValBytes);
    std::memcpy(blk + layout_.idx_offset(page_, new_cap), old + layout_.idx_offset(page_, old_cap), n * layout_.idx_bytes);
    release(p);
  } else {
    layout_.set_ptr(blk, 0, 0);
  }
  pages_[p] = blk;
  bytes_ += b;
  return true;
}

Status PagedOutliers::append_row(const uint16_t* idx, const f16_t* val, size_t count) {
  const size_t p = n_rows_ / size_t(page_), slot = n_rows_ % size_t(page_);
  if (slot == 0) {
    pages_.push_back(nullptr);
    if (!reallocate(p, std::max<size_t>(count, 32))) {
      pages_.pop_back();
      return out_of_memory("cannot allocate a KV cache outlier page");
    }
  }
  const size_t have = ptr(p, slot);
  if (have + count > cap(p) && !reallocate(p, std::max(have + count, size_t(cap(p)) * 2))) {
    if (slot == 0) {
      release(p);
      pages_.pop_back();
    }
    return out_of_memory("cannot grow a KV cache outlier page");
  }
  uint8_t* blk = pages_[p];
  if (count > 0) {  // idx / val may be null then
    KVQ_CHECK(idx[count - 1] < row_values_);
    std::memcpy(blk + layout_.val_offset(page_) + have * OutlierLayout::kValBytes, val, count * OutlierLayout::kValBytes);
    uint8_t* dst = blk + layout_.idx_offset(page_, cap(p)) + have * layout_.idx_bytes;
    if (layout_.idx_bytes == 1) {
      for (size_t k = 0; k < count; ++k) dst[k] = uint8_t(idx[k]);
    } else {
      std::memcpy(dst, idx, count * 2);
    }
  }
  layout_.set_ptr(blk, slot + 1, uint32_t(have + count));
  ++n_rows_;
  nnz_ += count;
  // A full page is shrunk to its exact size (the pool then holds what the accounting counts).
  if (slot + 1 == size_t(page_) && cap(p) > have + count) (void)reallocate(p, have + count);
  return ok_status();
}

void PagedOutliers::truncate(size_t n_rows) {
  if (n_rows >= n_rows_) return;
  const size_t keep_pages = (n_rows + size_t(page_) - 1) / size_t(page_);
  for (size_t p = keep_pages; p < pages_.size(); ++p) {
    nnz_ -= ptr(p, rows_in(p));
    release(p);
  }
  if (keep_pages > 0) {
    const size_t p = keep_pages - 1;
    nnz_ -= ptr(p, rows_in(p)) - ptr(p, n_rows - p * size_t(page_));
  }
  pages_.resize(keep_pages);
  n_rows_ = n_rows;
}

void PagedOutliers::drop_front_pages(size_t n) {
  KVQ_CHECK(n % size_t(page_) == 0 && n <= n_rows_);
  const size_t np = n / size_t(page_);
  for (size_t p = 0; p < np; ++p) {
    nnz_ -= ptr(p, size_t(page_));
    release(p);
  }
  pages_.erase(pages_.begin(), pages_.begin() + ptrdiff_t(np));
  n_rows_ -= n;
}

void PagedOutliers::write(ByteWriter& w) const {
  for (size_t p = 0; p < pages_.size(); ++p) w.write(pages_[p], layout_.block_bytes(page_, cap(p)));
}

Status PagedOutliers::read(ByteReader& r, size_t n_rows, std::string_view what) {
  KVQ_CHECK(n_rows_ == 0 && pages_.empty());
  const std::string name(what);
  for (size_t p = 0; p * size_t(page_) < n_rows; ++p) {
    const size_t rows = std::min(n_rows - p * size_t(page_), size_t(page_));
    uint32_t c = 0;
    KVQ_RETURN_IF_ERROR(r.get(&c, what));
    // The bound that also keeps every pointer within its width (OutlierLayout::for_rows).
    if (c > OutlierLayout::max_cap(row_values_, page_)) {
      return r.corrupt(name + ": page " + std::to_string(p) + " claims room for " + std::to_string(c) +
                       " outliers, more than its " + std::to_string(page_) + " rows of " + std::to_string(row_values_) +
                       " values hold");
    }
    const size_t b = layout_.block_bytes(page_, c);
    if (b - 4 > r.left()) return r.take(b - 4, what).status();
    uint8_t* blk = pool_->acquire(b);
    if (!blk) return out_of_memory("cannot allocate a KV cache outlier page of " + std::to_string(b) + " bytes");
    std::memcpy(blk, &c, 4);
    if (Status s = r.read(blk + 4, b - 4, what); !s.ok()) {
      pool_->release(blk, b);
      return s;
    }
    // The block is b bytes, read in full; pointers (rows + 1 <= page_ + 1 of them) and the c
    // indices lie inside it by its layout, and an index is read only below a checked pointer.
    std::string bad;
    if (layout_.ptr_at(blk, 0) != 0 || layout_.ptr_at(blk, rows) > c) {
      bad = "row pointers outside the page's " + std::to_string(c) + " outliers";
    }
    for (size_t s = 0; s < rows && bad.empty(); ++s) {
      // Each pointer is checked before the row's entries are read: a later one may be in range
      // while this one points past the page's outliers.
      const uint32_t lo = layout_.ptr_at(blk, s), hi = layout_.ptr_at(blk, s + 1);
      if (hi < lo) bad = "row pointers descend at row " + std::to_string(s);
      if (hi > c) bad = "row " + std::to_string(s) + " points past the page's " + std::to_string(c) + " outliers";
      for (uint32_t k = lo; k < hi && bad.empty(); ++k) {
        const uint32_t i = layout_.idx_at(blk, page_, c, k);
        if (i >= row_values_ || (k > lo && i <= layout_.idx_at(blk, page_, c, k - 1))) {
          bad = "row " + std::to_string(s) + " has outlier index " + std::to_string(i) +
                " out of order or beyond the row's " + std::to_string(row_values_) + " values";
        }
      }
    }
    if (!bad.empty()) {
      pool_->release(blk, b);
      return r.corrupt(name + ": outlier page " + std::to_string(p) + ": " + bad);
    }
    pages_.push_back(blk);
    bytes_ += b;
    n_rows_ += rows;
    nnz_ += layout_.ptr_at(blk, rows);
  }
  return ok_status();
}

size_t PagedOutliers::count(size_t row) const {
  const size_t p = row / size_t(page_), s = row % size_t(page_);
  return ptr(p, s + 1) - ptr(p, s);
}

uint32_t PagedOutliers::index(size_t row, size_t k) const {
  const size_t p = row / size_t(page_), s = row % size_t(page_);
  return layout_.idx_at(pages_[p], page_, cap(p), ptr(p, s) + k);
}

f16_t PagedOutliers::value(size_t row, size_t k) const {
  const size_t p = row / size_t(page_), s = row % size_t(page_);
  f16_t v;
  std::memcpy(&v, pages_[p] + layout_.val_offset(page_) + (ptr(p, s) + k) * OutlierLayout::kValBytes, sizeof v);
  return v;
}

}  // namespace kvq
