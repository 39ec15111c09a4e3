// SPDX-License-Identifier: MIT
// Full-precision store (f32 or f16) for one of K/V, used when keys and values use different
// schemes (e.g. --cache-k kvquant-3 --cache-v f16). Keys may be kept before RoPE.
#pragma once

#include <vector>

#include "kv/paged_store.h"
#include "tensor/dtype.h"

namespace kvq {

class DenseStore final : public PagedStore {
 public:
  DenseStore(const KvCacheShape& shape, PagePool* pool, DType dtype, bool pre_rope);
  std::string name() const override;
  bool pre_rope() const override { return pre_rope_; }
  Status append(int il, int n, const float* x) override;
  void read(int il, int kvh, int t0, int n, float* out) const override;
  KvStoreView view(int il) const override;
  // Full precision: post-RoPE keys are re-rotated to their new positions.
  Status check_shift(int n_keep, int n_drop, bool rerotate) const override { return ok_status(); }
  void shift(int n_keep, int n_drop, const Rope* rope) override;

 private:
  DType dtype_;  // record: [n_kv_heads, head_dim] of dtype_
  bool pre_rope_;
};

}  // namespace kvq
