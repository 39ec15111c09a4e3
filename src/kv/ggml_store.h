// SPDX-License-Identifier: MIT
// llama.cpp's q8_0 / q4_0 cache types: per token and head, blocks of 32 values along head_dim
// (quant/ggml_blocks.h), keys after RoPE, for like-for-like comparison with llama.cpp.
#pragma once

#include <vector>

#include "kv/paged_store.h"

namespace kvq {

class GgmlStore final : public PagedStore {
 public:
  // Errors: kUnimplemented when head_dim is not a multiple of 32.
  static StatusOr<std::unique_ptr<KvStore>> make(const KvCacheShape& shape, PagePool* pool, int bits);
  std::string name() const override { return bits_ == 8 ? "q8_0" : "q4_0"; }
  Status append(int il, int n, const float* x) override;
  void read(int il, int kvh, int t0, int n, float* out) const override;
  KvStoreView view(int il) const override;

 private:
  GgmlStore(const KvCacheShape& shape, PagePool* pool, int bits);
  // Blocks of one head of one token; a record holds n_kv_heads of them.
  static size_t head_bytes(const KvCacheShape& shape, int bits);
  size_t head_bytes() const { return head_bytes(shape(), bits_); }
  int bits_;
};

}  // namespace kvq
