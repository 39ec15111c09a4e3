// SPDX-License-Identifier: MIT
// One of K/V of one cache layer as attention reads it: plain data over the store's own pages
// (no copies), valid until the cache changes. A store is up to three segments of consecutive
// positions — fp16 attention sinks, the packed body, the fp16 window of recent tokens — and
// each segment maps a (KV head, token range) to a KvRun (kernels/kv_run.h) for the kernels.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/kv_run.h"

namespace kvq {

struct KvSegment {
  int t0 = 0;  // first position
  int n = 0;   // tokens
  // Token i of the segment (i < n) lives on page i / page_tokens at slot i % page_tokens;
  // pages == nullptr: one page at `base` holds them all.
  const uint8_t* const* pages = nullptr;
  const uint8_t* base = nullptr;
  int page_tokens = 0;
  size_t token_stride = 0;  // bytes from slot s to s + 1 within a head
  size_t head_stride = 0;   // bytes from head h to h + 1
  size_t head0_off = 0;     // bytes from a token's record to head 0's data
  // KvRun template for head 0, slot 0: format, bits, group, levels, scale/zero/norm offsets,
  // per-channel arrays over the whole K/V vector, outlier arrays over the segment's tokens.
  KvRun proto;
  ptrdiff_t scales_head_step = 0;  // extra scale/zero offset per head beyond head_stride
  bool scales_per_page = false;    // scales sit at a fixed place of the page (KIVI key blocks)

  // Tokens [i, i + count) of head h; the range must lie inside one page.
  KvRun run(int h, int i, int count) const {
    const int page = page_tokens > 0 ? i / page_tokens : 0;
    const int slot = page_tokens > 0 ? i % page_tokens : i;
    KvRun r = proto;
    r.n = count;
    r.rows = (pages ? pages[page] : base) + head0_off + size_t(h) * head_stride + size_t(slot) * token_stride;
    const ptrdiff_t step = ptrdiff_t(h) * scales_head_step -
                           (scales_per_page ? ptrdiff_t(slot) * ptrdiff_t(token_stride) : 0);
    r.scales_off += step;
    r.zeros_off += step;
    r.norm_off -= ptrdiff_t(h) * ptrdiff_t(head_stride) + ptrdiff_t(head0_off);
    const size_t ch = size_t(h) * size_t(proto.head_dim);
    if (r.ch_half) r.ch_half += ch;
    if (r.ch_zero) r.ch_zero += ch;
    r.out_ch0 = int(ch);
    if (r.out_ptr) r.out_ptr += i;
    return r;
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
  int n_segments = 0;
  KvSegment seg[3];
  KvSegment& add() { return seg[n_segments++]; }
};

// An fp16 segment of token-major rows [n_kv_heads * head_dim] (sinks, windows, dense stores).
inline KvSegment f16_rows_segment(int t0, int n, int n_kv_heads, int head_dim, const uint8_t* const* pages,
                                  const uint8_t* base, int page_tokens) {
  KvSegment s;
  s.t0 = t0;
  s.n = n;
  s.pages = pages;
  s.base = base;
  s.page_tokens = page_tokens;
  s.token_stride = size_t(n_kv_heads) * size_t(head_dim) * 2;
  s.head_stride = size_t(head_dim) * 2;
  s.proto.format = KvFormat::kF16;
  s.proto.head_dim = head_dim;
  s.proto.stride = s.token_stride;
  return s;
}

}  // namespace kvq
