// SPDX-License-Identifier: MIT
#include "model/backward.h"

#include <cmath>
#include <cstring>

#include "model/model_ops.h"

namespace kvq {

namespace {

constexpr int kPerLayer = 7;  // wq, wk, wv, wo, w_gate, w_up, w_down

const Matrix& layer_weight(const LayerWeights& l, int j) {
  const Matrix* m[kPerLayer] = {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down};
  return *m[j];
}

// y[t, :] = w . x[t, :]
void mm(ExecContext& ctx, const Matrix& w, const float* x, float* y, int n) { matmul(ctx, w, x, y, n); }
void mm(ExecContext&, const Matrix& w, const double* x, double* y, int n) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int r = 0; r < w.rows; ++r) {
    w.dequantize_row(r, row.data(), KernelPath::kRef);
    for (int t = 0; t < n; ++t) {
      double s = 0;
      for (int i = 0; i < w.cols; ++i) s += x[size_t(t) * w.cols + i] * double(row[size_t(i)]);
      y[size_t(t) * w.rows + r] = s;
    }
  }
}
// dx[t, :] = dy[t, :] . w   (wt = w transposed, float path)
void mm_t(ExecContext& ctx, const Matrix&, const Matrix& wt, const float* dy, float* dx, int n) {
  matmul(ctx, wt, dy, dx, n);
}
void mm_t(ExecContext&, const Matrix& w, const Matrix&, const double* dy, double* dx, int n) {
  std::fill(dx, dx + size_t(n) * w.cols, 0.0);
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int r = 0; r < w.rows; ++r) {
    w.dequantize_row(r, row.data(), KernelPath::kRef);
    for (int t = 0; t < n; ++t) {
      const double g = dy[size_t(t) * w.rows + r];
      for (int i = 0; i < w.cols; ++i) dx[size_t(t) * w.cols + i] += g * double(row[size_t(i)]);
    }
  }
}

template <typename T>
void rmsnorm_fwd(const T* x, const float* w, T* y, T* r, int n_tok, int n, float eps) {
  for (int t = 0; t < n_tok; ++t) {
    const T* xr = x + size_t(t) * n;
    double ss = 0;
    for (int i = 0; i < n; ++i) ss += double(xr[i]) * double(xr[i]);
    const T inv = T(1) / T(std::sqrt(T(ss / n) + T(eps)));
    r[t] = inv;
    for (int i = 0; i < n; ++i) y[size_t(t) * n + i] = xr[i] * inv * T(w[i]);
  }
}

// dx += d/dx of y = x * r * w given dy.
template <typename T>
void rmsnorm_bwd(const T* x, const T* r, const float* w, const T* dy, T* dx, int n_tok, int n) {
  for (int t = 0; t < n_tok; ++t) {
    const T* xr = x + size_t(t) * n;
    const T* dyr = dy + size_t(t) * n;
    T dot = 0;
    for (int i = 0; i < n; ++i) dot += dyr[i] * T(w[i]) * xr[i];
    const T rt = r[t], c = rt * rt * rt * dot / T(n);
    for (int i = 0; i < n; ++i) dx[size_t(t) * n + i] += rt * dyr[i] * T(w[i]) - xr[i] * c;
  }
}

// RoPE (llama.cpp adjacent pairs) and its transpose, on every head of every token.
template <typename T>
void rope(const std::vector<float>& cs, int rope_dim, T* x, int n_tok, int n_heads, int hd, bool inverse) {
  const int half = rope_dim / 2;
  for (int t = 0; t < n_tok; ++t) {
    const float* row = &cs[size_t(t) * size_t(rope_dim)];
    for (int h = 0; h < n_heads; ++h) {
      T* v = x + (size_t(t) * n_heads + h) * hd;
      for (int i = 0; i < half; ++i) {
        const T x0 = v[2 * i], x1 = v[2 * i + 1], ci = T(row[2 * i]),
                si = inverse ? -T(row[2 * i + 1]) : T(row[2 * i + 1]);
        v[2 * i] = x0 * ci - x1 * si;
        v[2 * i + 1] = x0 * si + x1 * ci;
      }
    }
  }
}

template <typename T>
T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }

// log(sum(exp(lg))) over n logits, accumulated in double.
template <typename T>
double log_sum_exp(const T* lg, int n) {
  T mx = lg[0];
  for (int i = 1; i < n; ++i) mx = std::max(mx, lg[i]);
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += std::exp(double(lg[i] - mx));
  return std::log(sum) + double(mx);
}

}  // namespace

template <typename T>
struct LlamaGradient<T>::State {
  int n = 0;
  struct Layer {
    std::vector<T> x_in, h1, r1, q, k, k_pre, v, p, o, x_mid, h2, r2, g, u;
  };
  std::vector<Layer> layers;
  std::vector<T> x_out, hf, rf, logits;
  std::vector<float> rope_cs;  // ggml's RoPE angles of the window's positions
  double loss = 0;
};

template <typename T>
LlamaGradient<T>::LlamaGradient(const LlamaModel& model) : model_(model) {
  if constexpr (std::is_same_v<T, float>) {
    // Transposed weights once, so dX = dY . W runs on the SIMD matmul.
    const LlamaWeights& w = model.weights();
    std::vector<float> row;
    auto add = [&](const Matrix& m) {
      AlignedBuffer<float> b(size_t(m.rows) * size_t(m.cols));
      row.resize(size_t(m.cols));
      for (int r = 0; r < m.rows; ++r) {
        m.dequantize_row(r, row.data());
        for (int c = 0; c < m.cols; ++c) b[size_t(c) * m.rows + r] = row[size_t(c)];
      }
      wt_.push_back(f32_matrix(b.data(), m.cols, m.rows));
      transposed_.push_back(std::move(b));
    };
    for (const auto& l : w.layers)
      for (int j = 0; j < kPerLayer; ++j) add(layer_weight(l, j));
    add(w.output);
  }
}

template <typename T>
LlamaGradient<T>::~LlamaGradient() = default;

Status check_gradient_support(const LlamaModel& model) {
  const ModelConfig& c = model.config();
  bool biases = false;
  for (const LayerWeights& l : model.weights().layers) {
    biases = biases || l.bq.present() || l.bk.present() || l.bv.present() || l.bo.present();
  }
  if (c.rope_mode != RopeMode::kNormal || c.ffn_act != FfnActivation::kSilu || c.embd_scale != 1.0f || biases) {
    return unimplemented("gradients (Fisher-weighted KVQuant calibration) are implemented for the llama graph "
                         "only, not for this '" + c.arch + "' model; --calib auto calibrates without them");
  }
  return ok_status();
}

template <typename T>
Status LlamaGradient<T>::forward(ExecContext& ctx, std::span<const int32_t> tokens, const ProjectionNudge& nudge,
                                 State& s) {
  const ModelConfig& c = model_.config();
  const LlamaWeights& w = model_.weights();
  KVQ_RETURN_IF_ERROR(check_gradient_support(model_));
  const int n = int(tokens.size());
  if (n < 2) return invalid_argument("a gradient window needs at least 2 tokens");
  for (int32_t id : tokens) {
    if (id < 0 || id >= c.n_vocab) return invalid_argument("token id out of range");
  }
  const int d = c.n_embd, qd = c.q_dim(), kd = c.kv_dim(), ff = c.n_ff, hd = c.head_dim;
  const int group = c.n_heads / c.n_kv_heads;
  const T scale = T(1) / T(std::sqrt(float(hd)));
  s.n = n;
  s.rope_cs.resize(size_t(n) * size_t(c.rope_dim));
  model_.rope().ggml_angles(0, n, s.rope_cs.data());
  s.layers.resize(size_t(c.n_layers));
  std::vector<T> x(size_t(n) * d), tmp(size_t(n) * std::max(d, ff));
  std::vector<float> emb(static_cast<size_t>(d));
  for (int t = 0; t < n; ++t) {
    w.token_embd.dequantize_row(tokens[size_t(t)], emb.data(), KernelPath::kRef);
    for (int i = 0; i < d; ++i) x[size_t(t) * d + i] = T(emb[size_t(i)]);
  }
  for (int il = 0; il < c.n_layers; ++il) {
    const LayerWeights& lw = w.layers[size_t(il)];
    auto& L = s.layers[size_t(il)];
    L.x_in = x;
    L.h1.resize(size_t(n) * d);
    L.r1.resize(size_t(n));
    rmsnorm_fwd(x.data(), lw.attn_norm.f32(), L.h1.data(), L.r1.data(), n, d, c.rms_eps);
    L.q.resize(size_t(n) * qd);
    L.k.resize(size_t(n) * kd);
    L.v.resize(size_t(n) * kd);
    mm(ctx, lw.wq, L.h1.data(), L.q.data(), n);
    mm(ctx, lw.wk, L.h1.data(), L.k.data(), n);
    mm(ctx, lw.wv, L.h1.data(), L.v.data(), n);
    if (nudge.layer == il) (nudge.value ? L.v : L.k)[size_t(nudge.token) * kd + nudge.channel] += T(nudge.delta);
    L.k_pre = L.k;
    rope(s.rope_cs, c.rope_dim, L.q.data(), n, c.n_heads, hd, false);
    rope(s.rope_cs, c.rope_dim, L.k.data(), n, c.n_kv_heads, hd, false);
    // Causal softmax attention; P kept for the backward. One task per kv head.
    L.p.assign(size_t(c.n_heads) * n * n, T(0));
    L.o.assign(size_t(n) * qd, T(0));
    ctx.pool().parallel_for(c.n_kv_heads, [&](int64_t kvh, int) {
      for (int h = int(kvh) * group; h < int(kvh + 1) * group; ++h) {
        for (int t = 0; t < n; ++t) {
          T* p = &L.p[(size_t(h) * n + t) * n];
          const T* q = &L.q[(size_t(t) * c.n_heads + h) * hd];
          T mx = -INFINITY;
          for (int j = 0; j <= t; ++j) {
            const T* k = &L.k[(size_t(j) * c.n_kv_heads + kvh) * hd];
            T dot = 0;
            for (int i = 0; i < hd; ++i) dot += q[i] * k[i];
            p[j] = dot * scale;
            mx = std::max(mx, p[j]);
          }
          T sum = 0;
          for (int j = 0; j <= t; ++j) sum += (p[j] = std::exp(p[j] - mx));
          T* o = &L.o[(size_t(t) * c.n_heads + h) * hd];
          for (int j = 0; j <= t; ++j) {
            p[j] /= sum;
            const T* v = &L.v[(size_t(j) * c.n_kv_heads + kvh) * hd];
            for (int i = 0; i < hd; ++i) o[i] += p[j] * v[i];
          }
        }
      }
    });
    mm(ctx, lw.wo, L.o.data(), tmp.data(), n);
    for (size_t i = 0; i < x.size(); ++i) x[i] += tmp[i];
    L.x_mid = x;
    L.h2.resize(size_t(n) * d);
    L.r2.resize(size_t(n));
    rmsnorm_fwd(x.data(), lw.ffn_norm.f32(), L.h2.data(), L.r2.data(), n, d, c.rms_eps);
    L.g.resize(size_t(n) * ff);
    L.u.resize(size_t(n) * ff);
    mm(ctx, lw.w_gate, L.h2.data(), L.g.data(), n);
    mm(ctx, lw.w_up, L.h2.data(), L.u.data(), n);
    std::vector<T> a(size_t(n) * ff);
    for (size_t i = 0; i < a.size(); ++i) a[i] = L.g[i] * sigmoid(L.g[i]) * L.u[i];
    mm(ctx, lw.w_down, a.data(), tmp.data(), n);
    for (size_t i = 0; i < x.size(); ++i) x[i] += tmp[i];
  }
  s.x_out = x;
  s.hf.resize(size_t(n) * d);
  s.rf.resize(size_t(n));
  rmsnorm_fwd(x.data(), w.output_norm.f32(), s.hf.data(), s.rf.data(), n, d, c.rms_eps);
  s.logits.resize(size_t(n) * c.n_vocab);
  mm(ctx, w.output, s.hf.data(), s.logits.data(), n);
  double loss = 0;
  for (int t = 0; t + 1 < n; ++t) {
    const T* lg = &s.logits[size_t(t) * c.n_vocab];
    loss += log_sum_exp(lg, c.n_vocab) - double(lg[tokens[size_t(t) + 1]]);
  }
  s.loss = loss / double(n - 1);
  return ok_status();
}

template <typename T>
StatusOr<double> LlamaGradient<T>::loss(ExecContext& ctx, std::span<const int32_t> tokens,
                                        const ProjectionNudge& nudge) {
  State s;
  KVQ_RETURN_IF_ERROR(forward(ctx, tokens, nudge, s));
  return s.loss;
}

template <typename T>
StatusOr<KvGradients<T>> LlamaGradient<T>::compute(ExecContext& ctx, std::span<const int32_t> tokens) {
  State s;
  KVQ_RETURN_IF_ERROR(forward(ctx, tokens, ProjectionNudge{}, s));
  const ModelConfig& c = model_.config();
  const LlamaWeights& w = model_.weights();
  const int n = s.n, d = c.n_embd, qd = c.q_dim(), kd = c.kv_dim(), ff = c.n_ff, hd = c.head_dim, nv = c.n_vocab;
  const int group = c.n_heads / c.n_kv_heads;
  const T scale = T(1) / T(std::sqrt(float(hd)));
  auto wt = [&](int il, int j) -> const Matrix& {
    static const Matrix kNone{};
    return wt_.empty() ? kNone : wt_[size_t(il) * kPerLayer + size_t(j)];
  };
  KvGradients<T> out;
  out.loss = s.loss;
  out.k.resize(size_t(c.n_layers));
  out.v.resize(size_t(c.n_layers));
  out.k_act.resize(size_t(c.n_layers));
  out.v_act.resize(size_t(c.n_layers));

  // d loss / d logits = (softmax - onehot) / (n - 1); the last position predicts nothing.
  std::vector<T> dlogits(size_t(n) * nv, T(0));
  for (int t = 0; t + 1 < n; ++t) {
    const T* lg = &s.logits[size_t(t) * nv];
    const double lse = log_sum_exp(lg, nv);
    T* dl = &dlogits[size_t(t) * nv];
    for (int i = 0; i < nv; ++i) dl[i] = T(std::exp(double(lg[i]) - lse)) / T(n - 1);
    dl[tokens[size_t(t) + 1]] -= T(1) / T(n - 1);
  }
  std::vector<T> dh(size_t(n) * std::max(d, ff)), dx(size_t(n) * d, T(0));
  mm_t(ctx, w.output, wt_.empty() ? Matrix{} : wt_.back(), dlogits.data(), dh.data(), n);
  rmsnorm_bwd(s.x_out.data(), s.rf.data(), w.output_norm.f32(), dh.data(), dx.data(), n, d);

  std::vector<T> da(size_t(n) * ff), dg(size_t(n) * ff), du(size_t(n) * ff), tmp(size_t(n) * d);
  std::vector<T> dq(size_t(n) * qd), dk(size_t(n) * kd), dv(size_t(n) * kd), d_o(size_t(n) * qd);
  for (int il = c.n_layers - 1; il >= 0; --il) {
    const LayerWeights& lw = w.layers[size_t(il)];
    auto& L = s.layers[size_t(il)];
    // FFN: x_out = x_mid + W_down (silu(g) * u).
    mm_t(ctx, lw.w_down, wt(il, 6), dx.data(), da.data(), n);
    for (size_t i = 0; i < da.size(); ++i) {
      const T sg = sigmoid(L.g[i]);
      du[i] = da[i] * L.g[i] * sg;
      dg[i] = da[i] * L.u[i] * sg * (T(1) + L.g[i] * (T(1) - sg));
    }
    mm_t(ctx, lw.w_gate, wt(il, 4), dg.data(), dh.data(), n);
    mm_t(ctx, lw.w_up, wt(il, 5), du.data(), tmp.data(), n);
    for (size_t i = 0; i < size_t(n) * d; ++i) dh[i] += tmp[i];
    rmsnorm_bwd(L.x_mid.data(), L.r2.data(), lw.ffn_norm.f32(), dh.data(), dx.data(), n, d);  // dx is now d x_mid
    // Attention: x_mid = x_in + W_o o.
    mm_t(ctx, lw.wo, wt(il, 3), dx.data(), d_o.data(), n);
    std::fill(dq.begin(), dq.end(), T(0));
    std::fill(dk.begin(), dk.end(), T(0));
    std::fill(dv.begin(), dv.end(), T(0));
    ctx.pool().parallel_for(c.n_kv_heads, [&](int64_t kvh, int worker) {
      std::vector<T> dp(static_cast<size_t>(n));
      for (int h = int(kvh) * group; h < int(kvh + 1) * group; ++h) {
        for (int t = 0; t < n; ++t) {
          const T* p = &L.p[(size_t(h) * n + t) * n];
          const T* dot = &d_o[(size_t(t) * c.n_heads + h) * hd];
          T row = 0;
          for (int j = 0; j <= t; ++j) {
            const T* v = &L.v[(size_t(j) * c.n_kv_heads + kvh) * hd];
            T* dvj = &dv[(size_t(j) * c.n_kv_heads + kvh) * hd];
            T acc = 0;
            for (int i = 0; i < hd; ++i) {
              acc += dot[i] * v[i];
              dvj[i] += p[j] * dot[i];
            }
            dp[size_t(j)] = acc;
            row += p[j] * acc;
          }
          const T* q = &L.q[(size_t(t) * c.n_heads + h) * hd];
          T* dqt = &dq[(size_t(t) * c.n_heads + h) * hd];
          for (int j = 0; j <= t; ++j) {
            const T ds = p[j] * (dp[size_t(j)] - row) * scale;
            const T* k = &L.k[(size_t(j) * c.n_kv_heads + kvh) * hd];
            T* dkj = &dk[(size_t(j) * c.n_kv_heads + kvh) * hd];
            for (int i = 0; i < hd; ++i) {
              dqt[i] += ds * k[i];
              dkj[i] += ds * q[i];
            }
          }
        }
      }
    });
    // Back through RoPE: the gradient w.r.t. the key-projection output is before RoPE.
    rope(s.rope_cs, c.rope_dim, dq.data(), n, c.n_heads, hd, true);
    rope(s.rope_cs, c.rope_dim, dk.data(), n, c.n_kv_heads, hd, true);
    out.k[size_t(il)] = dk;
    out.v[size_t(il)] = dv;
    out.k_act[size_t(il)] = std::move(L.k_pre);
    out.v_act[size_t(il)] = L.v;
    mm_t(ctx, lw.wq, wt(il, 0), dq.data(), dh.data(), n);
    mm_t(ctx, lw.wk, wt(il, 1), dk.data(), tmp.data(), n);
    for (size_t i = 0; i < size_t(n) * d; ++i) dh[i] += tmp[i];
    mm_t(ctx, lw.wv, wt(il, 2), dv.data(), tmp.data(), n);
    for (size_t i = 0; i < size_t(n) * d; ++i) dh[i] += tmp[i];
    rmsnorm_bwd(L.x_in.data(), L.r1.data(), lw.attn_norm.f32(), dh.data(), dx.data(), n, d);  // dx is now d x_in
  }
  return out;
}

template class LlamaGradient<float>;
template class LlamaGradient<double>;

}  // namespace kvq
