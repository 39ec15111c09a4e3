// SPDX-License-Identifier: MIT
#include "kv/rotated_store.h"

#include <string>

#include "kernels/cpu/ops.h"
#include "kernels/ref/hadamard_ref.h"

namespace kvq {

Status pre_rope_rotation_error(const std::string& spec) {
  return invalid_argument("'" + spec + "' as keys: keys stored before RoPE cannot be rotated (RoPE is applied "
                          "between the cache and the query, so the rotation cannot move onto the query): add "
                          "prerope=0, or rotate only the values (--cache-v SPEC:rot=1)");
}

StatusOr<std::unique_ptr<KvStore>> RotatedStore::make(std::unique_ptr<KvStore> inner, KvRole role) {
  const int hd = inner->shape().head_dim;
  if (!hadamard_size_ok(hd)) {
    std::string spec = "'";
    spec += inner->name();
    spec += ":rot=1': ";
    return invalid_argument(spec + "the Hadamard rotation needs head_dim a power of two, this model's is " +
                            std::to_string(hd));
  }
  if (role == KvRole::kKey && inner->pre_rope()) return pre_rope_rotation_error(inner->name() + ":rot=1");
  return std::unique_ptr<KvStore>(new RotatedStore(std::move(inner)));
}

RotatedStore::RotatedStore(std::unique_ptr<KvStore> inner)
    : KvStore(inner->shape(), nullptr), inner_(std::move(inner)), signs_(size_t(shape().head_dim)) {
  hadamard_signs(shape().head_dim, signs_.data());
}

Status RotatedStore::append(int il, int n, const float* x) {
  const size_t values = size_t(n) * shape().row_values();
  buf_.assign(x, x + values);
  cpu::hadamard_rows(buf_.data(), n * shape().n_kv_heads, shape().head_dim, signs_.data(), false);
  return inner_->append(il, n, buf_.data());
}

void RotatedStore::read(int il, int kvh, int t0, int n, float* out) const {
  inner_->read(il, kvh, t0, n, out);
  ref::hadamard_rows_ref(out, n, shape().head_dim, signs_.data(), true);
}

KvStoreView RotatedStore::view(int il) const {
  KvStoreView v = inner_->view(il);
  v.rotated = true;
  return v;
}

Status RotatedStore::check_shift(int n_keep, int n_drop, bool rerotate) const {
  if (rerotate) {
    return unimplemented("context shift: keys stored rotated (rot=1) after RoPE cannot move to new positions");
  }
  return inner_->check_shift(n_keep, n_drop, rerotate);
}

}  // namespace kvq
