// SPDX-License-Identifier: MIT
#include "kv/composite_cache.h"

#include "base/check.h"
#include "base/hash.h"
#include "io/byte_stream.h"

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

void CompositeKvCache::write_state(ByteWriter& w) const {
  k_->write_state(w);
  v_->write_state(w);
}

Status CompositeKvCache::read_state(ByteReader& r, int n) {
  if (n < 0 || n > shape().n_ctx) {
    return invalid_argument(std::to_string(n) + " tokens do not fit this cache of " + std::to_string(shape().n_ctx));
  }
  KVQ_ASSIGN_OR_RETURN(auto k, k_->read_state(r, n));
  KVQ_ASSIGN_OR_RETURN(auto v, v_->read_state(r, n));
  if (r.left() != 0) return r.corrupt(std::to_string(r.left()) + " bytes after the cache's state");
  k_->install_state(std::move(k));
  v_->install_state(std::move(v));
  return ok_status();
}

uint64_t CompositeKvCache::calibration_hash() const {
  const uint64_t h[2] = {k_->calibration_hash(), v_->calibration_hash()};
  return h[0] == 0 && h[1] == 0 ? 0 : fnv1a(h, sizeof h);
}

void CompositeKvCache::set_eager(bool eager) {
  k_->set_eager(eager);
  v_->set_eager(eager);
}

}  // namespace kvq
