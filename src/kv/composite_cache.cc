// SPDX-License-Identifier: MIT
#include "kv/composite_cache.h"

#include "base/check.h"

namespace kvq {

CompositeKvCache::CompositeKvCache(std::shared_ptr<PagePool> pool, std::unique_ptr<KvStore> k,
                                   std::unique_ptr<KvStore> v)
    : KvCache(k->shape()), pool_(std::move(pool)), k_(std::move(k)), v_(std::move(v)) {}

std::string CompositeKvCache::name() const {
  const std::string k = k_->name(), v = v_->name();
  return k == v ? k : "K=" + k + ",V=" + v;
}

Status CompositeKvCache::append(int il, int n, const float* k, const float* v) {
  KVQ_CHECK(il >= 0 && il < shape().n_layers && n >= 0);
  const int have = k_->n_tokens(il);
  if (have + n > shape().n_ctx) {
    return invalid_argument("the context is full: " + std::to_string(have) + " + " +
                            std::to_string(n) + " tokens exceed -c " + std::to_string(shape().n_ctx));
  }
  KVQ_RETURN_IF_ERROR(k_->append(il, n, k));
  const Status s = v_->append(il, n, v);
  if (!s.ok()) {
    // Keep K and V the same length: drop the keys just added where the format allows.
    (void)k_->truncate(have);
    return s;
  }
  return ok_status();
}

Status CompositeKvCache::truncate(int n) {
  KVQ_RETURN_IF_ERROR(k_->truncate(n));
  return v_->truncate(n);
}

Status CompositeKvCache::shift(int n_keep, int n_drop, const Rope& rope) {
  const int n = n_tokens(0);
  for (int il = 1; il < shape().n_layers; ++il) KVQ_CHECK(n_tokens(il) == n);
  if (n_keep < 0 || n_drop <= 0 || n_keep + n_drop > n) {
    return invalid_argument("context shift: cannot drop " + std::to_string(n_drop) + " tokens after the first " +
                            std::to_string(n_keep) + " of " + std::to_string(n));
  }
  KVQ_RETURN_IF_ERROR(check_shift(n_keep, n_drop));
  const bool rerotate = !k_->pre_rope();
  k_->shift(n_keep, n_drop, rerotate ? &rope : nullptr);
  v_->shift(n_keep, n_drop, nullptr);
  return ok_status();
}

Status CompositeKvCache::check_shift(int n_keep, int n_drop) const {
  KVQ_RETURN_IF_ERROR(k_->check_shift(n_keep, n_drop, !k_->pre_rope()));
  return v_->check_shift(n_keep, n_drop, false);
}

void CompositeKvCache::read(int il, int kvh, int t0, int n, float* k, float* v) const {
  k_->read(il, kvh, t0, n, k);
  v_->read(il, kvh, t0, n, v);
}

Status CompositeKvCache::end_step() {
  KVQ_RETURN_IF_ERROR(k_->end_step());
  return v_->end_step();
}

void CompositeKvCache::set_eager(bool eager) {
  k_->set_eager(eager);
  v_->set_eager(eager);
}

}  // namespace kvq
