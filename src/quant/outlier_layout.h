// SPDX-License-Identifier: MIT
// The one layout of a page of KVQuant's sparse outliers (§3.4, CSR by token), shared by the
// store (kv/paged_outliers.h), the kernels' view (kernels/kv_run.h), session files (written as
// in memory) and the bits accounting (bits_accounting.cc). One page covers page_tokens rows
// of a store whose rows hold row_values (d_kv) values:
//   [cap: uint32] [row_ptr: P x (page_tokens + 1)] [val: f16 x cap] [idx: I x cap]
// Row s of the page is [row_ptr[s], row_ptr[s + 1]) of val / idx, page-local offsets.
// The widths are fixed per store at construction, from its shape alone, so they cost no branch
// per page: I = uint8 when every index of a row fits (d_kv <= 256), else uint16; P = uint16
// when a full page of outliers fits (page_tokens * d_kv <= 65535), else uint32. Values come
// before indices so that every piece stays aligned to its width whatever the capacity.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace kvq {

struct OutlierLayout {
  uint8_t ptr_bytes = 4;  // 2 or 4
  uint8_t idx_bytes = 2;  // 1 or 2

  static constexpr size_t kCapBytes = 4;
  static constexpr size_t kValBytes = 2;  // f16
  static constexpr size_t kMaxNarrowIdx = 256;      // uint8 indices 0..255
  static constexpr size_t kMaxNarrowPtr = 65535;    // uint16 offsets

  // The widths a store of rows of row_values values, paged by page_tokens, uses.
  static constexpr OutlierLayout for_rows(size_t row_values, int page_tokens) {
    OutlierLayout l;
    l.idx_bytes = row_values <= kMaxNarrowIdx ? 1 : 2;
    l.ptr_bytes = size_t(page_tokens) * row_values <= kMaxNarrowPtr ? 2 : 4;
    return l;
  }
  // The most outliers a page may hold (every value of every row), and so the largest row
  // pointer: what the pointer width must carry.
  static constexpr size_t max_cap(size_t row_values, int page_tokens) { return size_t(page_tokens) * row_values; }

  constexpr size_t ptr_offset() const { return kCapBytes; }
  constexpr size_t val_offset(int page_tokens) const { return kCapBytes + size_t(ptr_bytes) * (size_t(page_tokens) + 1); }
  constexpr size_t idx_offset(int page_tokens, size_t cap) const { return val_offset(page_tokens) + cap * kValBytes; }
  constexpr size_t block_bytes(int page_tokens, size_t cap) const {
    return idx_offset(page_tokens, cap) + cap * idx_bytes;
  }
  // What accounting charges: bytes per outlier, per row (its pointer) and per page beyond its
  // rows' pointers (the capacity and the extra leading pointer).
  constexpr size_t bytes_per_outlier() const { return kValBytes + idx_bytes; }
  constexpr size_t bytes_per_row() const { return ptr_bytes; }
  constexpr size_t bytes_per_page() const { return kCapBytes + ptr_bytes; }

  // Generic (unhurried) readers of a block, for validation and the scalar store paths; the
  // kernels read typed pointers (kernels/kv_run.h).
  static uint32_t cap_of(const uint8_t* block) {
    uint32_t c;
    std::memcpy(&c, block, 4);
    return c;
  }
  uint32_t ptr_at(const uint8_t* block, size_t s) const {
    const uint8_t* p = block + ptr_offset() + s * ptr_bytes;
    if (ptr_bytes == 2) {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return v;
    }
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
  }
  void set_ptr(uint8_t* block, size_t s, uint32_t v) const {
    uint8_t* p = block + ptr_offset() + s * ptr_bytes;
    if (ptr_bytes == 2) {
      const auto v16 = uint16_t(v);
      std::memcpy(p, &v16, 2);
    } else {
      std::memcpy(p, &v, 4);
    }
  }
  uint32_t idx_at(const uint8_t* block, int page_tokens, size_t cap, size_t k) const {
    const uint8_t* p = block + idx_offset(page_tokens, cap) + k * idx_bytes;
    if (idx_bytes == 1) return *p;
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
  }
};

// The testbed (d_kv 128, 64-token pages) and a LLaMA-7B-like store (d_kv 4096) take the
// narrow and the wide layout; the pieces stay aligned to their widths.
static_assert(OutlierLayout::for_rows(128, 64).idx_bytes == 1 && OutlierLayout::for_rows(128, 64).ptr_bytes == 2);
static_assert(OutlierLayout::for_rows(256, 64).idx_bytes == 1 && OutlierLayout::for_rows(257, 64).idx_bytes == 2);
static_assert(OutlierLayout::for_rows(512, 64).ptr_bytes == 2 && OutlierLayout::for_rows(1024, 64).ptr_bytes == 4);
static_assert(OutlierLayout::for_rows(4096, 64).idx_bytes == 2 && OutlierLayout::for_rows(4096, 64).ptr_bytes == 4);
static_assert(OutlierLayout::for_rows(128, 64).val_offset(64) % 2 == 0 && OutlierLayout::for_rows(4096, 64).val_offset(64) % 4 == 0);
static_assert(OutlierLayout::for_rows(128, 64).block_bytes(64, 3) == 4 + 65 * 2 + 3 * 3);

}  // namespace kvq
