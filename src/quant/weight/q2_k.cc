// SPDX-License-Identifier: MIT
// Q2_K: scalar reference and Highway dequantizer (bit-identical).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/weight/q2_k.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/weight/block_common-inl.h"
#include "quant/weight/q2_k.h"

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

void DequantizeRowQ2K(const BlockQ2_K* HWY_RESTRICT x, float* HWY_RESTRICT y, int64_t k) {
  const DU du;
  const size_t N = hn::Lanes(DF());
  for (int64_t i = 0; i < k / kQK_K; ++i) {
    const float d = f16_to_f32(x[i].d), dmin = f16_to_f32(x[i].dmin);
    const uint8_t* q = x[i].qs;
    int is = 0;
    for (int h = 0; h < 2; ++h, q += 32) {
      for (int shift = 0; shift < 8; shift += 2) {
        for (int half = 0; half < 2; ++half, y += 16) {
          const uint8_t sc = x[i].scales[is++];
          const float dl = d * float(sc & 0xF), ml = dmin * float(sc >> 4);
          for (size_t l = 0; l < 16; l += N) {
            const auto v = hn::And(hn::ShiftRightSame(LoadBytes(q + 16 * half + l), shift), hn::Set(du, 3u));
            StoreScaledMinusMin(ToFloat(v), dl, ml, y + l);
          }
        }
      }
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq {

HWY_EXPORT(DequantizeRowQ2K);

void dequantize_row_q2_k_ref(const BlockQ2_K* x, float* y, int64_t k) {
  for (int64_t i = 0; i < k / kQK_K; ++i) {
    const float d = f16_to_f32(x[i].d), dmin = f16_to_f32(x[i].dmin);
    const uint8_t* q = x[i].qs;
    int is = 0;
    for (int h = 0; h < 2; ++h, q += 32) {
      for (int shift = 0; shift < 8; shift += 2) {
        for (int half = 0; half < 2; ++half) {
          const uint8_t sc = x[i].scales[is++];
          const float dl = d * float(sc & 0xF), ml = dmin * float(sc >> 4);
          for (int l = 0; l < 16; ++l) *y++ = dl * float((q[16 * half + l] >> shift) & 3) - ml;
        }
      }
    }
  }
}

void dequantize_row_q2_k(const BlockQ2_K* x, float* y, int64_t k, KernelPath path) {
  if (path == KernelPath::kRef) return dequantize_row_q2_k_ref(x, y, k);
  HWY_DYNAMIC_DISPATCH(DequantizeRowQ2K)(x, y, k);
}

}  // namespace kvq
#endif  // HWY_ONCE
