// SPDX-License-Identifier: MIT
// A KV cache made of a key store and a value store (kv_store.h), each in its own format.
#pragma once

#include <algorithm>
#include <memory>

#include "kv/kv_cache.h"
#include "kv/kv_store.h"

namespace kvq {

class CompositeKvCache final : public KvCache {
 public:
  // k and v take their storage from pool.
  CompositeKvCache(std::shared_ptr<PagePool> pool, std::unique_ptr<KvStore> k, std::unique_ptr<KvStore> v);

  std::string name() const override;
  bool pre_rope() const override { return k_->pre_rope(); }
  bool batch_invariant() const override { return k_->batch_invariant() && v_->batch_invariant(); }
  Status append(int il, int n_tokens, const float* k, const float* v) override;
  int n_tokens(int il) const override { return k_->n_tokens(il); }
  Status truncate(int n_tokens) override;
  Status shift(int n_keep, int n_drop, const Rope& rope) override;
  Status check_shift(int n_keep, int n_drop) const override;
  int sink_tokens() const override { return std::max(k_->sink_tokens(), v_->sink_tokens()); }
  // The pool the stores allocate from.
  const PagePool& pool() const { return *pool_; }
  size_t bytes_used() const override { return k_->bytes_used() + v_->bytes_used(); }
  size_t bytes_for(int n_tokens) const override { return k_->bytes_for(n_tokens) + v_->bytes_for(n_tokens); }
  void read(int il, int kvh, int t0, int n, float* k, float* v) const override;
  void views(int il, KvStoreView* k, KvStoreView* v) const override {
    *k = k_->view(il);
    *v = v_->view(il);
  }
  void set_eager(bool eager) override;
  Status end_step() override;
  // The key store's state, then the value store's.
  void write_state(ByteWriter& w) const override;
  Status read_state(ByteReader& r, int n_tokens) override;
  uint64_t calibration_hash() const override;

  const KvStore& keys() const { return *k_; }
  const KvStore& values() const { return *v_; }

 private:
  std::shared_ptr<PagePool> pool_;  // declared first: outlives the stores
  std::unique_ptr<KvStore> k_, v_;
};

}  // namespace kvq
