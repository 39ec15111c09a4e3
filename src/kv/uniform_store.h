// SPDX-License-Identifier: MIT
// int-b per-token uniform baselines (KVQuant Table 1/18 "intX", ATOM/FlexGen style): each
// token's whole K or V vector (all heads) is one asymmetric min-max group, or groups of G
// values; fp16 scale and zero per group; keys after RoPE.
#pragma once

#include <vector>

#include "kv/paged_store.h"
#include "quant/kv_layout.h"
#include "quant/uniform_group.h"

namespace kvq {

class UniformStore final : public PagedStore {
 public:
  // group_size 0: the whole vector. Errors: bad bits, a group that does not divide the vector.
  static StatusOr<std::unique_ptr<KvStore>> make(const KvCacheShape& shape, PagePool* pool, int bits,
                                                 int group_size);
  std::string name() const override;
  Status append(int il, int n, const float* x) override;
  void read(int il, int kvh, int t0, int n, float* out) const override;
  KvStoreView view(int il) const override;

 private:
  UniformStore(const KvCacheShape& shape, PagePool* pool, UniformParams p);
  UniformParams p_;
  UniformRowLayout layout_;  // of a token's whole vector
};

}  // namespace kvq
