// SPDX-License-Identifier: MIT
#include "kv/ggml_store.h"

#include "quant/ggml_blocks.h"
#include "quant/kv_layout.h"

namespace kvq {

StatusOr<std::unique_ptr<KvStore>> GgmlStore::make(const KvCacheShape& shape, PagePool* pool, int bits) {
  if (shape.head_dim % 32 != 0) {
    return unimplemented(std::string(bits == 8 ? "q8_0" : "q4_0") +
                         " needs head_dim to be a multiple of 32 (blocks of 32 along head_dim, "
                         "as llama.cpp); this model has head_dim " + std::to_string(shape.head_dim));
  }
  return std::unique_ptr<KvStore>(new GgmlStore(shape, pool, bits));
}

GgmlStore::GgmlStore(const KvCacheShape& shape, PagePool* pool, int bits)
    : PagedStore(shape, pool, head_bytes(shape, bits), 0), bits_(bits) {}

size_t GgmlStore::head_bytes(const KvCacheShape& shape, int bits) {
  return GgmlRowLayout{bits, size_t(shape.head_dim)}.part_bytes();
}

Status GgmlStore::append(int il, int n, const float* x) {
  PagedRows& r = rows_[size_t(il)];
  const int t0 = r.n_tokens();
  KVQ_RETURN_IF_ERROR(r.resize(t0 + n));
  const int hd = shape().head_dim;
  for (int t = 0; t < n; ++t) {
    for (int h = 0; h < shape().n_kv_heads; ++h) {
      const float* src = x + (size_t(t) * shape().n_kv_heads + h) * hd;
      uint8_t* dst = r.part(t0 + t, h);
      const Status s = bits_ == 8 ? quantize_row_q8_0(src, reinterpret_cast<BlockQ8_0*>(dst), hd)
                                  : quantize_row_q4_0(src, reinterpret_cast<BlockQ4_0*>(dst), hd);
      if (!s.ok()) {
        (void)r.resize(t0);
        return s;
      }
    }
  }
  return ok_status();
}

void GgmlStore::read(int il, int kvh, int t0, int n, float* out) const {
  const PagedRows& r = rows_[size_t(il)];
  const int hd = shape().head_dim;
  for (int t = 0; t < n; ++t) {
    const uint8_t* src = r.part(t0 + t, kvh);
    if (bits_ == 8) {
      dequantize_row_q8_0(reinterpret_cast<const BlockQ8_0*>(src), out + size_t(t) * hd, hd);
    } else {
      dequantize_row_q4_0(reinterpret_cast<const BlockQ4_0*>(src), out + size_t(t) * hd, hd);
    }
  }
}

}  // namespace kvq

namespace kvq {

KvStoreView GgmlStore::view(int il) const {
  const PagedRows& r = rows_[size_t(il)];
  KvStoreView v;
  v.n_tokens = r.n_tokens();
  v.q8_0_queries = true;
  v.add() = r.segment(bits_ == 8 ? KvFormat::kQ8_0 : KvFormat::kQ4_0, shape().head_dim);
  return v;
}

}  // namespace kvq
