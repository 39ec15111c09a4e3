// SPDX-License-Identifier: MIT
// A run of consecutive tokens of one KV head, as the cache stores them: the plain view that the
// attention kernels read packed bytes through. Only attention/ builds runs (from the cache's
// per-layer views, kv/kv_view.h); kernels know formats, never cache classes.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "base/fp16.h"
#include "quant/outlier_layout.h"

namespace kvq {

// Stored row formats. Each has a scalar decoder (kernels/ref) that is its specification.
enum class KvFormat : uint8_t {
  kF32,         // float [head_dim]
  kF16,         // f16 [head_dim]
  kQ8_0,        // ggml block_q8_0 [head_dim / 32]
  kQ4_0,        // ggml block_q4_0 [head_dim / 32]
  kUniformRow,  // int-b / KIVI values: packed codes, f16 scale + zero per group of `group` values
  kUniformCols, // KIVI keys: rows of one G-token block, one f16 scale + zero per channel
  kCodebookPc,  // KVQuant keys: codebook level * half_c + zero_c per channel, sparse outliers
  kCodebookRow, // KVQuant values: codebook level * half + zero per token, sparse outliers
};

const char* kv_format_name(KvFormat f);


// KIVI keys and 2- and 4-bit per-token-group values are scored / accumulated in integers against a
// query or weights rounded to 8 bits (kernels/ref/kv_decode_ref.h): a set whose largest term is
// below this is taken as all zero (its terms are below float resolution, and 127 or 255 over it
// would overflow).
inline constexpr float kRoundedMaxFloor = 1e-30f;

// 2-bit KVQuant values accumulate in integers too: the run's four codebook levels are rounded to
// int8 steps of max|level| / s, s at most kLevelSteps (ref::round_levels_ref). 63, not 127, so
// that a pair of products of a uint8 weight and a level (2 * 255 * 63 = 32130) fits pmaddubsw's
// int16 sums without saturating: AVX2's pmaddubsw + pmaddwd and VNNI's vpdpbusd give the same
// integers.
inline constexpr int kLevelSteps = 63;

struct KvRun {
  KvFormat format = KvFormat::kF16;
  int n = 0;            // tokens
  int head_dim = 0;
  int bits = 0;         // code width (packed formats)
  const uint8_t* rows = nullptr;  // token 0 of the run, this head
  size_t stride = 0;              // bytes from token t to t + 1
  // Per-token metadata of token t lives at rows + X_off + t * meta_stride:
  // kUniformRow: its f16 scales / zeros (one per group); kCodebookRow: its NormParams.
  // kUniformCols: the block's per-channel f16 scales / zeros (meta_stride 0).
  ptrdiff_t scales_off = 0, zeros_off = 0;
  size_t meta_stride = 0;
  int group = 0;        // kUniformRow: values per group (one group when >= head_dim)
  // Codebook formats: decode levels [16] (Codebook::values: the first 2^bits used, the whole
  // table read by the SIMD lookups, quant/codebook-inl.h); kCodebookPc: per-channel half-range
  // and zero [head_dim]; kCodebookRow: token t's NormParams at rows + norm_off + t * meta_stride.
  const float* levels = nullptr;
  // kCodebookRow at 2 bits: levels[0..3] in int8 steps of level_step, ref::round_levels_ref's
  // result, computed once with the codebook by the store (null: the reference takes the run,
  // which rounds them itself).
  const int8_t* levels_q = nullptr;
  float level_step = 0.0f;
  const float* ch_half = nullptr;
  const float* ch_zero = nullptr;
  ptrdiff_t norm_off = 0;
  bool norm8 = false;  // kCodebookRow: the norm is a NormParams8 (quant/normalize.h, norm=8)
  // Sparse outliers (codebook formats; null when none), each value in out_val the correction
  // x - dense to what its channel's code decodes to, in one of the two forms of a page of
  // quant/outlier_layout.h, at out_layout's widths:
  //  - growing (out_sealed false): token t's entries are [out_ptr[t], out_ptr[t + 1]) of
  //    out_idx / out_val, ascending indices over the whole K/V vector, of which this head owns
  //    [out_ch0, out_ch0 + head_dim); out_ptr is the byte address of token 0's pointer;
  //  - sealed: this head's entries of the page are [out_ptr[0], out_ptr[1]) of out_idx (uint16
  //    cells slot << ch_bits | channel) / out_val; token 0 of the run is slot out_slot0.
  const uint8_t* out_ptr = nullptr;
  const uint8_t* out_idx = nullptr;
  const f16_t* out_val = nullptr;
  int out_ch0 = 0;
  bool out_sealed = false;
  int out_slot0 = 0;
  OutlierLayout out_layout;
};

// The key runs scored against the query rounded to int8 (their formats' specifications,
// kernels/ref/kv_decode_ref.h) on every path: KIVI's per-channel blocks at every width (the
// weighted query q * s per block), and per-token groups of 2 and 4 bits whose one group spans
// the head (int2 and int4 at their default g = 128 on heads of up to 128: one scale and zero
// point per token and head, so one rounded query serves every row). Narrower groups would need
// an integer sum and a rounding per group; they stay in floats.
inline bool key_query_in_integers(const KvRun& r) {
  return r.format == KvFormat::kUniformCols ||
         (r.format == KvFormat::kUniformRow && (r.bits == 2 || r.bits == 4) && r.group >= r.head_dim);
}

// The value runs whose weights are rounded to uint8 (their formats' specifications,
// kernels/ref/kv_decode_ref.h) on every path: per-token groups of 2 and 4 bits (KIVI's values,
// int2, int4) and 2-bit KVQuant values. 3-bit codes straddle bytes and 8-bit ones gain nothing
// from it; 3- and 4-bit KVQuant values look their codes up in float levels.
inline bool value_weights_in_integers(const KvRun& r) {
  return (r.format == KvFormat::kUniformRow && (r.bits == 2 || r.bits == 4)) ||
         (r.format == KvFormat::kCodebookRow && r.bits == 2);
}

// A load the CPU must complete (not a hint): it starts the address translation and the miss of
// a page that the next run reads, while the current run is computed.
inline void touch_byte(const uint8_t* p) { (void)*static_cast<const volatile uint8_t*>(p); }

// How far ahead of the rows they read the q4_0 / q8_0 kernels ask for the rows that follow, and
// the call that asks for [p + kRowPrefetchBytes, + n bytes) a cache line at a time (a hint:
// past a run's end it asks for what is not read, which never faults). Their rows are 72 or 136
// bytes on LLaMA-7B's shape; read from memory a run at a time they reached ~40% of the read
// bandwidth at 32K, and asking 1 KiB ahead made q8_0 ~15% and q4_0 ~25% faster there (2 KiB
// and 512 bytes measured the same; docs/PERFORMANCE.md). f16's kernels gained nothing from it.
inline constexpr size_t kRowPrefetchBytes = 1024;
// Asks for [p, p + n) a cache line at a time (a hint: it never faults, whatever lies there).
inline void prefetch_bytes(const uint8_t* p, size_t n) {
  for (size_t o = 0; o < n; o += 64) __builtin_prefetch(p + o);
}
inline void prefetch_rows_ahead(const uint8_t* p, size_t n) {
  // The address by integer arithmetic: it may lie past the rows' allocation.
  prefetch_bytes(reinterpret_cast<const uint8_t*>(reinterpret_cast<uintptr_t>(p) + kRowPrefetchBytes), n);
}

// How much of a run's sealed outlier list (its cells, and as much of its values) prefetch_run
// asks for: at 1% outliers a 64-token run of a 128-value head holds ~82 entries, 164 bytes of
// each.
inline constexpr size_t kOutlierPrefetchBytes = 192;

// Asks ahead of use for what the next run reads first where the hardware prefetcher cannot
// know it, called one run ahead (attention's for_each_run):
//  - the run's list of KVQuant outliers on a sealed page: a few cache lines of cells and of
//    values in the page's own block, which each run's correction pass started with a miss on.
//    From DRAM (LLaMA-7B's shape at 32K tokens, kvquant-2 and -3) the key corrections' time
//    fell by a third and the values' by 40%, ~9% of the attention (docs/PERFORMANCE.md,
//    "Where KVQuant's decode time goes").
//  - a KIVI key block, a page of its own, ~1.5 KB per head, too short for the hardware
//    prefetcher: its scales and zero points, which follow its codes (quant/kv_layout.h), and its
//    first code rows are prefetched, and its scales touched. The touch is what helps on the Zen
//    4 VM (docs/PERFORMANCE.md, "what bounds it"): kivi-2 ~18% and kivi-4 ~13% faster on
//    LLaMA-7B's shape at 16K on one thread, where the prefetches alone changed nothing (no
//    hardware counters there to say why; a software prefetch whose page is not in the TLB may be
//    dropped) and the profile had charged ~40% of the block setup to the scales' first load.
//    Since attention's walk stopped copying runs (kv/kv_view.h), the block's code rows are asked
//    for whole, with the rows below.
//  - the code rows of 2-bit KVQuant keys (at most 2 KiB a run), which the kernel with tokens in
//    lanes (kernels/cpu/kv_fused_codebook.cc) loads all at once to transpose them: without it
//    the loads' misses were ~17% of that kernel's samples, with it ~5%; and those of 2-bit
//    values with their norms, which the integer kernel (kv_fused_codebook_values.cc) reads four
//    rows at a time (its samples over the key kernel's 0.51 -> 0.43). The 3- and 4-bit rows
//    likewise since the walk stopped copying runs: kvquant-3 and -4 at 32K tokens 10-27% faster
//    in two of three alternated runs on LLaMA-7B's shape, the same in the third
//    (docs/PERFORMANCE.md, "Attention's walk without copies").
//  - every row of a per-token-group run (KIVI's values, int-b) with its scales and zero points,
//    and every code row of a KIVI key block: with the walk's copies gone these runs' kernels
//    wait on memory, and asked for a run ahead kivi-2 at 32K tokens on LLaMA-7B's shape took
//    ~25% less time, kivi-4 ~35%, int4 ~20% (same section).
//  - every row of an f16 run (16 KiB at head_dim 128): attention reads a page's heads one
//    after another, and asked for a run ahead they kept f16 at 32K tokens at 88-93% of the read
//    bandwidth on LLaMA-7B's shape where the hardware prefetcher alone gave 77-83% (~8% less
//    time; docs/PERFORMANCE.md, "Heads of a page in one stream").
// Not for the rows of q8_0 and q4_0: asked for whole a run ahead they took 5-10% more time, and
// again ~20% more with the walk's copies gone, on top of their kernels' own prefetch
// (prefetch_rows_ahead). (Before the walk stopped copying runs, one touch per per-token-group run
// (int4) gained nothing, and the first 256 bytes of KVQuant's 3- and 4-bit rows changed nothing
// measurable.)
inline void prefetch_run(const KvRun& r) {
  if (r.out_ptr != nullptr && r.out_sealed && r.n > 0) {
    uint32_t e;  // the head's first entry (quant/outlier_layout.h), from the block's pointers
    if (r.out_layout.ptr_bytes == 2) {
      uint16_t e16;
      std::memcpy(&e16, r.out_ptr, 2);
      e = e16;
    } else {
      std::memcpy(&e, r.out_ptr, 4);
    }
    const uint8_t* cells = r.out_idx + size_t(e) * OutlierLayout::kCellBytes;
    const uint8_t* vals = reinterpret_cast<const uint8_t*>(r.out_val + e);
    prefetch_bytes(cells, kOutlierPrefetchBytes);
    prefetch_bytes(vals, kOutlierPrefetchBytes);
  }
  const size_t row_bytes = size_t(r.n) * r.stride, meta_bytes = size_t(r.n) * r.meta_stride;
  switch (r.format) {
    case KvFormat::kF16:
    case KvFormat::kCodebookPc:
      return prefetch_bytes(r.rows, row_bytes);
    case KvFormat::kUniformRow:  // with each token's scales and zero points
      prefetch_bytes(r.rows, row_bytes);
      return prefetch_bytes(r.rows + r.scales_off, meta_bytes);
    case KvFormat::kCodebookRow:  // with each token's norm
      prefetch_bytes(r.rows, row_bytes);
      return prefetch_bytes(r.rows + r.norm_off, meta_bytes);
    case KvFormat::kUniformCols:  // the block's scales touched first, then asked for with its rows
      if (r.n == 0) return;
      touch_byte(r.rows + r.scales_off);
      prefetch_bytes(r.rows + r.scales_off, size_t(r.head_dim) * 4);
      return prefetch_bytes(r.rows, row_bytes);
    default:  // kF32; q4_0 / q8_0 (their kernels' prefetch_rows_ahead)
      return;
  }
}

// This head's entries [*start, *stop) of token t of a growing page (with pointer type P and
// index type I): a token has about 1% of its whole K/V vector as outliers, sorted by channel;
// the head's range is reached by a walk that skips 8 entries at a time while the 8th is still
// below it, then one at a time.
template <class P, class I>
[[gnu::always_inline]] inline void run_outlier_range_as(const KvRun& r, int t, uint32_t* start, uint32_t* stop) {
  const P* ptr = reinterpret_cast<const P*>(r.out_ptr);
  const I* idx = reinterpret_cast<const I*>(r.out_idx);
  const uint32_t end = ptr[t + 1];
  uint32_t e = ptr[t];
  const int lo = r.out_ch0, hi = r.out_ch0 + r.head_dim;
  while (end - e >= 8 && int(idx[e + 7]) < lo) e += 8;
  while (e != end && int(idx[e]) < lo) ++e;
  *start = e;
  while (e != end && int(idx[e]) < hi) ++e;
  *stop = e;
}

// The run's outliers on a growing page, token by token.
template <class P, class I, class Fn, class Cvt>
[[gnu::always_inline]] inline void for_each_growing_outlier(const KvRun& r, const Fn& fn, const Cvt& cvt) {
  const I* idx = reinterpret_cast<const I*>(r.out_idx);
  for (int t = 0; t < r.n; ++t) {
    uint32_t e, stop;
    run_outlier_range_as<P, I>(r, t, &e, &stop);
    for (; e != stop; ++e) fn(t, size_t(int(idx[e]) - r.out_ch0), cvt(r.out_val[e]));
  }
}

// The run's entries [*start, *stop) of its head's list on a sealed page (r.out_sealed): cells
// (uint16 at r.out_idx, slot << ch_bits | channel) sorted, from the run's first slot to its end.
template <class P>
[[gnu::always_inline]] inline void sealed_outlier_range_as(const KvRun& r, uint32_t* start, uint32_t* stop) {
  const P* ptr = reinterpret_cast<const P*>(r.out_ptr);
  const auto* cell = reinterpret_cast<const uint16_t*>(r.out_idx);
  const int sh = r.out_layout.ch_bits;
  const uint32_t lo = uint32_t(r.out_slot0) << sh, hi = uint32_t(r.out_slot0 + r.n) << sh;
  uint32_t e = ptr[0];
  const uint32_t end = ptr[1];
  while (e != end && cell[e] < lo) ++e;
  *start = e;
  if (e != end && cell[end - 1] < hi) {  // the run reaches the list's end (as a whole page's does)
    *stop = end;
    return;
  }
  while (e != end && cell[e] < hi) ++e;
  *stop = e;
}
inline void sealed_outlier_range(const KvRun& r, uint32_t* start, uint32_t* stop) {
  if (r.out_layout.ptr_bytes == 2) return sealed_outlier_range_as<uint16_t>(r, start, stop);
  sealed_outlier_range_as<uint32_t>(r, start, stop);
}

// The run's outliers on a sealed page: the head's list, from the run's first slot to its end.
template <class P, class Fn, class Cvt>
[[gnu::always_inline]] inline void for_each_sealed_outlier(const KvRun& r, const Fn& fn, const Cvt& cvt) {
  const auto* cell = reinterpret_cast<const uint16_t*>(r.out_idx);
  const int sh = r.out_layout.ch_bits;
  const uint32_t mask = (1u << sh) - 1u;
  uint32_t e, stop;
  sealed_outlier_range_as<P>(r, &e, &stop);
  for (; e != stop; ++e) fn(int(cell[e] >> sh) - r.out_slot0, size_t(cell[e] & mask), cvt(r.out_val[e]));
}

// Calls fn(token t of the run, channel within the head, stored correction) for each of the run's
// sparse outliers of its head (KVQuant §3.4), tokens in order. r.out_ptr must be set. Always
// inlined, as are its walks, so that a SIMD kernel that calls it (compiled for its target)
// inlines fn too, which a call into a baseline-compiled template could not (a call per
// outlier measured ~20% of KVQuant's decode attention); cvt converts the stored f16 (the SIMD
// kernels pass the target's conversion instruction). The widths are picked once per run.
template <class Fn, class Cvt = float (*)(f16_t)>
[[gnu::always_inline]] inline void for_each_run_outlier(const KvRun& r, const Fn& fn, const Cvt& cvt = f16_to_f32) {
  const bool narrow_ptr = r.out_layout.ptr_bytes == 2, narrow_idx = r.out_layout.idx_bytes == 1;
  if (r.out_sealed) {
    if (narrow_ptr) {
      for_each_sealed_outlier<uint16_t>(r, fn, cvt);
    } else {
      for_each_sealed_outlier<uint32_t>(r, fn, cvt);
    }
  } else if (narrow_ptr && narrow_idx) {
    for_each_growing_outlier<uint16_t, uint8_t>(r, fn, cvt);
  } else if (narrow_ptr) {
    for_each_growing_outlier<uint16_t, uint16_t>(r, fn, cvt);
  } else if (narrow_idx) {
    for_each_growing_outlier<uint32_t, uint8_t>(r, fn, cvt);
  } else {
    for_each_growing_outlier<uint32_t, uint16_t>(r, fn, cvt);
  }
}

// Adds the corrections of its head's sparse outliers (each stored as x - dense, KvquantStore)
// to the decoded dense values of the run's tokens (out: [n, head_dim]).
template <class Cvt = float (*)(f16_t)>
inline void apply_run_outliers(const KvRun& r, float* out, const Cvt& cvt = f16_to_f32) {
  const size_t hd = size_t(r.head_dim);
  for_each_run_outlier(r, [&](int t, size_t c, float v) { out[size_t(t) * hd + c] += v; }, cvt);
}

// Tokens [j, j + n) of run r, as a run of their own.
inline KvRun sub_run(const KvRun& r, int j, int n) {
  KvRun s = r;
  s.n = n;
  s.rows = r.rows + size_t(j) * r.stride;
  const ptrdiff_t moved = ptrdiff_t(size_t(j) * r.meta_stride) - ptrdiff_t(size_t(j) * r.stride);
  s.scales_off += moved;
  s.zeros_off += moved;
  s.norm_off += moved;
  if (s.out_sealed) {
    s.out_slot0 += j;
  } else if (s.out_ptr) {
    s.out_ptr += size_t(j) * r.out_layout.ptr_bytes;
  }
  return s;
}

}  // namespace kvq
