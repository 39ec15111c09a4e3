// SPDX-License-Identifier: MIT
// Model-level ops over batches of tokens, split across the thread pool. Each output element is
// computed by exactly one task with a fixed reduction order: results are independent of the
// thread count.
#pragma once

#include <span>

#include "base/exec_context.h"
#include "model/weights.h"

namespace kvq {

// y[t, :] = w . x[t, :]   x: [n_tokens, w.cols], y: [n_tokens, w.rows]. Reads w in its packed
// format. Each output is the f32 kernel's dot of x, rounded by the format's round_activations
// when it has one (llama.cpp's numerics), with the row dequantized exactly as dequantize_row
// does; for up to 3 tokens, types with an integer path (vec_dot: Q8_0, Q4_0, Q4_K, Q6_K) take
// it instead, equal up to float rounding. Independent of the thread count; for those types a
// one-token step and a batch agree to float rounding, not bit for bit.
void matmul(ExecContext& ctx, const Matrix& w, const float* x, float* y, int n_tokens);
// One output of a matmul over a shared input: y = w . x, y: [n_tokens, w->rows].
struct MatmulOutput {
  const Matrix* w;
  float* y;
};
// The same for several weights of one input (a layer's Q, K and V; the FFN's gate
// and up), each output exactly as matmul gives it alone. A decode step's weights then take one
// pass over the threads instead of one each (the testbed's decode step: 31 waits on the pool, from 49).
// Weights of different types or widths, and prefill batches of packed weights (their panels),
// run one after another.
void matmul(ExecContext& ctx, std::span<const MatmulOutput> outs, const float* x, int n_tokens);
// y[t, :] += bias for each of the n_tokens rows of y (bias.cols wide); nothing when the bias
// is absent.
void add_bias_rows(const Matrix& bias, float* y, int n_tokens);
// g = silu(g) * u over n_tokens rows of n_ff values ([n_tokens, n_ff]), the FFN's SwiGLU gate:
// cpu::swiglu on the kSimd path (split over the workers by rows; elementwise, so the result
// does not depend on the thread count), ref::silu on the kRef path.
void swiglu_rows(ExecContext& ctx, float* g, const float* u, int n_tokens, int n_ff);
// y[t, :] = rmsnorm(x[t, :]) * weight   x, y: [n_tokens, n]
void rmsnorm_rows(ExecContext& ctx, const float* x, const Matrix& weight, float* y, int n_tokens,
                  float eps);

}  // namespace kvq
