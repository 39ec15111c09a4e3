// SPDX-License-Identifier: MIT
// A ring of fixed-size rows in one PagePool block: KIVI's fp16 window of recent tokens. Rows
// are pushed at the back and flushed from the front without moving the others, and the block
// is only reallocated when a step needs more rows than it holds (a prefill chunk), so decode
// never allocates. Contiguous pieces (at most two) are what attention reads.
#pragma once

#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>

#include "base/check.h"
#include "base/fp16.h"
#include "io/byte_stream.h"
#include "kernels/cpu/ops.h"
#include "kv/page_pool.h"
#include "kvq/status.h"
#include "quant/common.h"

namespace kvq {

class RowRing {
 public:
  RowRing() = default;
  RowRing(PagePool* pool, size_t row_bytes) : pool_(pool), row_(row_bytes) {}

  int size() const { return n_; }
  int capacity() const { return cap_; }
  size_t bytes() const { return block_.cost(); }
  // Row i from the front (oldest first).
  uint8_t* row(int i) {
    KVQ_DCHECK(i >= 0 && i < n_);
    return block_.data() + size_t((head_ + i) % cap_) * row_;
  }
  const uint8_t* row(int i) const { return const_cast<RowRing*>(this)->row(i); }
  // Moves the rows to a block of exactly cap rows (>= size()). kOutOfMemory changes nothing.
  Status reallocate(int cap) {
    KVQ_CHECK(cap >= n_);
    if (cap == cap_) return ok_status();
    PoolBlock b;
    if (cap > 0) {
      b = PoolBlock(pool_, size_t(cap) * row_);
      if (!b.ok()) return out_of_memory("cannot allocate a KV cache window of " + std::to_string(cap) + " rows");
      for (int i = 0; i < n_; ++i) std::memcpy(b.data() + size_t(i) * row_, row(i), row_);
    }
    block_ = std::move(b);
    cap_ = cap;
    head_ = 0;
    return ok_status();
  }
  // Adds n rows at the back (contents unspecified), growing to at least min_cap rows.
  Status push(int n, int min_cap) {
    if (n_ + n > cap_) KVQ_RETURN_IF_ERROR(reallocate(std::max(n_ + n, min_cap)));
    n_ += n;
    return ok_status();
  }
  // Adds x [n, row_bytes / 2] at the back as fp16 rows (the windows' rows), growing to at least
  // min_cap rows. A value that is not finite or beyond fp16's range is refused first (`what`
  // names the input), before anything changes.
  Status push_f16(const float* x, int n, int min_cap, const char* what) {
    const size_t values = row_ / sizeof(f16_t);
    KVQ_RETURN_IF_ERROR(check_finite(x, size_t(n) * values, what, true));
    const int old = n_;
    KVQ_RETURN_IF_ERROR(push(n, min_cap));
    for (int t = 0; t < n; ++t) cpu::convert_f32_to_f16(x + size_t(t) * values, reinterpret_cast<f16_t*>(row(old + t)), values);
    return ok_status();
  }
  // Back to a block of `rows` rows once it holds no more (after a prefill chunk): a smaller
  // block, so it can fail only for lack of memory, which keeps the larger one.
  void shrink(int rows) {
    if (cap_ > rows && n_ <= rows) (void)reallocate(rows);
  }
  void pop_front(int n) {
    KVQ_CHECK(n >= 0 && n <= n_);
    if (cap_ > 0) head_ = (head_ + n) % cap_;
    n_ -= n;
  }
  void truncate(int n) { n_ = std::min(n_, n); }
  // Moves the rows to the block's start (oldest first), so that they are one piece.
  void compact() {
    if (head_ == 0 || n_ == 0) {
      head_ = 0;
      return;
    }
    uint8_t* b = block_.data();
    if (head_ + n_ <= cap_) {
      std::memmove(b, b + size_t(head_) * row_, size_t(n_) * row_);
    } else {  // wrapped: rotate the block left by head_ rows
      std::rotate(b, b + size_t(head_) * row_, b + size_t(cap_) * row_);
    }
    head_ = 0;
  }
  // Removes rows [i0, i0 + n), moving the later ones down.
  void erase(int i0, int n) {
    KVQ_CHECK(i0 >= 0 && n >= 0 && i0 + n <= n_);
    for (int i = i0; i + n < n_; ++i) std::memcpy(row(i), row(i + n), row_);
    n_ -= n;
  }
  // Sessions (engine/session.h): capacity, head and size (uint32 each), then the whole block
  // as in memory, so a restored ring costs what it did and keeps its rows where they were.
  void write(ByteWriter& w) const {
    const uint32_t hdr[3] = {uint32_t(cap_), uint32_t(head_), uint32_t(n_)};
    w.write(hdr, sizeof hdr);
    if (cap_ > 0) w.write(block_.data(), size_t(cap_) * row_);
  }
  // Reads what write() wrote into this (empty) ring: exactly n rows, capacity at most max_cap.
  Status read(ByteReader& r, int n, int max_cap, std::string_view what) {
    KVQ_CHECK(cap_ == 0 && n_ == 0);
    uint32_t hdr[3];
    KVQ_RETURN_IF_ERROR(r.read(hdr, sizeof hdr, what));
    const uint32_t cap = hdr[0], head = hdr[1], size = hdr[2];
    if (cap > uint32_t(max_cap) || size != uint32_t(n) || size > cap || (cap > 0 ? head >= cap : head != 0)) {
      return r.corrupt(std::string(what) + ": a window of " + std::to_string(size) + " rows (head " +
                       std::to_string(head) + ", capacity " + std::to_string(cap) + ") where " + std::to_string(n) +
                       " rows and a capacity of at most " + std::to_string(max_cap) + " fit");
    }
    if (size_t(cap) * row_ > r.left()) return r.take(size_t(cap) * row_, what).status();
    KVQ_RETURN_IF_ERROR(reallocate(int(cap)));
    KVQ_RETURN_IF_ERROR(r.read(block_.data(), size_t(cap) * row_, what));
    head_ = int(head);
    n_ = int(size);
    return ok_status();
  }

  // The rows as at most two contiguous pieces, oldest first: piece k is count[k] rows at base[k].
  int pieces(const uint8_t* base[2], int count[2]) const {
    if (n_ == 0) return 0;
    const int first = std::min(n_, cap_ - head_);
    base[0] = block_.data() + size_t(head_) * row_;
    count[0] = first;
    if (first == n_) return 1;
    base[1] = block_.data();
    count[1] = n_ - first;
    return 2;
  }

 private:
  PagePool* pool_ = nullptr;
  size_t row_ = 0;
  PoolBlock block_;
  int cap_ = 0, head_ = 0, n_ = 0;
};

}  // namespace kvq
