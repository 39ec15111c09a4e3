// SPDX-License-Identifier: MIT
// llama.cpp's q8_0 / q4_0 cache types: per token and head, blocks of 32 values along head_dim
// (quant/ggml_blocks.h), keys after RoPE, for like-for-like comparison with llama.cpp.
#pragma once

#include <vector>

#include "kv/kv_store.h"
#include "kv/paged_rows.h"

namespace kvq {

class GgmlStore final : public KvStore {
 public:
  // Errors: kUnimplemented when head_dim is not a multiple of 32.
  static StatusOr<std::unique_ptr<KvStore>> make(const KvCacheShape& shape, int bits);
  std::string name() const override { return bits_ == 8 ? "q8_0" : "q4_0"; }
  Status append(int il, int n, const float* x) override;
  int n_tokens(int il) const override { return rows_[size_t(il)].n_tokens(); }
  void read(int il, int kvh, int t0, int n, float* out) const override;
  Status truncate(int n) override;
  size_t bytes_used() const override;
  size_t bytes_for(int n) const override { return rows_[0].bytes_for(n) * rows_.size(); }

 private:
  GgmlStore(const KvCacheShape& shape, int bits);
  size_t head_bytes() const;
  int bits_;
  std::vector<PagedRows> rows_;  // per layer; record: n_kv_heads * head_bytes()
};

}  // namespace kvq
