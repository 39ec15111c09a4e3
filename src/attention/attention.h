// SPDX-License-Identifier: MIT
// Causal grouped-query attention of a batch of queries over a layer of the KV cache. The only
// module that knows both the cache layouts and the kernels.
#pragma once

#include "attention/rope_table.h"
#include "base/exec_context.h"
#include "kv/kv_cache.h"
#include "kvq/status.h"

namespace kvq {

struct AttentionParams {
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  float scale = 0.0f;  // usually 1/sqrt(head_dim)
  // RoPE for caches that store keys before RoPE (covers every cached position).
  const RopeTable* rope = nullptr;
};

// q: [n_tokens, n_heads, head_dim], post-RoPE queries for positions pos0 .. pos0+n_tokens-1;
// the cache layer already holds the keys/values of those positions. Query at position p
// attends to cache positions 0..p. out: [n_tokens, n_heads, head_dim].
// Dense f32/f16 caches are read in place by the SIMD kernels; every other cache through the
// reference block path: 64 tokens of K and V at a time are dequantized into a small scratch
// (RoPE applied to pre-RoPE keys), with an online softmax, so the cache is never materialized
// in full precision. Both are deterministic for any thread count and batch split.
Status attend(ExecContext& ctx, const AttentionParams& p, const KvCache& cache, int il,
              const float* q, int n_tokens, int pos0, float* out);

}  // namespace kvq
