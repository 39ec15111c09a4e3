// SPDX-License-Identifier: MIT
// Split-K attention over packed caches (FlashDecoding-style). For one KV head and one chunk of
// kAttentionChunk positions, the chunk's keys are scored tile by tile (each tile of <= 64 tokens
// decoded once from the packed pages and used by every query of the group), the chunk's
// softmax is taken in one pass over its scores, and the values are accumulated tile by tile.
// Each chunk yields a state {max, sum, normalized output}; states merge left to right.
// A decode task takes a span of KV heads of one chunk and reads their runs page by page, the
// heads of a page in order: a page holds its heads one after another (kv/paged_rows.h), so the
// task streams through it, where a task per head jumped a page (16-512 KB) every 64 tokens.
// f16 at 32K tokens went from 36% to 83% of the read bandwidth (docs/PERFORMANCE.md).
#include "attention/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/cpu/kv_decode.h"
#include "kernels/cpu/kv_fused.h"
#include "kernels/cpu/ops.h"
#include "kernels/ref/hadamard_ref.h"
#include "kernels/ref/kv_decode_ref.h"
#include "kernels/ref/ops_ref.h"
#include "kv/kv_view.h"
#include "quant/ggml_blocks.h"

namespace kvq {

namespace {

constexpr int kTile = Rope::kKeyOffsets;  // tokens per run (key offsets tabulated)
constexpr int kSubTile = 16;              // tokens decoded at a time: the f32 tile stays in L1
constexpr int kQueryBlock = 16;           // query tokens per prefill task
constexpr int kMaxSpan = 64;              // KV heads per decode task, at most

// Softmax state of one query over some keys: out is normalized by sum.
struct SoftState {
  float max = -INFINITY;
  float sum = 0.0f;
};
static_assert(sizeof(SoftState) == 2 * sizeof(float), "Work carves n_q states as 2 * n_q floats");

// a = merge(a, b) for one query; oa, ob: [hd]. Empty states (sum 0) are skipped, and a single
// non-empty state passes through unchanged.
void merge_state(SoftState& a, float* oa, const SoftState& b, const float* ob, int hd) {
  if (b.sum == 0.0f) return;
  if (a.sum == 0.0f) {
    a = b;
    std::memcpy(oa, ob, size_t(hd) * sizeof(float));
    return;
  }
  const float m = std::max(a.max, b.max);
  const float wa = a.sum * std::exp(a.max - m), wb = b.sum * std::exp(b.max - m);
  const float inv = 1.0f / (wa + wb);
  for (int d = 0; d < hd; ++d) oa[d] = (wa * oa[d] + wb * ob[d]) * inv;
  a.max = m;
  a.sum = wa + wb;
}

// Calls fn(run, pos, g) for the runs of heads [h0, h0 + n_heads) covering positions [a, b):
// at most kTile tokens, never across a page, starting at positions fixed by the segment layout
// and a; at each position the heads in order (head g of the span is h0 + g), so that a page's
// heads, which lie one after another in it (kv/paged_rows.h), are read as one stream. Before
// each run, what the next one reads is prefetched where that was measured to help
// (prefetch_run: the rows of f16, per-token-group, KIVI key and KVQuant runs, KVQuant's outlier
// lists; not q4_0 / q8_0, whose kernels ask for their own rows ahead).
// The current run and the next are built in place in two buffers that swap roles, never copied.
template <class Fn>
void for_each_run(const KvStoreView& sv, int h0, int n_heads, int a, int b, const Fn& fn) {
  KvRun buf[2];
  for (int si = 0; si < sv.n_segments; ++si) {
    const KvSegment& s = sv.seg[si];
    const int lo = std::max(a, s.t0), hi = std::min(b, s.t0 + s.n);
    if (lo >= hi) continue;
    auto len = [&](int t) { return std::min({hi - t, s.page_left(t - s.t0), kTile}); };
    int t = lo, g = 0;
    KvRun* run = &buf[0];
    KvRun* after = &buf[1];
    s.run(h0, t - s.t0, len(t), run);
    while (t < hi) {
      int nt = t, ng = g + 1;
      if (ng == n_heads) nt = t + run->n, ng = 0;
      if (nt < hi) {
        s.run(h0 + ng, nt - s.t0, len(nt), after);
        prefetch_run(*after);
      }
      fn(*run, t, g);
      t = nt, g = ng;
      std::swap(run, after);
    }
  }
}

// Everything one attend() call shares across tasks.
struct Call {
  const AttentionParams* p;
  KvStoreView k, v;
  KernelPath path;
  int group;
  size_t q_row;
  const float* q;
  int pos0;
  std::vector<float> chunk_rot;  // pre-RoPE: angles of each chunk start [n_chunks][rope_dim]
  std::vector<float> signs;      // rotated K or V: the Hadamard signs [hd]
};

// x: [n_rows, hd] to (forward) or from the rotated basis of a rot=1 store.
void rotate_rows(const Call& c, float* x, int n_rows, bool inverse) {
  if (c.path == KernelPath::kSimd) return cpu::hadamard_rows(x, n_rows, c.p->head_dim, c.signs.data(), inverse);
  ref::hadamard_rows_ref(x, n_rows, c.p->head_dim, c.signs.data(), inverse);
}

// One KV head's buffers in a task (the tile is shared by the task's heads).
struct Work {
  float* qbuf;   // [n_q][hd] queries as given (f16-rounded when the keys are)
  float* qrot;   // [n_q][hd] queries rotated for the current run (pre-RoPE)
  float* qc;     // [n_q][hd] queries rotated to the chunk start (pre-RoPE)
  float* tile;   // [kTile][hd]
  float* s;      // [n_q][kAttentionChunk] scores, then probabilities
  float* o;      // [n_q][hd] chunk output
  SoftState* st; // [n_q]
  BlockQ8_0* q8; // [n_q][hd / 32] the queries in q8_0 (q4_0 / q8_0 keys), qbuf their values
};

size_t q8_floats(int n_q, int hd) {
  return (size_t(n_q) * size_t(hd / kQK8_0) * sizeof(BlockQ8_0) + sizeof(float) - 1) / sizeof(float);
}

// One head's buffers, in whole cache lines.
size_t head_floats(int n_q, int hd) {
  const size_t f = size_t(n_q) * (4 * size_t(hd) + kAttentionChunk) + 2 * size_t(n_q) + q8_floats(n_q, hd);
  return (f + 15) / 16 * 16;
}

// The buffers of a task over n_heads KV heads.
size_t work_floats(int n_heads, int n_q, int hd) {
  return size_t(kTile) * size_t(hd) + size_t(n_heads) * head_floats(n_q, hd) + 64;
}

// w[g], g < n_heads: head g's buffers, carved from base (work_floats(n_heads, n_q, hd) floats).
void carve(float* base, int n_heads, int n_q, int hd, Work* w) {
  float* tile = base;
  float* b = tile + size_t(kTile) * hd;
  for (int g = 0; g < n_heads; ++g, b += head_floats(n_q, hd)) {
    Work& x = w[g];
    x.tile = tile;
    x.qbuf = b;
    x.qrot = x.qbuf + size_t(n_q) * hd;
    x.qc = x.qrot + size_t(n_q) * hd;
    x.s = x.qc + size_t(n_q) * hd;
    x.o = x.s + size_t(n_q) * kAttentionChunk;
    x.st = reinterpret_cast<SoftState*>(x.o + size_t(n_q) * hd);
    x.q8 = reinterpret_cast<BlockQ8_0*>(x.st + n_q);
  }
}

void softmax_rows(KernelPath path, float* x, int n, bool round_f16, SoftState* st) {
  if (path == KernelPath::kSimd) return cpu::softmax(x, n, round_f16, &st->max, &st->sum);
  float m = -INFINITY;
  for (int j = 0; j < n; ++j) m = std::fmax(m, x[j]);
  float sum = 0.0f;
  for (int j = 0; j < n; ++j) sum += std::exp(x[j] - m);
  ref::softmax_ref(x, n);
  if (round_f16) {
    for (int j = 0; j < n; ++j) x[j] = round_to_f16(x[j]);
  }
  st->max = m;
  st->sum = sum;
}

// Formats whose fused kernels unpack each row once for all the queries of a GQA group: for
// scores (KIVI, int-b; q4_0 / q8_0 keys take score_run_q8, which does too), and for value
// accumulation (q4_0 / q8_0 blocks, KIVI's per-token groups, and KVQuant
// values when head_dim is a multiple of the 16-code packing chunk; other sizes, e.g. head_dim
// 8, take an axpy per query, still fused).
bool scores_unpack_once(KvFormat f) {
  return f == KvFormat::kUniformCols || f == KvFormat::kUniformRow;
}
bool accumulate_unpacks_once(KvFormat f) {
  return f == KvFormat::kUniformRow || f == KvFormat::kCodebookRow || f == KvFormat::kQ4_0 || f == KvFormat::kQ8_0;
}

// Scores of n_q queries against one run of keys: s[i * ld + j] for j < run.n.
void score_run(const Call& c, Work& w, const KvRun& run, const float* q, int n_q, float* s) {
  const int hd = c.p->head_dim;
  const float scale = c.p->scale;
  const KvFormat f = run.format;
  if (c.path == KernelPath::kSimd && !c.k.pre_rope && (f == KvFormat::kF16 || f == KvFormat::kF32)) {
    // Dense rows are read in place.
    if (f == KvFormat::kF16) {
      cpu::attn_scores(q, size_t(hd), n_q, reinterpret_cast<const f16_t*>(run.rows), run.stride / 2, run.n, hd,
                       scale, s, kAttentionChunk);
    } else {
      cpu::attn_scores(q, size_t(hd), n_q, reinterpret_cast<const float*>(run.rows), run.stride / 4, run.n, hd,
                       scale, s, kAttentionChunk);
    }
    return;
  }
  if (c.path == KernelPath::kSimd && c.k.q8_0_queries && q == w.qbuf &&
      cpu::score_run_q8(run, w.q8, n_q, scale, s, kAttentionChunk)) {
    return;  // integer block sums against the rounded query, each block read once for the group
  }
  if (c.path == KernelPath::kSimd && !c.k.pre_rope && (c.group == 1 || scores_unpack_once(f))) {
    // Fused kernels score from the codes, each query the same way whatever n_q is (so prefill
    // and decode agree). With GQA only the formats that unpack a row once for the whole group
    // take them; for the others a tile decoded once serves the group.
    if (cpu::score_run_fused(run, q, n_q, scale, s, kAttentionChunk)) return;
  }
  // The fused kernel rotates adjacent pairs; neox halves take the tile below.
  if (c.path == KernelPath::kSimd && c.k.pre_rope && c.p->rope->pair_stride() == 1 &&
      cpu::score_run_rope_fused(run, q, n_q, c.group, c.p->rope->key_tables(), scale, s, kAttentionChunk)) {
    return;  // decoded, rotated and dotted in registers, once for every query of the group
  }
  if (key_query_in_integers(run)) {
    // KIVI keys (against each block's weighted query) and int2 / int4 keys of one group per head
    // (against the query) are scored in integers, the query rounded to int8, on every path (the
    // fused kernel above, or its scalar specification for the shapes it leaves).
    KVQ_CHECK(!c.k.pre_rope);
    if (f == KvFormat::kUniformCols) return ref::uniform_cols_scores_ref(run, q, n_q, scale, s, kAttentionChunk);
    return ref::uniform_row_scores_ref(run, q, n_q, scale, s, kAttentionChunk);
  }
  if (c.path == KernelPath::kSimd) {
    for (int j = 0; j < run.n; j += kSubTile) {
      const int n = std::min(kSubTile, run.n - j);
      cpu::decode_run(sub_run(run, j, n), w.tile);
      if (c.k.pre_rope) {
        cpu::rope_rows_table(w.tile, n, hd, c.p->rope->key_table() + size_t(j) * 2 * hd, c.p->rope->pair_stride());
      }
      cpu::attn_scores(q, size_t(hd), n_q, w.tile, size_t(hd), n, hd, scale, s + j, kAttentionChunk);
    }
    return;
  }
  ref::decode_run_ref(run, w.tile);
  for (int j = 0; j < run.n; ++j) {
    float* kr = w.tile + size_t(j) * hd;
    if (c.k.pre_rope) c.p->rope->rotate(kr, c.p->rope->offset(j), false);
    for (int i = 0; i < n_q; ++i) s[size_t(i) * kAttentionChunk + j] = ref::dot_ref(q + size_t(i) * hd, kr, hd) * scale;
  }
}

// Their scalar specifications (KIVI's at every width).
void accumulate_run_ref(const KvRun& run, const float* p, int n_q, float* o) {
  if (run.format == KvFormat::kUniformRow) return ref::uniform_row_accumulate_ref(run, p, n_q, kAttentionChunk, o);
  ref::codebook_row_accumulate_ref(run, p, n_q, kAttentionChunk, o);
}

// o[i] += sum_j p[i * ld + j] * v_j over one run of values.
void accumulate_run(const Call& c, Work& w, const KvRun& run, const float* p, int n_q) {
  const int hd = c.p->head_dim;
  const KvFormat f = run.format;
  if (c.path == KernelPath::kSimd) {
    if (f == KvFormat::kF16) {
      cpu::attn_accumulate(p, kAttentionChunk, n_q, reinterpret_cast<const f16_t*>(run.rows), run.stride / 2,
                           run.n, hd, w.o, size_t(hd));
    } else if (f == KvFormat::kF32) {
      cpu::attn_accumulate(p, kAttentionChunk, n_q, reinterpret_cast<const float*>(run.rows), run.stride / 4,
                           run.n, hd, w.o, size_t(hd));
    } else if (value_weights_in_integers(run)) {
      // Values whose weights are rounded to uint8 (kernels/kv_run.h) accumulate in integers on
      // every path (the fused kernel, or its scalar specification for the targets and shapes
      // it leaves).
      if (!cpu::accumulate_run_fused(run, p, n_q, kAttentionChunk, w.o)) accumulate_run_ref(run, p, n_q, w.o);
    } else if ((c.group > 1 && !accumulate_unpacks_once(f)) ||
               !cpu::accumulate_run_fused(run, p, n_q, kAttentionChunk, w.o)) {
      for (int j = 0; j < run.n; j += kSubTile) {
        const int n = std::min(kSubTile, run.n - j);
        cpu::decode_run(sub_run(run, j, n), w.tile);
        cpu::attn_accumulate(p + j, kAttentionChunk, n_q, w.tile, size_t(hd), n, hd, w.o, size_t(hd));
      }
    }
    return;
  }
  if (f == KvFormat::kUniformRow || value_weights_in_integers(run)) return accumulate_run_ref(run, p, n_q, w.o);
  ref::decode_run_ref(run, w.tile);
  for (int i = 0; i < n_q; ++i) {
    for (int j = 0; j < run.n; ++j) {
      ref::axpy_ref(p[size_t(i) * kAttentionChunk + j], w.tile + size_t(j) * hd, w.o + size_t(i) * hd, hd);
    }
  }
}

// The first key of chunk c0 (relative to it, at most n_valid) inside the window of the query
// at position pos: keys more than window - 1 positions back are masked, as in llama.cpp.
int window_start(const Call& c, int pos, int c0, int n_valid) {
  if (c.p->window <= 0) return 0;
  return std::clamp(pos - c.p->window + 1 - c0, 0, n_valid);
}

// q_i <- R^T q_i for queries [0, n_q) (rows of head_dim) and the angle set cs (Rope::angles).
void rotate_queries(const Call& c, float* q, int n_q, const float* cs) {
  const Rope& rope = *c.p->rope;
  if (c.path == KernelPath::kSimd && rope.pair_stride() == 1 &&
      cpu::rope_rotate_rows(q, n_q, c.p->head_dim, rope.rope_dim(), cs, true)) {
    return;
  }
  for (int i = 0; i < n_q; ++i) rope.rotate(q + size_t(i) * size_t(c.p->head_dim), cs, true);
}

// The states of queries w[g].qbuf[0, n_q) of KV heads h0 + g, g < n_heads (query i at
// position pos[i / group]) over chunk ci: w[g].st and w[g].o. Each head's state depends only on
// its queries, the chunk and its contents, not on the heads taken with it.
void chunk_state(const Call& c, Work* w, int h0, int n_heads, int ci, int n_q, const int* pos) {
  const int hd = c.p->head_dim;
  const int c0 = ci * kAttentionChunk;
  int last = 0;
  for (int i = 0; i < n_q; ++i) last = std::max(last, pos[i / c.group]);
  const int c1 = std::min({c0 + kAttentionChunk, last + 1, c.k.n_tokens});
  bool any = false;  // a chunk wholly before every query's window is not read at all
  for (int i = 0; i < n_q && !any; ++i) {
    const int n_valid = std::clamp(pos[i / c.group] + 1 - c0, 0, c1 - c0);
    any = window_start(c, pos[i / c.group], c0, n_valid) < n_valid;
  }
  if (!any) {
    for (int g = 0; g < n_heads; ++g) {
      std::fill(w[g].st, w[g].st + n_q, SoftState{});
      std::memset(w[g].o, 0, size_t(n_q) * hd * sizeof(float));
    }
    return;
  }
  if (c.k.pre_rope) {
    // q . R(c0 + r + j) k = (R(r)^T R(c0)^T q) . (R(j) k): rotate the queries to the chunk start.
    for (int g = 0; g < n_heads; ++g) {
      std::memcpy(w[g].qc, w[g].qbuf, size_t(n_q) * hd * sizeof(float));
      rotate_queries(c, w[g].qc, n_q, &c.chunk_rot[size_t(ci) * c.p->rope->rope_dim()]);
    }
  }
  for_each_run(c.k, h0, n_heads, c0, c1, [&](const KvRun& run, int t, int g) {
    Work& x = w[g];
    const float* q = x.qbuf;
    if (c.k.pre_rope) {
      std::memcpy(x.qrot, x.qc, size_t(n_q) * hd * sizeof(float));
      rotate_queries(c, x.qrot, n_q, c.p->rope->offset(t - c0));
      q = x.qrot;
    }
    score_run(c, x, run, q, n_q, x.s + (t - c0));
  });
  for (int i = 0; i < n_q; ++i) {
    // Query i's keys of the chunk, the same for every head.
    const int n_valid = std::clamp(pos[i / c.group] + 1 - c0, 0, c1 - c0);
    const int first = window_start(c, pos[i / c.group], c0, n_valid);
    for (int g = 0; g < n_heads; ++g) {
      float* si = w[g].s + size_t(i) * kAttentionChunk;
      w[g].st[i] = SoftState{};
      if (n_valid > first) softmax_rows(c.path, si + first, n_valid - first, c.v.f16_numerics, &w[g].st[i]);
      std::fill(si, si + first, 0.0f);
      std::fill(si + std::max(n_valid, first), si + (c1 - c0), 0.0f);
    }
  }
  for (int g = 0; g < n_heads; ++g) std::memset(w[g].o, 0, size_t(n_q) * hd * sizeof(float));
  for_each_run(c.v, h0, n_heads, c0, c1,
               [&](const KvRun& run, int t, int g) { accumulate_run(c, w[g], run, w[g].s + (t - c0), n_q); });
}

// q: [hd] to its q8_0 blocks q8, and q to their values, as llama.cpp rounds a query for q4_0 /
// q8_0 keys. A query that is not finite gets blocks of scale NaN, so that its head's output is
// NaN on every path, as the reference's is, never a silent zero.
void round_query_q8_0(KernelPath path, float* q, int hd, BlockQ8_0* q8) {
  if (!quantize_row_q8_0(q, q8, hd, path).ok()) {
    for (int b = 0; b < hd / kQK8_0; ++b) {
      q8[b].d = f32_to_f16(NAN);
      std::memset(q8[b].qs, 0, sizeof(q8[b].qs));
    }
  }
  dequantize_row_q8_0(q8, q, hd, path);
}

// Gathers the group's queries of tokens [t0, t0 + n) into w.qbuf.
int load_queries(const Call& c, Work& w, int h, int t0, int n, int* pos) {
  const int hd = c.p->head_dim;
  const int n_q = n * c.group;
  for (int t = 0; t < n; ++t) {
    pos[t] = c.pos0 + t0 + t;
    for (int g = 0; g < c.group; ++g) {
      const float* src = c.q + size_t(t0 + t) * c.q_row + size_t(h * c.group + g) * hd;
      float* dst = w.qbuf + size_t(t * c.group + g) * hd;
      if (c.k.f16_numerics && c.path == KernelPath::kSimd) {
        // Rounded to f16 in vectors (the same round-to-nearest-even): one by one in software it
        // took 3% of the testbed's batched decode.
        f16_t h[256];
        for (int d0 = 0; d0 < hd; d0 += 256) {
          const size_t m = size_t(std::min(256, hd - d0));
          cpu::convert_f32_to_f16(src + d0, h, m);
          cpu::convert_f16_to_f32(h, dst + d0, m);
        }
      } else {
        for (int d = 0; d < hd; ++d) dst[d] = c.k.f16_numerics ? round_to_f16(src[d]) : src[d];
      }
    }
  }
  // Keys stored as R k: q . k = (R q) . (R k), one transform per query (not per key).
  if (c.k.rotated) rotate_rows(c, w.qbuf, n_q, false);
  if (c.k.q8_0_queries) {
    for (int i = 0; i < n_q; ++i) round_query_q8_0(c.path, w.qbuf + size_t(i) * hd, hd, w.q8 + size_t(i) * (hd / kQK8_0));
  }
  return n_q;
}

// o: the merged outputs, [n * group, hd] (rotated back in place for rot=1 values).
void store_output(const Call& c, float* o, int h, int t0, int n, float* out) {
  const int hd = c.p->head_dim;
  // Values stored as R v: sum_t p_t R v_t = R sum_t p_t v_t, so one R^T per query head.
  if (c.v.rotated) rotate_rows(c, o, n * c.group, true);
  for (int t = 0; t < n; ++t) {
    for (int g = 0; g < c.group; ++g) {
      std::memcpy(out + size_t(t0 + t) * c.q_row + size_t(h * c.group + g) * hd,
                  o + size_t(t * c.group + g) * hd, size_t(hd) * sizeof(float));
    }
  }
}

// One item's share of a batched call: its Call, and how its work splits into tasks.
struct Plan {
  Call c;
  int n_tokens = 0;
  float* out = nullptr;
  int n_chunks = 0;
  bool split = false;  // decode: tasks (chunk, span of KV heads), then a merge task per KV head
  int n_q = 0;         // split: queries per KV head
  int span = 1;        // split: KV heads per task (a divisor of n_kv_heads)
  int n_blocks = 0;    // otherwise: blocks of kQueryBlock query tokens
  size_t state0 = 0;   // split: where its chunk states start in the shared buffer
  size_t state_floats = 0;
  // split: the state of chunk ci and KV head h in the shared buffer, [n_chunks][n_kv_heads].
  size_t state_at(int ci, int h) const { return state0 + (size_t(ci) * c.p->n_kv_heads + size_t(h)) * state_floats; }
  int64_t tasks() const {
    return split ? int64_t(n_chunks) * (c.p->n_kv_heads / span) : int64_t(c.p->n_kv_heads) * n_blocks;
  }
  size_t scratch_floats() const {
    const int hd = c.p->head_dim;
    if (split) return work_floats(span, n_q, hd);
    const int max_q = kQueryBlock * c.group;
    return work_floats(1, max_q, hd) + size_t(max_q) * (size_t(hd) + 2);
  }
};

Status make_plan(ExecContext& ctx, const AttentionParams& p, int il, const AttendItem& item, Plan* plan) {
  const KvCache& cache = *item.cache;
  Call& c = plan->c;
  c.p = &p;
  cache.views(il, &c.k, &c.v);
  KVQ_CHECK(item.pos0 + item.n_tokens <= c.k.n_tokens && c.k.n_tokens == c.v.n_tokens, "attention past the cached tokens");
  if (c.k.pre_rope && (!p.rope || p.rope->head_dim() != p.head_dim)) {
    return internal_error("pre-RoPE cache without a matching Rope");
  }
  if (c.k.pre_rope && c.k.rotated) return internal_error("rotated keys stored before RoPE");
  if (c.k.rotated || c.v.rotated) {
    c.signs.resize(size_t(p.head_dim));
    hadamard_signs(p.head_dim, c.signs.data());
  }
  c.path = ctx.path();
  c.group = p.n_heads / p.n_kv_heads;
  c.q_row = size_t(p.n_heads) * size_t(p.head_dim);
  c.q = item.q;
  c.pos0 = item.pos0;
  plan->n_tokens = item.n_tokens;
  plan->out = item.out;
  plan->n_chunks = (item.pos0 + item.n_tokens + kAttentionChunk - 1) / kAttentionChunk;
  if (c.k.pre_rope) {
    const int rd = p.rope->rope_dim();
    c.chunk_rot.resize(size_t(plan->n_chunks) * size_t(rd));
    for (int ci = 0; ci < plan->n_chunks; ++ci) {
      p.rope->angles(int64_t(ci) * kAttentionChunk, &c.chunk_rot[size_t(ci) * rd]);
    }
  }
  plan->split = item.n_tokens <= kQueryBlock && plan->n_chunks > 1;
  plan->n_q = item.n_tokens * c.group;
  plan->n_blocks = (item.n_tokens + kQueryBlock - 1) / kQueryBlock;
  plan->state_floats = size_t(plan->n_q) * (size_t(p.head_dim) + 2);
  // A decode task takes a span of KV heads of one chunk, their runs page by page, so that it
  // reads each page's heads as one stream (for_each_run): the widest span that leaves at least
  // kTasksPerThread tasks per thread. Each head's state is the same whatever its span, so the
  // thread count changes only the order of the work, never a result.
  constexpr int64_t kTasksPerThread = 8;
  if (plan->split) {
    const int64_t want = kTasksPerThread * ctx.pool().n_threads();
    plan->span = 1;
    for (int d = 1; d <= p.n_kv_heads; ++d) {
      if (p.n_kv_heads % d != 0 || p.n_kv_heads / d > kMaxSpan) continue;
      plan->span = p.n_kv_heads / d;
      if (int64_t(plan->n_chunks) * d >= want) break;
    }
  }
  return ok_status();
}

// Task `task` of a plan's first phase.
void run_task(ExecContext& ctx, const Plan& plan, int64_t task, int worker, size_t scratch, float* states) {
  const Call& c = plan.c;
  const AttentionParams& p = *c.p;
  const int hd = p.head_dim;
  if (plan.split) {
    // Decode: one task per (chunk, span of KV heads), chunk-major; the merge tasks then take
    // each head's chunks in order.
    const int n_spans = p.n_kv_heads / plan.span;
    const int ci = int(task / n_spans), h0 = int(task % n_spans) * plan.span;
    Work w[kMaxSpan];
    carve(ctx.scratch(worker, scratch), plan.span, plan.n_q, hd, w);
    int pos[kQueryBlock];
    for (int g = 0; g < plan.span; ++g) load_queries(c, w[g], h0 + g, 0, plan.n_tokens, pos);
    chunk_state(c, w, h0, plan.span, ci, plan.n_q, pos);
    for (int g = 0; g < plan.span; ++g) {
      float* dst = states + plan.state_at(ci, h0 + g);
      std::memcpy(dst, w[g].o, size_t(plan.n_q) * hd * sizeof(float));
      std::memcpy(dst + size_t(plan.n_q) * hd, w[g].st, size_t(plan.n_q) * sizeof(SoftState));
    }
    return;
  }
  // Prefill: one task per (KV head, block of query tokens); chunks are visited in order and
  // merged as they come, exactly as the decode path merges them.
  const int h = int(task / plan.n_blocks), b = int(task % plan.n_blocks);
  const int t0 = b * kQueryBlock, n = std::min(kQueryBlock, plan.n_tokens - t0);
  const int max_q = kQueryBlock * c.group;
  float* base = ctx.scratch(worker, scratch);
  Work w;
  carve(base, 1, max_q, hd, &w);
  float* acc = base + work_floats(1, max_q, hd);
  auto* acc_st = reinterpret_cast<SoftState*>(acc + size_t(max_q) * hd);
  int pos[kQueryBlock];
  const int n_q = load_queries(c, w, h, t0, n, pos);
  for (int i = 0; i < n_q; ++i) acc_st[i] = SoftState{};
  const int last_chunk = pos[n - 1] / kAttentionChunk;
  for (int ci = 0; ci <= last_chunk; ++ci) {
    chunk_state(c, &w, h, 1, ci, n_q, pos);
    for (int i = 0; i < n_q; ++i) merge_state(acc_st[i], acc + size_t(i) * hd, w.st[i], w.o + size_t(i) * hd, hd);
  }
  store_output(c, acc, h, t0, n, plan.out);
}

// A split plan's KV head h: its chunk states merged in order, then stored.
void merge_head(ExecContext& ctx, const Plan& plan, int h, int worker, size_t scratch, const float* states) {
  const Call& c = plan.c;
  const int hd = c.p->head_dim, n_q = plan.n_q;
  Work w;
  carve(ctx.scratch(worker, scratch), 1, n_q, hd, &w);
  std::fill(w.st, w.st + n_q, SoftState{});
  for (int ci = 0; ci < plan.n_chunks; ++ci) {
    const float* src = states + plan.state_at(ci, h);
    const auto* st = reinterpret_cast<const SoftState*>(src + size_t(n_q) * hd);
    for (int i = 0; i < n_q; ++i) merge_state(w.st[i], w.qbuf + size_t(i) * hd, st[i], src + size_t(i) * hd, hd);
  }
  store_output(c, w.qbuf, h, 0, plan.n_tokens, plan.out);
}

}  // namespace

Status attend_batch(ExecContext& ctx, const AttentionParams& p, int il, std::span<const AttendItem> items,
                    int* failed) {
  KVQ_CHECK(p.n_kv_heads > 0 && p.n_heads % p.n_kv_heads == 0);
  if (failed) *failed = -1;
  std::vector<Plan> plans(items.size());
  // first[i]: item i's first task of the first phase; merges likewise over split items.
  std::vector<int64_t> first(items.size() + 1, 0), first_merge(items.size() + 1, 0);
  size_t scratch = 0, n_states = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    Plan& plan = plans[i];
    const Status st = make_plan(ctx, p, il, items[i], &plan);
    if (!st.ok()) {
      if (failed) *failed = int(i);
      return st;
    }
    if (plan.split) {
      plan.state0 = n_states;
      n_states += size_t(plan.n_chunks) * size_t(p.n_kv_heads) * plan.state_floats;
    }
    scratch = std::max(scratch, plan.scratch_floats());
    first[i + 1] = first[i] + plan.tasks();
    first_merge[i + 1] = first_merge[i] + (plan.split ? p.n_kv_heads : 0);
  }
  auto item_of = [](const std::vector<int64_t>& starts, int64_t task) {
    return size_t(std::upper_bound(starts.begin(), starts.end(), task) - starts.begin()) - 1;
  };
  std::vector<float> states(n_states);
  ctx.pool().parallel_for(first.back(), [&](int64_t task, int worker) {
    const size_t i = item_of(first, task);
    run_task(ctx, plans[i], task - first[i], worker, scratch, states.data());
  });
  ctx.pool().parallel_for(first_merge.back(), [&](int64_t task, int worker) {
    const size_t i = item_of(first_merge, task);
    merge_head(ctx, plans[i], int(task - first_merge[i]), worker, scratch, states.data());
  });
  return ok_status();
}

Status attend(ExecContext& ctx, const AttentionParams& p, const KvCache& cache, int il,
              const float* q, int n_tokens, int pos0, float* out) {
  const AttendItem item{&cache, q, n_tokens, pos0, out};
  return attend_batch(ctx, p, il, std::span<const AttendItem>(&item, 1));
}

}  // namespace kvq
