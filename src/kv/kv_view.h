// SPDX-License-Identifier: MIT
// One of K/V of one cache layer as attention reads it: plain data over the store's own pages
// (no copies), valid until the cache changes. A store is up to three segments of consecutive
// positions — fp16 attention sinks, the packed body, the fp16 window of recent tokens — and
// each segment maps a (KV head, token range) to a KvRun (kernels/kv_run.h) for the kernels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/kv_run.h"

namespace kvq {

// One KV head's part of a segment whose heads differ in code width (kvquant-mixed with widths
// per head): within a page its rows start at `offset` and are `stride` bytes apart, coded at
// `bits` with decode levels `levels` (2-bit values: also in int8 steps, KvRun::levels_q).
struct KvHeadPart {
  size_t offset = 0, stride = 0;
  int bits = 0;
  const float* levels = nullptr;
  const int8_t* levels_q = nullptr;
  float level_step = 0.0f;
};

struct KvSegment {
  int t0 = 0;  // first position
  int n = 0;   // tokens
  // Token i of the segment (i < n) lives on page i / page_tokens at slot i % page_tokens;
  // pages == nullptr: one page at `base` holds them all.
  const uint8_t* const* pages = nullptr;
  const uint8_t* base = nullptr;
  int page_tokens = 0;
  // Within a page, head h's row of slot s starts at h * head_stride + s * token_stride, and
  // its per-token metadata (scales, norms) at meta_off + h * meta_head_step + s * meta_stride
  // (meta_stride 0: one per page, as KIVI's per-block key scales).
  size_t token_stride = 0;
  size_t head_stride = 0;
  size_t meta_off = 0;
  ptrdiff_t meta_head_step = 0;
  size_t meta_stride = 0;
  // KvRun template: format, bits, group, levels, per-channel arrays over the whole K/V
  // vector; its scales/zeros/norm offsets are relative to the metadata of the run's first
  // token.
  KvRun proto;
  // Sparse outliers per page (null: none), paged like the rows: blocks of out_layout, growing
  // or sealed (quant/outlier_layout.h, kv/paged_outliers.h).
  const uint8_t* const* out_pages = nullptr;
  OutlierLayout out_layout;
  // Per-head layout and width ([n_kv_heads], owned by the store; null: every head as proto
  // with head_stride and token_stride).
  const KvHeadPart* heads = nullptr;

  // *out: tokens [i, i + count) of head h; the range must lie inside one page. Written where
  // the caller keeps it, not returned: a run built on the stack and copied at once was read back
  // in 16-byte pieces over the fields just stored one by one, and those stalls with the zeroing
  // of the run it was copied into were half of attention's walk, ~12% of kivi-2's decode
  // attention in cache (docs/PERFORMANCE.md, "Attention's walk without copies").
  void run(int h, int i, int count, KvRun* out) const {
    const int page = page_tokens > 0 ? i / page_tokens : 0;
    const int slot = page_tokens > 0 ? i % page_tokens : i;
    const uint8_t* p = pages ? pages[page] : base;
    KvRun& r = *out;
    r = proto;
    r.n = count;
    size_t row_off = size_t(h) * head_stride + size_t(slot) * token_stride;
    r.stride = token_stride;
    if (heads) {
      const KvHeadPart& hp = heads[h];
      row_off = hp.offset + size_t(slot) * hp.stride;
      r.stride = hp.stride;
      r.bits = hp.bits;
      r.levels = hp.levels;
      r.levels_q = hp.levels_q;
      r.level_step = hp.level_step;
    }
    r.rows = p + row_off;
    r.meta_stride = meta_stride;
    const ptrdiff_t meta = ptrdiff_t(meta_off) + ptrdiff_t(h) * meta_head_step + ptrdiff_t(slot * meta_stride) -
                           ptrdiff_t(row_off);
    r.scales_off += meta;
    r.zeros_off += meta;
    r.norm_off += meta;
    const size_t ch = size_t(h) * size_t(proto.head_dim);
    if (r.ch_half) r.ch_half += ch;
    if (r.ch_zero) r.ch_zero += ch;
    r.out_ch0 = int(ch);
    if (out_pages) {
      const uint8_t* b = out_pages[page];
      r.out_layout = out_layout;
      if (OutlierLayout::sealed_of(b)) {  // the head's list of the page (quant/outlier_layout.h)
        r.out_sealed = true;
        r.out_slot0 = slot;
        r.out_ptr = b + out_layout.ptr_offset() + size_t(h) * out_layout.ptr_bytes;
        r.out_val = reinterpret_cast<const f16_t*>(b + out_layout.sealed_val_offset());
        r.out_idx = b + out_layout.sealed_cell_offset(OutlierLayout::cap_of(b));
      } else {
        r.out_ptr = b + out_layout.ptr_offset() + size_t(slot) * out_layout.ptr_bytes;
        r.out_val = reinterpret_cast<const f16_t*>(b + out_layout.val_offset(page_tokens));
        r.out_idx = b + out_layout.idx_offset(page_tokens, OutlierLayout::cap_of(b));
      }
    }
  }
  // Tokens of the page that holds token i, from i on.
  int page_left(int i) const { return page_tokens > 0 ? page_tokens - i % page_tokens : n - i; }
};

struct KvStoreView {
  int n_tokens = 0;
  bool pre_rope = false;  // keys stored before RoPE: attention rotates them
  // An f16 store attended as llama.cpp does: f16 x f16 products, so the query (keys) or the
  // probabilities (values) are rounded to f16 too. What makes f16 caches match its goldens.
  bool f16_numerics = false;
  // A q4_0 / q8_0 store's keys scored as llama.cpp scores them: the query (rotated first, for
  // rot=1) rounded to q8_0 blocks, ggml's vec_dot_type for these keys (kernels/cpu/kv_fused.h).
  bool q8_0_queries = false;
  // Rows stored in the randomized Hadamard basis (kernels/ref/hadamard_ref.h): attention
  // rotates the query (keys) or rotates its output back (values).
  bool rotated = false;
  int n_segments = 0;
  KvSegment seg[3];
  KvSegment& add() { return seg[n_segments++]; }
};

// An fp16 window: token-major rows [n, n_kv_heads * head_dim] at base (KIVI's newest tokens).
inline KvSegment f16_window_segment(int t0, int n, int n_kv_heads, int head_dim, const uint8_t* base) {
  KvSegment s;
  s.t0 = t0;
  s.n = n;
  s.base = base;
  s.token_stride = size_t(head_dim) * 2 * size_t(n_kv_heads);
  s.head_stride = size_t(head_dim) * 2;
  s.proto.format = KvFormat::kF16;
  s.proto.head_dim = head_dim;
  return s;
}

}  // namespace kvq
