// SPDX-License-Identifier: MIT
// Q4_K: scalar reference and Highway dequantizer (bit-identical), over one walk of the
// block (for_each_k_chunk, block_common.h).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/weight/q4_k.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/weight/block_common-inl.h"
#include "quant/weight/q4_k.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/weight/quantize_search.h"

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

void DequantizeRowQ4K(const BlockQ4_K* HWY_RESTRICT x, float* HWY_RESTRICT y, int64_t k) {
  const size_t N = hn::Lanes(DF());
  for (int64_t i = 0; i < k / kQK_K; ++i, y += kQK_K) {
    for_each_k_chunk(x[i].d, x[i].dmin, x[i].scales, [&](int c, float d1, float m1, float d2, float m2) {
      const uint8_t* q = x[i].qs + 32 * c;
      for (size_t l = 0; l < 32; l += N) {
        const auto b = LoadBytes(q + l);
        StoreScaledMinusMin(ToFloat(LowNibbles(b)), d1, m1, y + 64 * c + l);
        StoreScaledMinusMin(ToFloat(HighNibbles(b)), d2, m2, y + 64 * c + 32 + l);
      }
    });
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq {

HWY_EXPORT(DequantizeRowQ4K);

void quantize_row_q4_k_ref(const float* x, BlockQ4_K* y, int64_t k) {
  constexpr int kMax = 15;
  for (int64_t i = 0; i < k / kQK_K; ++i, x += kQK_K) {
    uint8_t L[kQK_K];
    quantize_k_scale_min_block(x, kMax, -1.0f, 20, L, y[i].scales, &y[i].d, &y[i].dmin);
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) y[i].qs[32 * c + l] = uint8_t(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
    }
  }
}

void dequantize_row_q4_k_ref(const BlockQ4_K* x, float* y, int64_t k) {
  for (int64_t i = 0; i < k / kQK_K; ++i, y += kQK_K) {
    for_each_k_chunk(x[i].d, x[i].dmin, x[i].scales, [&](int c, float d1, float m1, float d2, float m2) {
      const uint8_t* q = x[i].qs + 32 * c;
      for (int l = 0; l < 32; ++l) {
        y[64 * c + l] = d1 * float(q[l] & 0xF) - m1;
        y[64 * c + 32 + l] = d2 * float(q[l] >> 4) - m2;
      }
    });
  }
}

void dequantize_row_q4_k(const BlockQ4_K* x, float* y, int64_t k, KernelPath path) {
  if (path == KernelPath::kRef) return dequantize_row_q4_k_ref(x, y, k);
  HWY_DYNAMIC_DISPATCH(DequantizeRowQ4K)(x, y, k);
}

}  // namespace kvq
#endif  // HWY_ONCE
