// SPDX-License-Identifier: MIT
// A store that holds its rows in the randomized Hadamard basis (`:rot=1` in a cache spec,
// issue 13): each head vector x is appended as R x (kernels/ref/hadamard_ref.h) to the store
// it wraps, which quantizes it as usual. Attention reads the wrapped store's pages in place and
// undoes R once per query head (kv_view.h `rotated`): for values R^T sum_t p_t R v_t, for keys
// (R q) . (R k) = q . k. R spreads a vector's energy over its channels, so per-token grids see
// fewer outliers. The seed is fixed: the rotation stores no bits.
#pragma once

#include <memory>
#include <vector>

#include "kv/kv_store.h"

namespace kvq {

// The error for rot=1 on keys stored before RoPE (spec: the store's spec text).
Status pre_rope_rotation_error(const std::string& spec);

class RotatedStore final : public KvStore {
 public:
  // Errors: head_dim not a power of two; keys stored before RoPE (RoPE sits between the cache
  // and the query, so R cannot be moved onto the query there).
  static StatusOr<std::unique_ptr<KvStore>> make(std::unique_ptr<KvStore> inner, KvRole role);

  std::string name() const override { return inner_->name() + ":rot=1"; }
  bool pre_rope() const override { return false; }
  bool batch_invariant() const override { return inner_->batch_invariant(); }
  Status append(int il, int n, const float* x) override;
  int n_tokens(int il) const override { return inner_->n_tokens(il); }
  // Rotated back: the tokens as appended, up to quantization error.
  void read(int il, int kvh, int t0, int n, float* out) const override;
  KvStoreView view(int il) const override;
  Status truncate(int n) override { return inner_->truncate(n); }
  Status check_shift(int n_keep, int n_drop, bool rerotate) const override;
  void shift(int n_keep, int n_drop, const Rope* rope) override { inner_->shift(n_keep, n_drop, rope); }
  int sink_tokens() const override { return inner_->sink_tokens(); }
  size_t bytes_used() const override { return inner_->bytes_used(); }
  size_t bytes_for(int n) const override { return inner_->bytes_for(n); }
  Status end_step() override { return inner_->end_step(); }
  void set_eager(bool eager) override { inner_->set_eager(eager); }
  // The inner store's contents, as they are (rotated).
  void write_state(ByteWriter& w) const override { inner_->write_state(w); }
  StatusOr<std::unique_ptr<KvStoreState>> read_state(ByteReader& r, int n_tokens) const override {
    return inner_->read_state(r, n_tokens);
  }
  void install_state(std::unique_ptr<KvStoreState> state) override { inner_->install_state(std::move(state)); }
  uint64_t calibration_hash() const override { return inner_->calibration_hash(); }

 private:
  explicit RotatedStore(std::unique_ptr<KvStore> inner);
  std::unique_ptr<KvStore> inner_;
  std::vector<float> signs_;  // hadamard_signs(head_dim)
  std::vector<float> buf_;    // rows being appended, rotated
};

}  // namespace kvq
