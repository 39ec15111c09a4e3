// SPDX-License-Identifier: MIT
// The one layout of a page of KVQuant's sparse outliers (§3.4), shared by the store
// (kv/paged_outliers.h), the kernels' view (kernels/kv_run.h), session files (written as in
// memory) and the bits accounting (bits_accounting.cc). One page covers page_tokens rows of a
// store whose rows hold row_values = n_heads * head_dim values, in one of two forms, told
// apart by the top bit of its first word:
//   growing (CSR by token, while the page fills):
//     [cap: uint32] [row_ptr: P x (page_tokens + 1)] [val: f16 x cap] [idx: I x cap]
//     row s of the page is [row_ptr[s], row_ptr[s + 1]) of val / idx, page-local offsets;
//   sealed (CSR by KV head, once the page is full; what attention reads):
//     [cap | kSealed: uint32] [head_ptr: P x (n_heads + 1)] [val: f16 x cap] [cell: uint16 x cap]
//     head h's entries are [head_ptr[h], head_ptr[h + 1]), ascending cells, each
//     cell = slot << ch_bits | channel within the head.
// A sealed page lets attention take a (page, head) run's outliers as one list: no search of
// each token's entries for the head's range, which cost a third of KVQuant's decode attention
// (docs/PERFORMANCE.md). It carries no pointer per token, but a 2-byte cell per outlier: about
// the size of the growing form.
// The widths are fixed per store at construction, from its shape alone, so they cost no branch
// per page: I = uint8 when every index of a row fits (row_values <= 256), else uint16; P =
// uint16 when a full page of outliers fits (page_tokens * row_values <= 65535), else uint32;
// ch_bits = the bits of head_dim - 1 (a cell fits uint16 for head_dim <= 1024). Values come
// before indices so that every piece stays aligned to its width whatever the capacity.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace kvq {

struct OutlierLayout {
  uint8_t ptr_bytes = 4;  // 2 or 4
  uint8_t idx_bytes = 2;  // 1 or 2
  uint8_t ch_bits = 0;    // sealed cells: bits of a channel within a head
  uint16_t n_heads = 0;   // sealed pages: heads per row

  static constexpr size_t kCapBytes = 4;
  static constexpr size_t kValBytes = 2;  // f16
  static constexpr size_t kCellBytes = 2;  // uint16 cells of sealed pages
  static constexpr size_t kMaxNarrowIdx = 256;      // uint8 indices 0..255
  static constexpr size_t kMaxNarrowPtr = 65535;    // uint16 offsets
  static constexpr uint32_t kSealed = 1u << 31;     // first word: a sealed page

  // The widths a store of rows of n_heads heads of head_dim values, paged by page_tokens,
  // uses. Pages of such a store can be sealed only when can_seal(page_tokens).
  static constexpr OutlierLayout for_rows(int n_heads, int head_dim, int page_tokens) {
    OutlierLayout l;
    const size_t row_values = size_t(n_heads) * size_t(head_dim);
    l.idx_bytes = row_values <= kMaxNarrowIdx ? 1 : 2;
    l.ptr_bytes = size_t(page_tokens) * row_values <= kMaxNarrowPtr ? 2 : 4;
    while ((1 << l.ch_bits) < head_dim) ++l.ch_bits;
    l.n_heads = uint16_t(n_heads);
    return l;
  }
  // Whether a page's cells fit uint16: slots below page_tokens, channels below 2^ch_bits.
  constexpr bool can_seal(int page_tokens) const { return (size_t(page_tokens) << ch_bits) <= 65536; }
  // The most outliers a page may hold (every value of every row), and so the largest row
  // pointer: what the pointer width must carry.
  static constexpr size_t max_cap(size_t row_values, int page_tokens) { return size_t(page_tokens) * row_values; }

  constexpr size_t ptr_offset() const { return kCapBytes; }
  constexpr size_t val_offset(int page_tokens) const { return kCapBytes + size_t(ptr_bytes) * (size_t(page_tokens) + 1); }
  constexpr size_t idx_offset(int page_tokens, size_t cap) const { return val_offset(page_tokens) + cap * kValBytes; }
  constexpr size_t block_bytes(int page_tokens, size_t cap) const {
    return idx_offset(page_tokens, cap) + cap * idx_bytes;
  }
  // Sealed pages.
  constexpr size_t sealed_val_offset() const { return kCapBytes + size_t(ptr_bytes) * (size_t(n_heads) + 1); }
  constexpr size_t sealed_cell_offset(size_t cap) const { return sealed_val_offset() + cap * kValBytes; }
  constexpr size_t sealed_block_bytes(size_t cap) const { return sealed_cell_offset(cap) + cap * kCellBytes; }

  // Generic (unhurried) readers of a block, for validation and the scalar store paths; the
  // kernels read typed pointers (kernels/kv_run.h).
  static uint32_t word_of(const uint8_t* block) {
    uint32_t c;
    std::memcpy(&c, block, 4);
    return c;
  }
  static uint32_t cap_of(const uint8_t* block) { return word_of(block) & ~kSealed; }
  static bool sealed_of(const uint8_t* block) { return (word_of(block) & kSealed) != 0; }
  // Bytes of a block in either form.
  size_t bytes_of(const uint8_t* block, int page_tokens) const {
    return sealed_of(block) ? sealed_block_bytes(cap_of(block)) : block_bytes(page_tokens, cap_of(block));
  }
  // Entry k's index of a growing block of capacity cap: written at the layout's width.
  void set_idx(uint8_t* block, int page_tokens, size_t cap, size_t k, uint32_t i) const {
    uint8_t* p = block + idx_offset(page_tokens, cap) + k * idx_bytes;
    if (idx_bytes == 1) {
      *p = uint8_t(i);
    } else {
      const auto i16 = uint16_t(i);
      std::memcpy(p, &i16, 2);
    }
  }
  uint16_t cell_at(const uint8_t* block, size_t k) const {
    uint16_t v;
    std::memcpy(&v, block + sealed_cell_offset(cap_of(block)) + k * kCellBytes, 2);
    return v;
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

// The testbed (2 heads of 64: d_kv 128, 64-token pages) and a LLaMA-7B-like store (32 heads of
// 128: d_kv 4096) take the narrow and the wide layout; the pieces stay aligned to their widths.
constexpr OutlierLayout kTestbedOutliers = OutlierLayout::for_rows(2, 64, 64);
constexpr OutlierLayout kLlama7bOutliers = OutlierLayout::for_rows(32, 128, 64);
static_assert(kTestbedOutliers.idx_bytes == 1 && kTestbedOutliers.ptr_bytes == 2 && kTestbedOutliers.ch_bits == 6);
static_assert(OutlierLayout::for_rows(4, 64, 64).idx_bytes == 1 && OutlierLayout::for_rows(257, 1, 64).idx_bytes == 2);
static_assert(OutlierLayout::for_rows(8, 64, 64).ptr_bytes == 2 && OutlierLayout::for_rows(16, 64, 64).ptr_bytes == 4);
static_assert(kLlama7bOutliers.idx_bytes == 2 && kLlama7bOutliers.ptr_bytes == 4 && kLlama7bOutliers.ch_bits == 7);
static_assert(kTestbedOutliers.val_offset(64) % 2 == 0 && kLlama7bOutliers.val_offset(64) % 4 == 0);
static_assert(kTestbedOutliers.block_bytes(64, 3) == 4 + 65 * 2 + 3 * 3);
static_assert(kTestbedOutliers.sealed_block_bytes(3) == 4 + 3 * 2 + 3 * 4);
static_assert(kLlama7bOutliers.sealed_val_offset() % 4 == 0 && kLlama7bOutliers.sealed_block_bytes(2) == 4 + 33 * 4 + 2 * 4);
static_assert(kLlama7bOutliers.can_seal(64) && OutlierLayout::for_rows(1, 1024, 64).can_seal(64) &&
              !OutlierLayout::for_rows(1, 1025, 64).can_seal(64));

}  // namespace kvq
