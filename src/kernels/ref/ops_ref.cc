// SPDX-License-Identifier: MIT
#include "kernels/ref/ops_ref.h"

#include <cmath>
#include <vector>

namespace kvq::ref {

void matmul_ref(const float* x, const float* w, float* y, int n_tokens, int n_rows, int n_in) {
  for (int t = 0; t < n_tokens; ++t) {
    for (int r = 0; r < n_rows; ++r) y[size_t(t) * n_rows + r] = dot_ref(x + size_t(t) * n_in, w + size_t(r) * n_in, n_in);
  }
}

void rmsnorm_ref(const float* x, const float* weight, float* y, int n, float eps) {
  double sum = 0.0;
  for (int i = 0; i < n; ++i) sum += double(x[i]) * double(x[i]);
  const float scale = 1.0f / std::sqrt(float(sum / n) + eps);
  for (int i = 0; i < n; ++i) y[i] = x[i] * scale * weight[i];
}

void rope_ref(float* x, int head_dim, int rope_dim, int pos, float freq_base) {
  // ggml_rope (mode 0): theta_i = pos * base^(-2i/rope_dim), computed by repeated
  // multiplication in float as ggml does, so positions line up bit-for-bit with llama.cpp.
  const float theta_scale = std::pow(freq_base, -2.0f / float(rope_dim));
  float theta = float(pos);
  for (int i = 0; i + 1 < rope_dim && i + 1 < head_dim; i += 2) {
    const float c = std::cos(theta), s = std::sin(theta);
    const float x0 = x[i], x1 = x[i + 1];
    x[i] = x0 * c - x1 * s;
    x[i + 1] = x0 * s + x1 * c;
    theta *= theta_scale;
  }
}

void softmax_ref(float* x, int n) {
  float mx = -INFINITY;
  for (int i = 0; i < n; ++i) mx = std::fmax(mx, x[i]);
  double sum = 0.0;
  for (int i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = float(1.0 / sum);
  for (int i = 0; i < n; ++i) x[i] *= inv;
}

float dot_ref(const float* a, const float* b, int n) {
  float s = 0.0f;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

float dot_f16_ref(const float* a, const f16_t* b, int n) {
  float s = 0.0f;
  for (int i = 0; i < n; ++i) s += a[i] * f16_to_f32(b[i]);
  return s;
}

void axpy_ref(float alpha, const float* x, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] += alpha * x[i];
}

void axpy_f16_ref(float alpha, const f16_t* x, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] += alpha * f16_to_f32(x[i]);
}

void attention_head_ref(const float* q, const float* k, const float* v, float* out, int n_kv,
                        int head_dim, float scale) {
  std::vector<float> s(static_cast<size_t>(n_kv));
  for (int j = 0; j < n_kv; ++j) s[j] = dot_ref(q, k + size_t(j) * head_dim, head_dim) * scale;
  softmax_ref(s.data(), n_kv);
  for (int d = 0; d < head_dim; ++d) out[d] = 0.0f;
  for (int j = 0; j < n_kv; ++j) axpy_ref(s[j], v + size_t(j) * head_dim, out, head_dim);
}

}  // namespace kvq::ref
