// SPDX-License-Identifier: MIT
#include "kv/uniform_store.h"

#include <cstring>

#include "quant/uniform_group_math.h"

namespace kvq {

StatusOr<std::unique_ptr<KvStore>> UniformStore::make(const KvCacheShape& shape, PagePool* pool, int bits,
                                                      int group_size) {
  if (!is_packable_bits(bits)) return invalid_argument("int-b supports 2, 3, 4 and 8 bits");
  const size_t row = shape.row_values();
  if (group_size < 0 || (group_size > 0 && row % size_t(group_size) != 0)) {
    return invalid_argument("int group size g=" + std::to_string(group_size) +
                            " must divide the K/V vector of " + std::to_string(row) + " values");
  }
  const size_t hd = size_t(shape.head_dim);
  if (group_size > 0 && hd % size_t(group_size) != 0) {
    return unimplemented("int group size g=" + std::to_string(group_size) + " spans KV heads (head_dim " +
                         std::to_string(hd) + "): use a g that divides head_dim, or the whole vector");
  }
  if (hd * size_t(bits) % 8 != 0) {
    return unimplemented("int-" + std::to_string(bits) + " needs head_dim * bits to be a multiple of 8 (head_dim " +
                         std::to_string(hd) + ")");
  }
  UniformParams p;
  p.bits = bits;
  p.group_size = group_size;
  p.symmetric = false;
  return std::unique_ptr<KvStore>(new UniformStore(shape, pool, p));
}

// The record is UniformRowLayout over the whole vector in token-major order: its codes are a
// part per head (head_dim * bits is whole bytes), its scales and zeros the extras.
UniformStore::UniformStore(const KvCacheShape& shape, PagePool* pool, UniformParams p)
    : PagedStore(shape, pool, packed_bytes(p.bits, size_t(shape.head_dim)),
                 UniformRowLayout{p.bits, shape.row_values(), p.group_size}.meta_bytes()),
      p_(p),
      layout_{p.bits, shape.row_values(), p.group_size} {}

std::string UniformStore::name() const {
  return "int" + std::to_string(p_.bits) + (p_.group_size ? ":g=" + std::to_string(p_.group_size) : "");
}

Status UniformStore::append(int il, int n, const float* x) {
  PagedRows& r = rows_[size_t(il)];
  const int t0 = r.n_tokens();
  KVQ_RETURN_IF_ERROR(r.resize(t0 + n));
  const size_t row = shape().row_values();
  std::vector<uint8_t> rec(r.record_bytes());
  for (int t = 0; t < n; ++t) {
    const Status s = quantize_uniform_row(x + size_t(t) * row, row, p_, rec.data(),
                                          reinterpret_cast<f16_t*>(rec.data() + layout_.scales_offset()),
                                          reinterpret_cast<f16_t*>(rec.data() + layout_.zeros_offset()));
    if (!s.ok()) {
      (void)r.resize(t0);
      return s;
    }
    r.put(t0 + t, rec.data());
  }
  return ok_status();
}

void UniformStore::read(int il, int kvh, int t0, int n, float* out) const {
  const PagedRows& r = rows_[size_t(il)];
  const size_t hd = size_t(shape().head_dim), row = shape().row_values();
  const size_t g_size = p_.group_size ? size_t(p_.group_size) : row;
  const size_t off = size_t(kvh) * hd;
  // A head that starts on a byte and a group boundary is one dequantize_uniform_row call.
  const bool aligned = off * size_t(p_.bits) % 8 == 0 && (g_size == row || hd % g_size == 0);
  std::vector<uint8_t> buf(r.record_bytes());
  const uint8_t* rec = buf.data();
  for (int t = 0; t < n; ++t) {
    r.get(t0 + t, buf.data());
    const auto* scales = reinterpret_cast<const f16_t*>(rec + layout_.scales_offset());
    const auto* zeros = reinterpret_cast<const f16_t*>(rec + layout_.zeros_offset());
    if (aligned) {
      UniformParams hp = p_;
      const size_t g0 = g_size == row ? 0 : off / g_size;
      dequantize_uniform_row(rec + off * size_t(p_.bits) / 8, scales + g0, zeros + g0, hd, hp, out + size_t(t) * hd);
      continue;
    }
    for (size_t i = 0; i < hd; ++i) {
      const size_t e = size_t(kvh) * hd + i;
      const size_t g = e / g_size;
      const auto q = detail::uniform_group_q_stored(p_.bits, false, scales[g], zeros[g]);
      out[size_t(t) * hd + i] = detail::uniform_value(code_at(rec, p_.bits, e), q);
    }
  }
}

}  // namespace kvq

namespace kvq {

KvStoreView UniformStore::view(int il) const {
  const PagedRows& r = rows_[size_t(il)];
  const int hd = shape().head_dim;
  KvStoreView v;
  v.n_tokens = r.n_tokens();
  KvSegment& seg = v.add();
  seg = r.segment(KvFormat::kUniformRow, hd);
  // Extras per token: the layout's scales then zeros (the extras start at its scales); head h
  // starts at group h * hd / g (group 0 for all heads when the vector is one group).
  seg.meta_head_step = p_.group_size > 0 ? ptrdiff_t(2 * hd / p_.group_size) : 0;
  KvRun& p = seg.proto;
  p.bits = p_.bits;
  p.group = p_.group_size > 0 ? p_.group_size : hd;
  p.zeros_off = ptrdiff_t(layout_.zeros_offset() - layout_.scales_offset());
  return v;
}

}  // namespace kvq
