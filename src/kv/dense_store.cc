// SPDX-License-Identifier: MIT
#include "kv/dense_store.h"

#include <cstring>

#include "base/fp16.h"
#include "kernels/cpu/ops.h"
#include "kernels/rope.h"
#include "quant/kv_layout.h"

namespace kvq {

DenseStore::DenseStore(const KvCacheShape& shape, PagePool* pool, DType dtype, bool pre_rope)
    : PagedStore(shape, pool, DenseRowLayout{int(dtype_size(dtype)) * 8, size_t(shape.head_dim)}.part_bytes(), 0), dtype_(dtype), pre_rope_(pre_rope) {}

std::string DenseStore::name() const {
  return std::string(dtype_name(dtype_)) + (pre_rope_ ? ":prerope=1" : "");
}

Status DenseStore::append(int il, int n, const float* x) {
  PagedRows& r = rows_[size_t(il)];
  const int t0 = r.n_tokens();
  KVQ_RETURN_IF_ERROR(r.resize(t0 + n));
  const size_t hd = size_t(shape().head_dim);
  for (int t = 0; t < n; ++t) {
    for (int h = 0; h < shape().n_kv_heads; ++h) {
      const float* src = x + (size_t(t) * size_t(shape().n_kv_heads) + size_t(h)) * hd;
      if (dtype_ == DType::kF32) {
        std::memcpy(r.part(t0 + t, h), src, hd * 4);
      } else {
        cpu::convert_f32_to_f16(src, reinterpret_cast<f16_t*>(r.part(t0 + t, h)), hd);
      }
    }
  }
  return ok_status();
}

void DenseStore::shift(int n_keep, int n_drop, const Rope* rope) {
  PagedStore::shift(n_keep, n_drop, nullptr);
  if (!rope) return;
  // Position p becomes p - n_drop: R(p - d) k = R(d)^T R(p) k (llama.cpp's K-shift, in f32
  // and rounded back to f16 for an f16 cache).
  const size_t hd = size_t(shape().head_dim);
  std::vector<float> cs(size_t(rope->rope_dim())), x(hd);
  rope->angles(n_drop, cs.data());
  for (auto& r : rows_) {
    for (int t = n_keep; t < r.n_tokens(); ++t) {
      for (int h = 0; h < shape().n_kv_heads; ++h) {
        uint8_t* p = r.part(t, h);
        if (dtype_ == DType::kF32) {
          rope->rotate(reinterpret_cast<float*>(p), cs.data(), true);
        } else {
          cpu::convert_f16_to_f32(reinterpret_cast<const f16_t*>(p), x.data(), hd);
          rope->rotate(x.data(), cs.data(), true);
          cpu::convert_f32_to_f16(x.data(), reinterpret_cast<f16_t*>(p), hd);
        }
      }
    }
  }
}

void DenseStore::read(int il, int kvh, int t0, int n, float* out) const {
  const PagedRows& r = rows_[size_t(il)];
  const size_t hd = size_t(shape().head_dim);
  for (int t = 0; t < n; ++t) {
    const uint8_t* src = r.part(t0 + t, kvh);
    if (dtype_ == DType::kF32) {
      std::memcpy(out + size_t(t) * hd, src, hd * 4);
    } else {
      cpu::convert_f16_to_f32(reinterpret_cast<const f16_t*>(src), out + size_t(t) * hd, hd);
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
  v.add() = r.segment(dtype_ == DType::kF32 ? KvFormat::kF32 : KvFormat::kF16, s.head_dim);
  return v;
}

}  // namespace kvq
