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
  std::swap(n_rows_, o.n_rows_);
  std::swap(nnz_, o.nnz_);
  std::swap(bytes_, o.bytes_);
  std::swap(pages_, o.pages_);
  return *this;
}

uint32_t PagedOutliers::cap(size_t p) const {
  uint32_t c;
  std::memcpy(&c, pages_[p], 4);
  return c;
}

size_t PagedOutliers::rows_in(size_t p) const { return std::min(n_rows_ - p * size_t(page_), size_t(page_)); }

void PagedOutliers::release(size_t p) {
  const size_t b = OutlierPage::block_bytes(page_, cap(p));
  pool_->release(pages_[p], b);
  bytes_ -= b;
}

bool PagedOutliers::reallocate(size_t p, size_t new_cap) {
  const size_t b = OutlierPage::block_bytes(page_, new_cap);
  uint8_t* blk = pool_->acquire(b);
  if (!blk) return false;
  const auto c32 = uint32_t(new_cap);
  std::memcpy(blk, &c32, 4);
  if (pages_[p]) {
    const size_t rows = rows_in(p), old_cap = cap(p);
    const size_t n = row_ptr(p)[rows];
    std::memcpy(blk + 4, pages_[p] + 4, (rows + 1) * 4);
    std::memcpy(blk + OutlierPage::idx_offset(page_), pages_[p] + OutlierPage::idx_offset(page_), n * 2);
    std::memcpy(blk + OutlierPage::val_offset(page_, new_cap), pages_[p] + OutlierPage::val_offset(page_, old_cap), n * 2);
    release(p);
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
  const size_t have = row_ptr(p)[slot];
  if (have + count > cap(p) && !reallocate(p, std::max(have + count, size_t(cap(p)) * 2))) {
    if (slot == 0) {
      release(p);
      pages_.pop_back();
    }
    return out_of_memory("cannot grow a KV cache outlier page");
  }
  uint8_t* blk = pages_[p];
  if (count > 0) {  // idx / val may be null then
    std::memcpy(blk + OutlierPage::idx_offset(page_) + have * 2, idx, count * 2);
    std::memcpy(blk + OutlierPage::val_offset(page_, cap(p)) + have * 2, val, count * 2);
  }
  row_ptr(p)[slot + 1] = uint32_t(have + count);
  ++n_rows_;
  nnz_ += count;
  // A full page is shrunk to its exact size (the pool then holds what the paper counts).
  if (slot + 1 == size_t(page_) && cap(p) > have + count) (void)reallocate(p, have + count);
  return ok_status();
}

void PagedOutliers::truncate(size_t n_rows) {
  if (n_rows >= n_rows_) return;
  const size_t keep_pages = (n_rows + size_t(page_) - 1) / size_t(page_);
  for (size_t p = keep_pages; p < pages_.size(); ++p) {
    nnz_ -= row_ptr(p)[rows_in(p)];
    release(p);
  }
  if (keep_pages > 0) {
    const size_t p = keep_pages - 1;
    nnz_ -= row_ptr(p)[rows_in(p)] - row_ptr(p)[n_rows - p * size_t(page_)];
  }
  pages_.resize(keep_pages);
  n_rows_ = n_rows;
}

void PagedOutliers::drop_front_pages(size_t n) {
  KVQ_CHECK(n % size_t(page_) == 0 && n <= n_rows_);
  const size_t np = n / size_t(page_);
  for (size_t p = 0; p < np; ++p) {
    nnz_ -= row_ptr(p)[size_t(page_)];
    release(p);
  }
  pages_.erase(pages_.begin(), pages_.begin() + ptrdiff_t(np));
  n_rows_ -= n;
}

void PagedOutliers::write(ByteWriter& w) const {
  for (size_t p = 0; p < pages_.size(); ++p) w.write(pages_[p], OutlierPage::block_bytes(page_, cap(p)));
}

Status PagedOutliers::read(ByteReader& r, size_t n_rows, size_t row_values, std::string_view what) {
  KVQ_CHECK(n_rows_ == 0 && pages_.empty());
  const std::string name(what);
  for (size_t p = 0; p * size_t(page_) < n_rows; ++p) {
    const size_t rows = std::min(n_rows - p * size_t(page_), size_t(page_));
    uint32_t c = 0;
    KVQ_RETURN_IF_ERROR(r.get(&c, what));
    if (c > size_t(page_) * row_values) {
      return r.corrupt(name + ": page " + std::to_string(p) + " claims room for " + std::to_string(c) +
                       " outliers, more than its " + std::to_string(page_) + " rows of " + std::to_string(row_values) +
                       " values hold");
    }
    const size_t b = OutlierPage::block_bytes(page_, c);
    if (b - 4 > r.left()) return r.take(b - 4, what).status();
    uint8_t* blk = pool_->acquire(b);
    if (!blk) return out_of_memory("cannot allocate a KV cache outlier page of " + std::to_string(b) + " bytes");
    std::memcpy(blk, &c, 4);
    if (Status s = r.read(blk + 4, b - 4, what); !s.ok()) {
      pool_->release(blk, b);
      return s;
    }
    const OutlierPage o = OutlierPage::of(blk, page_);
    std::string bad;
    if (o.ptr[0] != 0 || o.ptr[rows] > c) bad = "row pointers outside the page's " + std::to_string(c) + " outliers";
    for (size_t s = 0; s < rows && bad.empty(); ++s) {
      // Each pointer is checked before the row's entries are read: a later one may be in range
      // while this one points past the page's outliers.
      if (o.ptr[s + 1] < o.ptr[s]) bad = "row pointers descend at row " + std::to_string(s);
      if (o.ptr[s + 1] > c) bad = "row " + std::to_string(s) + " points past the page's " + std::to_string(c) + " outliers";
      for (uint32_t k = o.ptr[s]; k < o.ptr[s + 1] && bad.empty(); ++k) {
        if (o.idx[k] >= row_values || (k > o.ptr[s] && o.idx[k] <= o.idx[k - 1])) {
          bad = "row " + std::to_string(s) + " has outlier index " + std::to_string(o.idx[k]) +
                " out of order or beyond the row's " + std::to_string(row_values) + " values";
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
    nnz_ += o.ptr[rows];
  }
  return ok_status();
}

std::span<const uint16_t> PagedOutliers::idx(size_t row) const {
  const OutlierPage o = OutlierPage::of(pages_[row / size_t(page_)], page_);
  const size_t s = row % size_t(page_);
  return {o.idx + o.ptr[s], o.ptr[s + 1] - o.ptr[s]};
}

std::span<const f16_t> PagedOutliers::val(size_t row) const {
  const OutlierPage o = OutlierPage::of(pages_[row / size_t(page_)], page_);
  const size_t s = row % size_t(page_);
  return {o.val + o.ptr[s], o.ptr[s + 1] - o.ptr[s]};
}

}  // namespace kvq
