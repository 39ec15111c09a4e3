// SPDX-License-Identifier: MIT
#include "kv/dense_cache.h"

#include <cstring>

#include "base/check.h"
#include "kernels/cpu/ops.h"

namespace kvq {

DenseKvCache::DenseKvCache(const KvCacheShape& shape, DType dtype)
    : KvCache(shape), dtype_(dtype), layers_(size_t(shape.n_layers)) {
  KVQ_CHECK(dtype == DType::kF32 || dtype == DType::kF16, "dense cache supports f32 and f16");
}

size_t DenseKvCache::page_bytes() const {
  return size_t(kPageTokens) * shape().row_values() * dtype_size(dtype_);
}

size_t DenseKvCache::bytes_for(int n_tokens) const {
  const size_t pages = (size_t(n_tokens) + kPageTokens - 1) / kPageTokens;
  return pages * page_bytes() * 2 * size_t(shape().n_layers);
}

size_t DenseKvCache::bytes_used() const {
  size_t total = 0;
  for (const auto& l : layers_) {
    for (const auto& p : l.k_pages) total += p.bytes();
    for (const auto& p : l.v_pages) total += p.bytes();
  }
  return total;
}

// Scatters one token's [n_kv_heads, head_dim] row into slot `slot` of a page laid out
// [n_kv_heads, kPageTokens, head_dim].
void DenseKvCache::store_row(const float* src, uint8_t* page, int slot) {
  const int hd = shape().head_dim;
  for (int h = 0; h < shape().n_kv_heads; ++h) {
    const size_t off = (size_t(h) * kPageTokens + size_t(slot)) * size_t(hd);
    if (dtype_ == DType::kF32) {
      std::memcpy(reinterpret_cast<float*>(page) + off, src + size_t(h) * hd, size_t(hd) * 4);
    } else {
      cpu::convert_f32_to_f16(src + size_t(h) * hd, reinterpret_cast<f16_t*>(page) + off,
                              size_t(hd));
    }
  }
}

Status DenseKvCache::append(int il, int n_tokens, const float* k, const float* v) {
  KVQ_CHECK(il >= 0 && il < shape().n_layers && n_tokens >= 0);
  Layer& l = layers_[size_t(il)];
  if (l.n_tokens + n_tokens > shape().n_ctx) {
    return invalid_argument("the context is full: " + std::to_string(l.n_tokens) + " + " +
                            std::to_string(n_tokens) + " tokens exceed -c " +
                            std::to_string(shape().n_ctx));
  }
  const size_t need_pages = size_t(l.n_tokens + n_tokens + kPageTokens - 1) / kPageTokens;
  while (l.k_pages.size() < need_pages) {
    AlignedBuffer<uint8_t> kp, vp;
    if (!kp.resize(page_bytes()) || !vp.resize(page_bytes())) {
      return out_of_memory("cannot allocate KV cache pages for layer " + std::to_string(il));
    }
    l.k_ptrs.push_back(kp.data());
    l.v_ptrs.push_back(vp.data());
    l.k_pages.push_back(std::move(kp));
    l.v_pages.push_back(std::move(vp));
  }
  const size_t row = shape().row_values();
  for (int t = 0; t < n_tokens; ++t) {
    const int pos = l.n_tokens + t;
    store_row(k + size_t(t) * row, l.k_pages[size_t(pos / kPageTokens)].data(), pos % kPageTokens);
    store_row(v + size_t(t) * row, l.v_pages[size_t(pos / kPageTokens)].data(), pos % kPageTokens);
  }
  l.n_tokens += n_tokens;
  return ok_status();
}

Status DenseKvCache::truncate_to(int n_tokens) {
  KVQ_CHECK(n_tokens >= 0);
  const size_t keep_pages = (size_t(n_tokens) + kPageTokens - 1) / kPageTokens;
  for (auto& l : layers_) {
    if (l.n_tokens <= n_tokens) continue;
    l.n_tokens = n_tokens;
    l.k_pages.resize(std::min(keep_pages, l.k_pages.size()));
    l.v_pages.resize(l.k_pages.size());
    l.k_ptrs.resize(l.k_pages.size());
    l.v_ptrs.resize(l.k_pages.size());
  }
  return ok_status();
}

void DenseKvCache::read_block(int il, int kvh, int t0, int n, float* k, float* v) const {
  const Layer& l = layers_[size_t(il)];
  const size_t hd = size_t(shape().head_dim);
  for (int i = 0; i < n; ++i) {
    const int t = t0 + i;
    const size_t off = (size_t(kvh) * kPageTokens + size_t(t % kPageTokens)) * hd;
    const size_t page = size_t(t / kPageTokens);
    if (dtype_ == DType::kF32) {
      std::memcpy(k + size_t(i) * hd, reinterpret_cast<const float*>(l.k_pages[page].data()) + off, hd * 4);
      std::memcpy(v + size_t(i) * hd, reinterpret_cast<const float*>(l.v_pages[page].data()) + off, hd * 4);
    } else {
      cpu::convert_f16_to_f32(reinterpret_cast<const f16_t*>(l.k_pages[page].data()) + off, k + size_t(i) * hd, hd);
      cpu::convert_f16_to_f32(reinterpret_cast<const f16_t*>(l.v_pages[page].data()) + off, v + size_t(i) * hd, hd);
    }
  }
}

bool DenseKvCache::dense_view(int il, DenseKvLayerView* view) const {
  const Layer& l = layers_[size_t(il)];
  view->dtype = dtype_;
  view->n_tokens = l.n_tokens;
  view->page_tokens = kPageTokens;
  view->n_kv_heads = shape().n_kv_heads;
  view->head_dim = shape().head_dim;
  view->k_pages = l.k_ptrs.data();
  view->v_pages = l.v_ptrs.data();
  return true;
}

}  // namespace kvq
