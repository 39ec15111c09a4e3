// SPDX-License-Identifier: MIT
// Scalar reference kernels: the specification that the Highway kernels are tested against.
// Plain pointers and sizes only; shapes outermost-first.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "base/fp16.h"

namespace kvq::ref {

// y[t, r] = sum_i x[t, i] * w[r, i].  x: [n_tokens, n_in], w: [n_rows, n_in], y: [n_tokens, n_rows]
void matmul_ref(const float* x, const float* w, float* y, int n_tokens, int n_rows, int n_in);

// y = x / sqrt(mean(x^2) + eps) * weight, over n values. Sum in double (as ggml does).
void rmsnorm_ref(const float* x, const float* weight, float* y, int n, float eps);

// Rotary embedding, llama.cpp "normal" mode (adjacent pairs (x[2i], x[2i+1])), in place on one
// head vector of head_dim values at position pos; only the first rope_dim dims rotate.
void rope_ref(float* x, int head_dim, int rope_dim, int pos, float freq_base);

// In-place softmax over n values.
void softmax_ref(float* x, int n);

float dot_ref(const float* a, const float* b, int n);
float dot_f16_ref(const float* a, const f16_t* b, int n);
// y += alpha * x
void axpy_ref(float alpha, const float* x, float* y, int n);
void axpy_f16_ref(float alpha, const f16_t* x, float* y, int n);

// out = softmax(q . K^T * scale) V over n_kv rows, for one query head.
// q: [head_dim], k, v: [n_kv, head_dim] (row stride head_dim), out: [head_dim].
void attention_head_ref(const float* q, const float* k, const float* v, float* out, int n_kv,
                        int head_dim, float scale);

inline float silu(float x) { return x / (1.0f + __builtin_expf(-x)); }
// GELU, tanh form, as ggml computes it on CPU: the input rounded to f16, the f32 formula on
// it, the result rounded to f16 (ggml's 64K-entry f16 table holds exactly that), with inputs
// beyond +-10 passed through or zeroed as ggml does.
inline float gelu_ggml(float x) {
  if (x <= -10.0f) return 0.0f;
  if (x >= 10.0f) return x;
  const float h = round_to_f16(x);
  constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f, kCoefA = 0.044715f;
  return round_to_f16(0.5f * h * (1.0f + std::tanh(kSqrt2OverPi * h * (1.0f + kCoefA * h * h))));
}

}  // namespace kvq::ref
