// SPDX-License-Identifier: MIT
#include "kv/paged_outliers.h"

#include <algorithm>
#include <cstring>

#include "base/check.h"

namespace kvq {

bool PagedOutliers::reallocate(size_t p, size_t cap) {
  Page& pg = pages_[p];
  PoolBlock b(pool_, block_size(page_, cap));
  if (!b.ok()) return false;
  if (pg.block.ok()) {
    const uint32_t* rp = row_ptr(p);
    const size_t rows = std::min(n_rows_ - p * size_t(page_), size_t(page_));
    const size_t n = rp[rows];
    std::memcpy(b.data(), rp, (rows + 1) * 4);
    std::memcpy(b.data() + idx_offset(page_), pg.block.data() + idx_offset(page_), n * 2);
    std::memcpy(b.data() + val_offset(page_, cap), pg.block.data() + val_offset(page_, pg.cap), n * 2);
  }
  pg.block = std::move(b);
  pg.cap = cap;
  update_ref(p);
  return true;
}

void PagedOutliers::update_ref(size_t p) {
  const Page& pg = pages_[p];
  refs_[p] = {reinterpret_cast<const uint32_t*>(pg.block.data()),
              reinterpret_cast<const uint16_t*>(pg.block.data() + idx_offset(page_)),
              reinterpret_cast<const f16_t*>(pg.block.data() + val_offset(page_, pg.cap))};
}

Status PagedOutliers::append_row(const uint16_t* idx, const f16_t* val, size_t count) {
  const size_t p = n_rows_ / size_t(page_), slot = n_rows_ % size_t(page_);
  if (slot == 0) {
    pages_.emplace_back();
    refs_.emplace_back();
    if (!reallocate(p, std::max<size_t>(count, 32))) {
      pages_.pop_back();
      refs_.pop_back();
      return out_of_memory("cannot allocate a KV cache outlier page");
    }
  }
  const size_t have = row_ptr(p)[slot];
  if (have + count > pages_[p].cap && !reallocate(p, std::max(have + count, pages_[p].cap * 2))) {
    if (slot == 0) {
      pages_.pop_back();
      refs_.pop_back();
    }
    return out_of_memory("cannot grow a KV cache outlier page");
  }
  Page& pg = pages_[p];
  std::memcpy(pg.block.data() + idx_offset(page_) + have * 2, idx, count * 2);
  std::memcpy(pg.block.data() + val_offset(page_, pg.cap) + have * 2, val, count * 2);
  row_ptr(p)[slot + 1] = uint32_t(have + count);
  ++n_rows_;
  nnz_ += count;
  // A full page is shrunk to its exact size (the pool then holds what the paper counts).
  if (slot + 1 == size_t(page_) && pg.cap > have + count) (void)reallocate(p, have + count);
  return ok_status();
}

void PagedOutliers::truncate(size_t n_rows) {
  if (n_rows >= n_rows_) return;
  const size_t keep_pages = (n_rows + size_t(page_) - 1) / size_t(page_);
  for (size_t p = keep_pages; p < pages_.size(); ++p) nnz_ -= row_ptr(p)[std::min(n_rows_ - p * page_, size_t(page_))];
  if (keep_pages > 0) {
    const size_t p = keep_pages - 1;
    const size_t rows_before = std::min(n_rows_ - p * page_, size_t(page_));
    const size_t rows_after = n_rows - p * page_;
    nnz_ -= row_ptr(p)[rows_before] - row_ptr(p)[rows_after];
  }
  pages_.resize(keep_pages);
  refs_.resize(keep_pages);
  n_rows_ = n_rows;
}

void PagedOutliers::drop_front_pages(size_t n) {
  KVQ_CHECK(n % size_t(page_) == 0 && n <= n_rows_);
  const size_t np = n / size_t(page_);
  for (size_t p = 0; p < np; ++p) nnz_ -= row_ptr(p)[size_t(page_)];
  pages_.erase(pages_.begin(), pages_.begin() + ptrdiff_t(np));
  refs_.erase(refs_.begin(), refs_.begin() + ptrdiff_t(np));
  n_rows_ -= n;
}

std::span<const uint16_t> PagedOutliers::idx(size_t row) const {
  const size_t p = row / size_t(page_), s = row % size_t(page_);
  const uint32_t* rp = refs_[p].ptr;
  return {refs_[p].idx + rp[s], rp[s + 1] - rp[s]};
}

std::span<const f16_t> PagedOutliers::val(size_t row) const {
  const size_t p = row / size_t(page_), s = row % size_t(page_);
  const uint32_t* rp = refs_[p].ptr;
  return {refs_[p].val + rp[s], rp[s + 1] - rp[s]};
}

size_t PagedOutliers::bytes() const {
  size_t b = 0;
  for (const auto& pg : pages_) b += pg.block.cost();
  return b;
}

}  // namespace kvq
