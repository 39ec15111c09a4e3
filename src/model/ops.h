// SPDX-License-Identifier: MIT
// Model-level ops over batches of tokens, split across the thread pool. Each output element is
// computed by exactly one task with a fixed reduction order: results are independent of the
// thread count.
#pragma once

#include "attention/rope_table.h"
#include "base/exec_context.h"
#include "model/weights.h"

namespace kvq {

// y[t, :] = w . x[t, :]   x: [n_tokens, w.cols], y: [n_tokens, w.rows]
void matmul(ExecContext& ctx, const Matrix& w, const float* x, float* y, int n_tokens);
// y[t, :] = rmsnorm(x[t, :]) * weight   x, y: [n_tokens, n]
void rmsnorm_rows(ExecContext& ctx, const float* x, const Matrix& weight, float* y, int n_tokens,
                  float eps);
// RoPE on every head of every token. x: [n_tokens, n_heads, head_dim], token t at pos0 + t;
// the table must cover pos0 + n_tokens positions.
void rope_rows(const RopeTable& rope, float* x, int n_tokens, int n_heads, int head_dim, int pos0);

}  // namespace kvq
