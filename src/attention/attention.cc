// SPDX-License-Identifier: MIT
#include "attention/attention.h"

#include <cmath>
#include <cstring>

#include "kernels/cpu/ops.h"
#include "kernels/ref/ops_ref.h"

namespace kvq {

namespace {

// Scores of one query head against kv rows [0, n_kv) of one kv head, across pages.
void dense_scores(const DenseKvLayerView& v, KernelPath path, const float* q, int kvh, int n_kv,
                  float scale, float* scores) {
  const int hd = v.head_dim;
  for (int p0 = 0, page = 0; p0 < n_kv; p0 += v.page_tokens, ++page) {
    const int rows = std::min(v.page_tokens, n_kv - p0);
    const size_t off = size_t(kvh) * size_t(v.page_tokens) * size_t(hd);
    if (v.dtype == DType::kF32) {
      const float* k = static_cast<const float*>(v.k_pages[page]) + off;
      if (path == KernelPath::kRef) {
        for (int j = 0; j < rows; ++j) scores[p0 + j] = ref::dot_ref(q, k + size_t(j) * hd, hd) * scale;
      } else {
        cpu::attn_scores_f32(q, k, rows, hd, scale, scores + p0);
      }
    } else {
      const f16_t* k = static_cast<const f16_t*>(v.k_pages[page]) + off;
      if (path == KernelPath::kRef) {
        for (int j = 0; j < rows; ++j) scores[p0 + j] = ref::dot_f16_ref(q, k + size_t(j) * hd, hd) * scale;
      } else {
        cpu::attn_scores_f16(q, k, rows, hd, scale, scores + p0);
      }
    }
  }
}

void dense_accumulate(const DenseKvLayerView& v, KernelPath path, const float* probs, int kvh,
                      int n_kv, float* out) {
  const int hd = v.head_dim;
  for (int p0 = 0, page = 0; p0 < n_kv; p0 += v.page_tokens, ++page) {
    const int rows = std::min(v.page_tokens, n_kv - p0);
    const size_t off = size_t(kvh) * size_t(v.page_tokens) * size_t(hd);
    if (v.dtype == DType::kF32) {
      const float* vr = static_cast<const float*>(v.v_pages[page]) + off;
      if (path == KernelPath::kRef) {
        for (int j = 0; j < rows; ++j) ref::axpy_ref(probs[p0 + j], vr + size_t(j) * hd, out, hd);
      } else {
        cpu::attn_accumulate_f32(probs + p0, vr, rows, hd, out);
      }
    } else {
      const f16_t* vr = static_cast<const f16_t*>(v.v_pages[page]) + off;
      if (path == KernelPath::kRef) {
        for (int j = 0; j < rows; ++j) ref::axpy_f16_ref(probs[p0 + j], vr + size_t(j) * hd, out, hd);
      } else {
        cpu::attn_accumulate_f16(probs + p0, vr, rows, hd, out);
      }
    }
  }
}

}  // namespace

Status attend(ExecContext& ctx, const AttentionParams& p, const KvCache& cache, int il,
              const float* q, int n_tokens, int pos0, float* out) {
  DenseKvLayerView view;
  if (!cache.dense_view(il, &view)) {
    return unimplemented("no attention path for the '" + cache.name() + "' cache layout");
  }
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
    dense_scores(view, path, qh, kvh, n_kv, p.scale, scores);
    if (path == KernelPath::kRef) {
      ref::softmax_ref(scores, n_kv);
      if (f16) {
        for (int j = 0; j < n_kv; ++j) scores[j] = round_to_f16(scores[j]);
      }
    } else {
      cpu::softmax(scores, n_kv, f16);
    }
    std::memset(oh, 0, size_t(p.head_dim) * sizeof(float));
    dense_accumulate(view, path, scores, kvh, n_kv, oh);
  });
  return ok_status();
}

}  // namespace kvq
