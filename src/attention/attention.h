// SPDX-License-Identifier: MIT
// Causal grouped-query attention of a batch of queries over a layer of the KV cache. The only
// module that knows both the cache layouts (kv/kv_view.h) and the kernels.
#pragma once

#include <span>

#include "base/exec_context.h"
#include "kernels/rope.h"
#include "kv/kv_cache.h"
#include "kvq/status.h"

namespace kvq {

struct AttentionParams {
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  float scale = 0.0f;  // usually 1/sqrt(head_dim)
  // RoPE for caches that store keys before RoPE (positions applied here, at attention time).
  const Rope* rope = nullptr;
  // Sliding window (0: none): the query at position p attends to positions (p - window, p],
  // as llama.cpp masks for n_swa (Phi-3).
  int window = 0;
};

// Positions per split-K chunk. Fixed by position, never by thread count: a query's result is
// the ordered merge of its chunks' softmax states, so it is bit-identical for any thread count
// and, for batch-invariant caches, between batched prefill and token-by-token decode.
inline constexpr int kAttentionChunk = 1024;

// q: [n_tokens, n_heads, head_dim], post-RoPE queries for positions pos0 .. pos0+n_tokens-1;
// the cache layer already holds the keys/values of those positions. Query at position p
// attends to cache positions 0..p (the last p.window of them with a window). out: [n_tokens, n_heads, head_dim].
// Every cache format is read in place, a tile of at most 64 tokens of one KV head decoded at
// a time by the format's kernel and used by every query head of its group; pre-RoPE keys are
// rotated on the tile. f16 stores keep llama.cpp's f16 x f16 numerics (query and
// probabilities rounded to f16). With KernelPath::kRef every kernel is its scalar reference.
Status attend(ExecContext& ctx, const AttentionParams& p, const KvCache& cache, int il,
              const float* q, int n_tokens, int pos0, float* out);

// One sequence of a batched step: its cache, its queries [n_tokens, n_heads, head_dim] for
// positions pos0 .., and where its output goes, as attend() takes them.
struct AttendItem {
  const KvCache* cache = nullptr;
  const float* q = nullptr;
  int n_tokens = 0;
  int pos0 = 0;
  float* out = nullptr;
};

// attend() for every item of a batched step (layer il of each item's cache), with the tasks of
// all items in one pass over the thread pool instead of one pass per sequence: each item's
// output is bit-identical to attend() on it alone, whatever the batch and the thread count.
// On an error, *failed (when given) is the index of the item that caused it.
Status attend_batch(ExecContext& ctx, const AttentionParams& p, int il, std::span<const AttendItem> items,
                    int* failed = nullptr);

}  // namespace kvq
