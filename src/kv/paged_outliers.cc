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
  std::swap(head_dim_, o.head_dim_);
  std::swap(layout_, o.layout_);
  std::swap(n_rows_, o.n_rows_);
  std::swap(nnz_, o.nnz_);
  std::swap(bytes_, o.bytes_);
  std::swap(pages_, o.pages_);
  std::swap(seal_from_, o.seal_from_);
  return *this;
}

size_t PagedOutliers::rows_in(size_t p) const { return std::min(n_rows_ - p * size_t(page_), size_t(page_)); }

size_t PagedOutliers::sealed_pages() const {
  size_t n = 0;
  for (size_t p = 0; p < pages_.size(); ++p) n += sealed(p);
  return n;
}

f16_t PagedOutliers::value_at(size_t p, size_t k) const {
  const size_t off = sealed(p) ? layout_.sealed_val_offset() : layout_.val_offset(page_);
  f16_t v;
  std::memcpy(&v, pages_[p] + off + k * OutlierLayout::kValBytes, sizeof v);
  return v;
}

void PagedOutliers::release(size_t p) {
  const size_t b = layout_.bytes_of(pages_[p], page_);
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
    KVQ_CHECK(!sealed(p));
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

bool PagedOutliers::seal(size_t p) {
  const uint8_t* old = pages_[p];
  const size_t rows = rows_in(p), n = ptr(p, rows), old_cap = cap(p);
  const size_t b = layout_.sealed_block_bytes(n);
  uint8_t* blk = pool_->acquire(b);
  if (!blk) return false;
  const uint32_t word = uint32_t(n) | OutlierLayout::kSealed;
  std::memcpy(blk, &word, 4);
  // Head pointers: the count of each head's entries, summed.
  const size_t n_heads = layout_.n_heads;
  std::vector<uint32_t> at(n_heads + 1, 0);
  for (size_t k = 0; k < n; ++k) ++at[layout_.idx_at(old, page_, old_cap, k) / head_dim_ + 1];
  for (size_t h = 0; h < n_heads; ++h) at[h + 1] += at[h];
  for (size_t h = 0; h <= n_heads; ++h) layout_.set_ptr(blk, h, at[h]);
  // Rows in order, each row's indices ascending: every head's cells come out ascending.
  uint8_t* val = blk + layout_.sealed_val_offset();
  uint8_t* cell = blk + layout_.sealed_cell_offset(n);
  for (size_t s = 0; s < rows; ++s) {
    for (size_t k = ptr(p, s), e = ptr(p, s + 1); k < e; ++k) {
      const uint32_t i = layout_.idx_at(old, page_, old_cap, k);
      const size_t h = i / head_dim_, dst = at[h]++;
      const auto c = uint16_t(s << layout_.ch_bits | (i - h * head_dim_));
      std::memcpy(val + dst * OutlierLayout::kValBytes, old + layout_.val_offset(page_) + k * OutlierLayout::kValBytes,
                  OutlierLayout::kValBytes);
      std::memcpy(cell + dst * OutlierLayout::kCellBytes, &c, 2);
    }
  }
  release(p);
  pages_[p] = blk;
  bytes_ += b;
  return true;
}

bool PagedOutliers::unseal(size_t p, size_t extra) {
  const uint8_t* old = pages_[p];
  const size_t rows = rows_in(p), n = page_nnz(p), new_cap = std::max<size_t>(n + extra, 32);
  const size_t b = layout_.block_bytes(page_, new_cap);
  uint8_t* blk = pool_->acquire(b);
  if (!blk) return false;
  const auto c32 = uint32_t(new_cap);
  std::memcpy(blk, &c32, 4);
  // Each head's next entry; a row takes, head by head, the entries of its slot (ascending
  // indices, as heads own ascending ranges).
  const size_t n_heads = layout_.n_heads;
  std::vector<uint32_t> next(n_heads), end(n_heads);
  for (size_t h = 0; h < n_heads; ++h) next[h] = ptr(p, h), end[h] = ptr(p, h + 1);
  const int sh = layout_.ch_bits;
  const uint32_t mask = (1u << sh) - 1u;
  uint8_t* val = blk + layout_.val_offset(page_);
  size_t k = 0;
  layout_.set_ptr(blk, 0, 0);
  for (size_t s = 0; s < rows; ++s) {
    for (size_t h = 0; h < n_heads; ++h) {
      for (; next[h] < end[h]; ++next[h]) {
        const uint16_t c = layout_.cell_at(old, next[h]);
        if (size_t(c >> sh) != s) break;
        std::memcpy(val + k * OutlierLayout::kValBytes, old + layout_.sealed_val_offset() + next[h] * OutlierLayout::kValBytes,
                    OutlierLayout::kValBytes);
        layout_.set_idx(blk, page_, new_cap, k++, uint32_t(h * head_dim_ + (c & mask)));
      }
    }
    layout_.set_ptr(blk, s + 1, uint32_t(k));
  }
  KVQ_CHECK(k == n);
  release(p);
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
  } else if (sealed(p) && !unseal(p, count)) {  // a sealed page cut short by truncate()
    return out_of_memory("cannot grow a KV cache outlier page");
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
    KVQ_CHECK(idx[count - 1] < row_values());
    std::memcpy(blk + layout_.val_offset(page_) + have * OutlierLayout::kValBytes, val, count * OutlierLayout::kValBytes);
    for (size_t k = 0; k < count; ++k) layout_.set_idx(blk, page_, cap(p), have + k, idx[k]);
  }
  layout_.set_ptr(blk, slot + 1, uint32_t(have + count));
  ++n_rows_;
  nnz_ += count;
  // A full page is shrunk to its exact size until seal_full_pages() seals it.
  if (slot + 1 == size_t(page_) && cap(p) > have + count) (void)reallocate(p, have + count);
  return ok_status();
}

void PagedOutliers::seal_full_pages() {
  if (!layout_.can_seal(page_)) return;
  for (; seal_from_ < pages_.size() && rows_in(seal_from_) == size_t(page_); ++seal_from_) {
    if (!sealed(seal_from_) && !seal(seal_from_)) return;  // the pool refused: next time
  }
}

void PagedOutliers::truncate(size_t n_rows) {
  if (n_rows >= n_rows_) return;
  const size_t keep_pages = (n_rows + size_t(page_) - 1) / size_t(page_);
  for (size_t p = keep_pages; p < pages_.size(); ++p) {
    nnz_ -= page_nnz(p);
    release(p);
  }
  if (keep_pages > 0) {
    const size_t p = keep_pages - 1, keep = n_rows - p * size_t(page_);
    if (!sealed(p)) {
      nnz_ -= ptr(p, rows_in(p)) - ptr(p, keep);
    } else {
      // Each head keeps its entries of slots below `keep`, moved down in place.
      uint8_t* blk = pages_[p];
      uint8_t* val = blk + layout_.sealed_val_offset();
      uint8_t* cell = blk + layout_.sealed_cell_offset(cap(p));
      const uint32_t bound = uint32_t(keep) << layout_.ch_bits;
      uint32_t w = 0, from = ptr(p, 0);
      for (size_t h = 0; h < layout_.n_heads; ++h) {
        const uint32_t end = ptr(p, h + 1);
        layout_.set_ptr(blk, h, w);
        for (uint32_t k = from; k < end; ++k) {
          if (layout_.cell_at(blk, k) >= bound) continue;
          std::memmove(val + w * OutlierLayout::kValBytes, val + k * OutlierLayout::kValBytes, OutlierLayout::kValBytes);
          std::memmove(cell + w * OutlierLayout::kCellBytes, cell + k * OutlierLayout::kCellBytes, OutlierLayout::kCellBytes);
          ++w;
        }
        from = end;
      }
      nnz_ -= page_nnz(p) - w;
      layout_.set_ptr(blk, layout_.n_heads, w);
    }
  }
  pages_.resize(keep_pages);
  n_rows_ = n_rows;
  seal_from_ = std::min(seal_from_, n_rows / size_t(page_));
}

void PagedOutliers::drop_front_pages(size_t n) {
  KVQ_CHECK(n % size_t(page_) == 0 && n <= n_rows_);
  const size_t np = n / size_t(page_);
  for (size_t p = 0; p < np; ++p) {
    nnz_ -= page_nnz(p);
    release(p);
  }
  pages_.erase(pages_.begin(), pages_.begin() + ptrdiff_t(np));
  n_rows_ -= n;
  seal_from_ -= std::min(seal_from_, np);
}

void PagedOutliers::write(ByteWriter& w) const {
  for (size_t p = 0; p < pages_.size(); ++p) w.write(pages_[p], layout_.bytes_of(pages_[p], page_));
}

namespace {

// What is wrong with a growing page's `rows` row pointers and indices, or "" (pointers are
// checked before the entries they bound are read).
std::string check_growing(const OutlierLayout& lay, const uint8_t* blk, int page, size_t rows, size_t row_values) {
  const uint32_t c = OutlierLayout::cap_of(blk);
  if (lay.ptr_at(blk, 0) != 0 || lay.ptr_at(blk, rows) > c) {
    return "row pointers outside the page's " + std::to_string(c) + " outliers";
  }
  for (size_t s = 0; s < rows; ++s) {
    // Each pointer is checked before the row's entries are read: a later one may be in range
    // while this one points past the page's outliers.
    const uint32_t lo = lay.ptr_at(blk, s), hi = lay.ptr_at(blk, s + 1);
    if (hi < lo) return "row pointers descend at row " + std::to_string(s);
    if (hi > c) return "row " + std::to_string(s) + " points past the page's " + std::to_string(c) + " outliers";
    for (uint32_t k = lo; k < hi; ++k) {
      const uint32_t i = lay.idx_at(blk, page, c, k);
      if (i >= row_values || (k > lo && i <= lay.idx_at(blk, page, c, k - 1))) {
        return "row " + std::to_string(s) + " has outlier index " + std::to_string(i) +
               " out of order or beyond the row's " + std::to_string(row_values) + " values";
      }
    }
  }
  return "";
}

// The same for a sealed page: head pointers, then each head's cells.
std::string check_sealed(const OutlierLayout& lay, const uint8_t* blk, size_t rows, size_t head_dim) {
  const uint32_t c = OutlierLayout::cap_of(blk);
  if (lay.ptr_at(blk, 0) != 0) return "head pointers do not start at 0";
  for (size_t h = 0; h < lay.n_heads; ++h) {
    const uint32_t lo = lay.ptr_at(blk, h), hi = lay.ptr_at(blk, h + 1);
    if (hi < lo) return "head pointers descend at head " + std::to_string(h);
    if (hi > c) return "head " + std::to_string(h) + " points past the page's " + std::to_string(c) + " outliers";
    for (uint32_t k = lo; k < hi; ++k) {
      const uint32_t cell = lay.cell_at(blk, k), slot = cell >> lay.ch_bits;
      const uint32_t ch = cell & ((1u << lay.ch_bits) - 1u);
      if (slot >= rows || ch >= head_dim || (k > lo && cell <= lay.cell_at(blk, k - 1))) {
        return "head " + std::to_string(h) + " has outlier (token " + std::to_string(slot) + ", channel " +
               std::to_string(ch) + ") out of order or beyond the page's " + std::to_string(rows) + " tokens of " +
               std::to_string(head_dim) + " channels";
      }
    }
  }
  return "";
}

}  // namespace

Status PagedOutliers::read(ByteReader& r, size_t n_rows, std::string_view what) {
  KVQ_CHECK(n_rows_ == 0 && pages_.empty());
  const std::string name(what);
  for (size_t p = 0; p * size_t(page_) < n_rows; ++p) {
    const size_t rows = std::min(n_rows - p * size_t(page_), size_t(page_));
    uint32_t word = 0;
    KVQ_RETURN_IF_ERROR(r.get(&word, what));
    const bool is_sealed = (word & OutlierLayout::kSealed) != 0;
    const uint32_t c = word & ~OutlierLayout::kSealed;
    // The bound that also keeps every pointer within its width (OutlierLayout::for_rows).
    if (c > OutlierLayout::max_cap(row_values(), page_)) {
      return r.corrupt(name + ": page " + std::to_string(p) + " claims room for " + std::to_string(c) +
                       " outliers, more than its " + std::to_string(page_) + " rows of " + std::to_string(row_values()) +
                       " values hold");
    }
    if (is_sealed && !layout_.can_seal(page_)) {
      return r.corrupt(name + ": page " + std::to_string(p) + " is sealed, which heads of " + std::to_string(head_dim_) +
                       " values cannot be");
    }
    const size_t b = is_sealed ? layout_.sealed_block_bytes(c) : layout_.block_bytes(page_, c);
    if (b - 4 > r.left()) return r.take(b - 4, what).status();
    uint8_t* blk = pool_->acquire(b);
    if (!blk) return out_of_memory("cannot allocate a KV cache outlier page of " + std::to_string(b) + " bytes");
    std::memcpy(blk, &word, 4);
    if (Status s = r.read(blk + 4, b - 4, what); !s.ok()) {
      pool_->release(blk, b);
      return s;
    }
    // The block is b bytes, read in full; pointers and the c entries lie inside it by its
    // layout, and an entry is read only below a checked pointer.
    const std::string bad =
        is_sealed ? check_sealed(layout_, blk, rows, head_dim_) : check_growing(layout_, blk, page_, rows, row_values());
    if (!bad.empty()) {
      pool_->release(blk, b);
      return r.corrupt(name + ": outlier page " + std::to_string(p) + ": " + bad);
    }
    pages_.push_back(blk);
    bytes_ += b;
    n_rows_ += rows;
    nnz_ += page_nnz(p);
  }
  return ok_status();
}

}  // namespace kvq
