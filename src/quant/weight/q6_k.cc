// SPDX-License-Identifier: MIT
// Q6_K: scalar reference and Highway dequantizer (bit-identical).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/weight/q6_k.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/weight/block_common-inl.h"
#include "quant/weight/q6_k.h"

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

void DequantizeRowQ6K(const BlockQ6_K* HWY_RESTRICT x, float* HWY_RESTRICT y, int64_t k) {
  const DU du;
  const DI di;
  const size_t N = hn::Lanes(DF());
  for (int64_t i = 0; i < k / kQK_K; ++i) {
    const float d = f16_to_f32(x[i].d);
    for (int h = 0; h < 2; ++h, y += 128) {
      const uint8_t* ql = x[i].ql + 64 * h;
      const uint8_t* qh = x[i].qh + 32 * h;
      const int8_t* sc = x[i].scales + 8 * h;
      for (int p = 0; p < 4; ++p) {
        for (size_t l = 0; l < 32; l += N) {
          const auto low = LoadBytes(ql + l + 32 * size_t(p & 1));
          const auto nib = p < 2 ? LowNibbles(low) : HighNibbles(low);
          const auto top = hn::And(hn::ShiftRightSame(LoadBytes(qh + l), 2 * p), hn::Set(du, 3u));
          const auto q = hn::Sub(hn::BitCast(di, hn::Or(nib, hn::ShiftLeft<4>(top))), hn::Set(di, 32));
          StoreScaled(ToFloat(q), d * float(sc[2 * p + int(l / 16)]), y + 32 * p + l);
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

HWY_EXPORT(DequantizeRowQ6K);

void dequantize_row_q6_k_ref(const BlockQ6_K* x, float* y, int64_t k) {
  for (int64_t i = 0; i < k / kQK_K; ++i) {
    const float d = f16_to_f32(x[i].d);
    for (int h = 0; h < 2; ++h, y += 128) {
      const uint8_t* ql = x[i].ql + 64 * h;
      const uint8_t* qh = x[i].qh + 32 * h;
      const int8_t* sc = x[i].scales + 8 * h;
      for (int p = 0; p < 4; ++p) {
        for (int l = 0; l < 32; ++l) {
          const uint8_t low = ql[l + 32 * (p & 1)];
          const int nib = p < 2 ? (low & 0xF) : (low >> 4);
          const int q = (nib | (((qh[l] >> (2 * p)) & 3) << 4)) - 32;
          y[32 * p + l] = d * float(sc[2 * p + l / 16]) * float(q);
        }
      }
    }
  }
}

void dequantize_row_q6_k(const BlockQ6_K* x, float* y, int64_t k, KernelPath path) {
  if (path == KernelPath::kRef) return dequantize_row_q6_k_ref(x, y, k);
  HWY_DYNAMIC_DISPATCH(DequantizeRowQ6K)(x, y, k);
}

}  // namespace kvq
#endif  // HWY_ONCE
