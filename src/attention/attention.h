// SPDX-License-Identifier: MIT
// Causal grouped-query attention of a batch of queries over a layer of the KV cache. The only
// module that knows both the cache layouts and the kernels.
#pragma once

#include "base/exec_context.h"
#include "kv/kv_cache.h"
#include "kvq/status.h"

namespace kvq {

struct AttentionParams {
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  float scale = 0.0f;  // usually 1/sqrt(head_dim)
};

// q: [n_tokens, n_heads, head_dim], post-RoPE queries for positions pos0 .. pos0+n_tokens-1;
// the cache layer already holds the keys/values of those positions. Query at position p
// attends to cache positions 0..p. out: [n_tokens, n_heads, head_dim].
// Errors: kUnimplemented for a cache layout with no attention path.
Status attend(ExecContext& ctx, const AttentionParams& p, const KvCache& cache, int il,
              const float* q, int n_tokens, int pos0, float* out);

}  // namespace kvq
