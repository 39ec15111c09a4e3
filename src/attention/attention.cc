// SPDX-License-Identifier: MIT
#include "attention/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/ops.h"
#include "kernels/ref/ops_ref.h"

namespace kvq {

namespace {

// scores[j] = scale * q . k_j over `rows` contiguous K rows, on the chosen kernel path.
void scores_rows(KernelPath path, const float* q, const float* k, int rows, int hd, float scale, float* scores) {
  if (path == KernelPath::kSimd) return cpu::attn_scores_f32(q, k, rows, hd, scale, scores);
  for (int j = 0; j < rows; ++j) scores[j] = ref::dot_ref(q, k + size_t(j) * hd, hd) * scale;
}
void scores_rows(KernelPath path, const float* q, const f16_t* k, int rows, int hd, float scale, float* scores) {
  if (path == KernelPath::kSimd) return cpu::attn_scores_f16(q, k, rows, hd, scale, scores);
  for (int j = 0; j < rows; ++j) scores[j] = ref::dot_f16_ref(q, k + size_t(j) * hd, hd) * scale;
}
// out += sum_j probs[j] * v_j over `rows` contiguous V rows.
void accumulate_rows(KernelPath path, const float* probs, const float* v, int rows, int hd, float* out) {
  if (path == KernelPath::kSimd) return cpu::attn_accumulate_f32(probs, v, rows, hd, out);
  for (int j = 0; j < rows; ++j) ref::axpy_ref(probs[j], v + size_t(j) * hd, out, hd);
}
void accumulate_rows(KernelPath path, const float* probs, const f16_t* v, int rows, int hd, float* out) {
  if (path == KernelPath::kSimd) return cpu::attn_accumulate_f16(probs, v, rows, hd, out);
  for (int j = 0; j < rows; ++j) ref::axpy_f16_ref(probs[j], v + size_t(j) * hd, out, hd);
}

// Scores of one query head against kv rows [0, n_kv) of one kv head, then the probability-
// weighted sum of its V rows, page by page. T is the cache element type.
template <typename T>
void dense_scores(const DenseKvLayerView& v, KernelPath path, const float* q, int kvh, int n_kv, float scale,
                  float* scores) {
  const size_t off = size_t(kvh) * size_t(v.page_tokens) * size_t(v.head_dim);
  for (int p0 = 0, page = 0; p0 < n_kv; p0 += v.page_tokens, ++page) {
    scores_rows(path, q, static_cast<const T*>(v.k_pages[page]) + off, std::min(v.page_tokens, n_kv - p0),
                v.head_dim, scale, scores + p0);
  }
}

template <typename T>
void dense_accumulate(const DenseKvLayerView& v, KernelPath path, const float* probs, int kvh, int n_kv,
                      float* out) {
  const size_t off = size_t(kvh) * size_t(v.page_tokens) * size_t(v.head_dim);
  for (int p0 = 0, page = 0; p0 < n_kv; p0 += v.page_tokens, ++page) {
    accumulate_rows(path, probs + p0, static_cast<const T*>(v.v_pages[page]) + off,
                    std::min(v.page_tokens, n_kv - p0), v.head_dim, out);
  }
}

constexpr int kBlockTokens = 64;  // K/V tokens dequantized at a time
constexpr int kQueryChunk = 16;   // query tokens sharing one pass over the dequantized blocks

// Reference path over any cache: one task per (kv head, chunk of query tokens). Each block of
// K/V is dequantized once per task and used by every query head of the group; each query's
// result depends only on fixed block boundaries, so decode, prefill and any thread count
// agree bit for bit.
Status attend_blocks(ExecContext& ctx, const AttentionParams& p, const KvCache& cache, int il,
                     const float* q, int n_tokens, int pos0, float* out) {
  if (cache.keys_pre_rope() && !p.rope) return internal_error("pre-RoPE cache without a RoPE table");
  const int hd = p.head_dim, group = p.n_heads / p.n_kv_heads;
  const size_t q_row = size_t(p.n_heads) * size_t(hd);
  const int n_chunks = (n_tokens + kQueryChunk - 1) / kQueryChunk;
  const KernelPath path = ctx.path();
  ctx.pool().parallel_for(int64_t(p.n_kv_heads) * n_chunks, [&](int64_t task, int worker) {
    const int kvh = int(task / n_chunks);
    const int c0 = int(task % n_chunks) * kQueryChunk;
    const int c1 = std::min(n_tokens, c0 + kQueryChunk);
    const int n_q = (c1 - c0) * group;
    // Scratch: K block, V block, scores, then running max and sum per query head.
    float* kb = ctx.scratch(worker, size_t(2 * kBlockTokens * hd + kBlockTokens + 2 * n_q));
    float* vb = kb + kBlockTokens * hd;
    float* s = vb + kBlockTokens * hd;
    float* m = s + kBlockTokens;
    float* l = m + n_q;
    for (int i = 0; i < n_q; ++i) {
      m[i] = -INFINITY;
      l[i] = 0.0f;
    }
    for (int t = c0; t < c1; ++t) {
      for (int g = 0; g < group; ++g) {
        std::memset(out + size_t(t) * q_row + size_t(kvh * group + g) * hd, 0, size_t(hd) * sizeof(float));
      }
    }
    const int kv_end = pos0 + c1;  // keys needed by the last query of the chunk
    for (int b0 = 0; b0 < kv_end; b0 += kBlockTokens) {
      const int nb = std::min(kBlockTokens, kv_end - b0);
      cache.read_block(il, kvh, b0, nb, kb, vb);
      if (cache.keys_pre_rope()) {
        for (int j = 0; j < nb; ++j) p.rope->apply(kb + size_t(j) * hd, b0 + j);
      }
      for (int t = c0; t < c1; ++t) {
        const int n_valid = std::min(nb, pos0 + t + 1 - b0);
        if (n_valid <= 0) continue;
        for (int g = 0; g < group; ++g) {
          const int h = kvh * group + g;
          const int qi = (t - c0) * group + g;
          const float* qh = q + size_t(t) * q_row + size_t(h) * hd;
          float* oh = out + size_t(t) * q_row + size_t(h) * hd;
          scores_rows(path, qh, kb, n_valid, hd, p.scale, s);
          // Online softmax (FlashAttention): rescale what was accumulated to the new max.
          float bmax = m[qi];
          for (int j = 0; j < n_valid; ++j) bmax = std::max(bmax, s[j]);
          const float corr = std::exp(m[qi] - bmax);
          float sum = 0.0f;
          for (int j = 0; j < n_valid; ++j) {
            s[j] = std::exp(s[j] - bmax);
            sum += s[j];
          }
          l[qi] = l[qi] * corr + sum;
          m[qi] = bmax;
          if (corr != 1.0f) {
            for (int d = 0; d < hd; ++d) oh[d] *= corr;
          }
          accumulate_rows(path, s, vb, n_valid, hd, oh);
        }
      }
    }
    for (int t = c0; t < c1; ++t) {
      for (int g = 0; g < group; ++g) {
        const float inv = 1.0f / l[(t - c0) * group + g];
        float* oh = out + size_t(t) * q_row + size_t(kvh * group + g) * hd;
        for (int d = 0; d < hd; ++d) oh[d] *= inv;
      }
    }
  });
  return ok_status();
}

}  // namespace

Status attend(ExecContext& ctx, const AttentionParams& p, const KvCache& cache, int il,
              const float* q, int n_tokens, int pos0, float* out) {
  DenseKvLayerView view;
  if (!cache.dense_view(il, &view)) return attend_blocks(ctx, p, cache, il, q, n_tokens, pos0, out);
  KVQ_CHECK(p.n_heads % p.n_kv_heads == 0 && view.head_dim == p.head_dim);
  KVQ_CHECK(pos0 + n_tokens <= view.n_tokens, "attention past the cached tokens");
  const int group = p.n_heads / p.n_kv_heads;
  const KernelPath path = ctx.path();
  const size_t q_row = size_t(p.n_heads) * size_t(p.head_dim);
  // One task per (token, head): its output depends only on its own inputs, so any thread count
  // gives identical results.
  ctx.pool().parallel_for(int64_t(n_tokens) * p.n_heads, [&](int64_t task, int worker) {
    const int t = int(task / p.n_heads);
    const int h = int(task % p.n_heads);
    const int kvh = h / group;
    const int n_kv = pos0 + t + 1;
    float* scores = ctx.scratch(worker, size_t(n_kv) + size_t(p.head_dim));
    float* q16 = scores + n_kv;
    const float* qh = q + size_t(t) * q_row + size_t(h) * p.head_dim;
    float* oh = out + size_t(t) * q_row + size_t(h) * p.head_dim;
    // An f16 cache is attended in f16 x f16 products: the query and the probabilities are
    // rounded to f16 as well, exactly as llama.cpp's f16-cache attention does.
    const bool f16 = view.dtype == DType::kF16;
    if (f16) {
      for (int i = 0; i < p.head_dim; ++i) q16[i] = round_to_f16(qh[i]);
      qh = q16;
    }
    if (f16) {
      dense_scores<f16_t>(view, path, qh, kvh, n_kv, p.scale, scores);
    } else {
      dense_scores<float>(view, path, qh, kvh, n_kv, p.scale, scores);
    }
    if (path == KernelPath::kRef) {
      ref::softmax_ref(scores, n_kv);
      if (f16) {
        for (int j = 0; j < n_kv; ++j) scores[j] = round_to_f16(scores[j]);
      }
    } else {
      cpu::softmax(scores, n_kv, f16);
    }
    std::memset(oh, 0, size_t(p.head_dim) * sizeof(float));
    if (f16) {
      dense_accumulate<f16_t>(view, path, scores, kvh, n_kv, oh);
    } else {
      dense_accumulate<float>(view, path, scores, kvh, n_kv, oh);
    }
  });
  return ok_status();
}

}  // namespace kvq
