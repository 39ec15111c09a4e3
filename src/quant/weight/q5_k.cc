// SPDX-License-Identifier: MIT
// Q5_K: scalar reference and Highway dequantizer (bit-identical), over one walk of the
// block (for_each_k_chunk, block_common.h).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/weight/q5_k.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/weight/block_common-inl.h"
#include "quant/weight/q5_k.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/weight/quantize_search.h"

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

void DequantizeRowQ5K(const BlockQ5_K* HWY_RESTRICT x, float* HWY_RESTRICT y, int64_t k) {
  const size_t N = hn::Lanes(DF());
  for (int64_t i = 0; i < k / kQK_K; ++i, y += kQK_K) {
    for_each_k_chunk(x[i].d, x[i].dmin, x[i].scales, [&](int c, float d1, float m1, float d2, float m2) {
      const uint8_t* q = x[i].qs + 32 * c;
      const uint32_t u1 = 1u << (2 * c), u2 = 2u << (2 * c);
      for (size_t l = 0; l < 32; l += N) {
        const auto b = LoadBytes(q + l), qh = LoadBytes(x[i].qh + l);
        StoreScaledMinusMin(ToFloat(hn::Add(LowNibbles(b), Bit16If(qh, u1))), d1, m1, y + 64 * c + l);
        StoreScaledMinusMin(ToFloat(hn::Add(HighNibbles(b), Bit16If(qh, u2))), d2, m2, y + 64 * c + 32 + l);
      }
    });
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq {

HWY_EXPORT(DequantizeRowQ5K);

void quantize_row_q5_k_ref(const float* x, BlockQ5_K* y, int64_t k) {
  constexpr int kMax = 31;
  for (int64_t i = 0; i < k / kQK_K; ++i, x += kQK_K) {
    uint8_t L[kQK_K];
    quantize_k_scale_min_block(x, kMax, -0.5f, 15, L, y[i].scales, &y[i].d, &y[i].dmin);
    // Chunk c's low half sets bit 2c of qh[l] for codes >= 16, its high half bit 2c + 1.
    std::memset(y[i].qh, 0, sizeof(y[i].qh));
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        const int l1 = L[64 * c + l], l2 = L[64 * c + 32 + l];
        y[i].qh[l] = uint8_t(y[i].qh[l] | ((l1 >> 4) << (2 * c)) | ((l2 >> 4) << (2 * c + 1)));
        y[i].qs[32 * c + l] = uint8_t((l1 & 0xF) | ((l2 & 0xF) << 4));
      }
    }
  }
}

void dequantize_row_q5_k_ref(const BlockQ5_K* x, float* y, int64_t k) {
  for (int64_t i = 0; i < k / kQK_K; ++i, y += kQK_K) {
    for_each_k_chunk(x[i].d, x[i].dmin, x[i].scales, [&](int c, float d1, float m1, float d2, float m2) {
      const uint8_t* q = x[i].qs + 32 * c;
      const uint8_t u1 = uint8_t(1u << (2 * c)), u2 = uint8_t(2u << (2 * c));
      for (int l = 0; l < 32; ++l) {
        y[64 * c + l] = d1 * float((q[l] & 0xF) + ((x[i].qh[l] & u1) ? 16 : 0)) - m1;
        y[64 * c + 32 + l] = d2 * float((q[l] >> 4) + ((x[i].qh[l] & u2) ? 16 : 0)) - m2;
      }
    });
  }
}

void dequantize_row_q5_k(const BlockQ5_K* x, float* y, int64_t k, KernelPath path) {
  if (path == KernelPath::kRef) return dequantize_row_q5_k_ref(x, y, k);
  HWY_DYNAMIC_DISPATCH(DequantizeRowQ5K)(x, y, k);
}

}  // namespace kvq
#endif  // HWY_ONCE
