// SPDX-License-Identifier: MIT
// The KV cache interface. One sequence; tokens occupy positions 0..n_tokens-1 in order.
// Designed for the quantized caches too: keys may be stored before RoPE (KVQuant), caches may
// hold a full-precision window (KIVI), fp16 sink tokens and sparse outliers; all of it sits
// behind append / a per-layer view / truncate / clear / bytes_used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "kvq/status.h"
#include "tensor/dtype.h"

namespace kvq {

struct KvCacheShape {
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int n_ctx = 0;  // capacity in tokens
  // Values per token per layer for K (and for V).
  size_t row_values() const { return size_t(n_kv_heads) * size_t(head_dim); }
};

// A dense cache layer as the attention code sees it. Tokens live in pages of page_tokens;
// page p holds tokens [p * page_tokens, (p + 1) * page_tokens) laid out as
// K: [n_kv_heads, page_tokens, head_dim] and V: [n_kv_heads, page_tokens, head_dim].
struct DenseKvLayerView {
  DType dtype = DType::kF32;
  int n_tokens = 0;
  int page_tokens = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  const void* const* k_pages = nullptr;
  const void* const* v_pages = nullptr;
};

class KvCache {
 public:
  explicit KvCache(const KvCacheShape& shape) : shape_(shape) {}
  virtual ~KvCache() = default;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  // The cache spec string, e.g. "f16".
  virtual std::string name() const = 0;
  const KvCacheShape& shape() const { return shape_; }
  // True when append() expects keys before RoPE (RoPE is then applied at attention time).
  virtual bool keys_pre_rope() const { return false; }

  // Appends n_tokens consecutive tokens to layer il at positions [n_tokens(il), +n_tokens).
  // k, v: [n_tokens, n_kv_heads, head_dim] f32. Errors: kInvalidArgument when the context
  // is full, kOutOfMemory when storage cannot be allocated (nothing is appended then).
  virtual Status append(int il, int n_tokens, const float* k, const float* v) = 0;
  // Tokens stored in layer il.
  virtual int n_tokens(int il) const = 0;
  // Drops every token at position >= n_tokens in all layers.
  virtual void truncate(int n_tokens) = 0;
  virtual void clear() { truncate(0); }
  // Bytes actually allocated now, all layers, including any metadata and windows.
  virtual size_t bytes_used() const = 0;
  // Bytes that holding n_tokens tokens allocates (same accounting as bytes_used).
  virtual size_t bytes_for(int n_tokens) const = 0;

  // Dense caches expose their storage directly; other layouts return nullptr.
  virtual bool dense_view(int il, DenseKvLayerView* view) const { return false; }

 private:
  KvCacheShape shape_;
};

}  // namespace kvq
