// SPDX-License-Identifier: MIT
// Full-precision store (f32 or f16) for one of K/V, used when keys and values use different
// schemes (e.g. --cache-k kvquant-3 --cache-v f16). Keys may be kept before RoPE.
#pragma once

#include <vector>

#include "kv/kv_store.h"
#include "kv/paged_rows.h"
#include "tensor/dtype.h"

namespace kvq {

class DenseStore final : public KvStore {
 public:
  DenseStore(const KvCacheShape& shape, DType dtype, bool pre_rope);
  std::string name() const override;
  bool pre_rope() const override { return pre_rope_; }
  Status append(int il, int n, const float* x) override;
  int n_tokens(int il) const override { return rows_[size_t(il)].n_tokens(); }
  void read(int il, int kvh, int t0, int n, float* out) const override;
  Status truncate(int n) override;
  size_t bytes_used() const override;
  size_t bytes_for(int n) const override { return rows_[0].bytes_for(n) * rows_.size(); }

 private:
  DType dtype_;
  bool pre_rope_;
  std::vector<PagedRows> rows_;  // per layer; record: [n_kv_heads, head_dim] of dtype_
};

}  // namespace kvq
