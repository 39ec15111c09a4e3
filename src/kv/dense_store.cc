// SPDX-License-Identifier: MIT
#include "kv/dense_store.h"

#include <cstring>

#include "base/fp16.h"
#include "kernels/cpu/ops.h"

namespace kvq {

DenseStore::DenseStore(const KvCacheShape& shape, DType dtype, bool pre_rope)
    : PagedStore(shape, shape.row_values() * dtype_size(dtype)), dtype_(dtype), pre_rope_(pre_rope) {}

std::string DenseStore::name() const {
  return std::string(dtype_name(dtype_)) + (pre_rope_ ? ":prerope=1" : "");
}

Status DenseStore::append(int il, int n, const float* x) {
  PagedRows& r = rows_[size_t(il)];
  const int t0 = r.n_tokens();
  KVQ_RETURN_IF_ERROR(r.resize(t0 + n));
  const size_t row = shape().row_values();
  for (int t = 0; t < n; ++t) {
    if (dtype_ == DType::kF32) {
      std::memcpy(r.record(t0 + t), x + size_t(t) * row, row * 4);
    } else {
      cpu::convert_f32_to_f16(x + size_t(t) * row, reinterpret_cast<f16_t*>(r.record(t0 + t)), row);
    }
  }
  return ok_status();
}

void DenseStore::read(int il, int kvh, int t0, int n, float* out) const {
  const PagedRows& r = rows_[size_t(il)];
  const size_t hd = size_t(shape().head_dim);
  for (int t = 0; t < n; ++t) {
    const uint8_t* rec = r.record(t0 + t);
    if (dtype_ == DType::kF32) {
      std::memcpy(out + size_t(t) * hd, reinterpret_cast<const float*>(rec) + size_t(kvh) * hd, hd * 4);
    } else {
      cpu::convert_f16_to_f32(reinterpret_cast<const f16_t*>(rec) + size_t(kvh) * hd, out + size_t(t) * hd, hd);
    }
  }
}

}  // namespace kvq

namespace kvq {

KvStoreView DenseStore::view(int il) const {
  const PagedRows& r = rows_[size_t(il)];
  const KvCacheShape& s = shape();
  KvStoreView v;
  v.n_tokens = r.n_tokens();
  v.pre_rope = pre_rope_;
  v.f16_numerics = dtype_ == DType::kF16 && !pre_rope_;
  KvSegment& seg = v.add();
  seg = f16_rows_segment(0, r.n_tokens(), s.n_kv_heads, s.head_dim, r.pages(), nullptr, r.page_records());
  if (dtype_ == DType::kF32) {
    seg.proto.format = KvFormat::kF32;
    seg.token_stride *= 2;
    seg.head_stride *= 2;
    seg.proto.stride = seg.token_stride;
  }
  return v;
}

}  // namespace kvq
