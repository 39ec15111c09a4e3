// SPDX-License-Identifier: MIT
// Q6_K: scalar reference and Highway dequantizer (bit-identical), over one walk of the
// block (q6_k.h).
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
  for (int64_t i = 0; i < k / kQK_K; ++i, y += kQK_K) {
    for_each_q6_k_group(x[i], [&](int g, const uint8_t* ql, bool high, const uint8_t* qh, int shift, float dl) {
      for (size_t l = 0; l < 16; l += N) {
        const auto low = LoadBytes(ql + l);
        const auto nib = high ? HighNibbles(low) : LowNibbles(low);
        const auto top = hn::And(hn::ShiftRightSame(LoadBytes(qh + l), shift), hn::Set(du, 3u));
        const auto q = hn::Sub(hn::BitCast(di, hn::Or(nib, hn::ShiftLeft<4>(top))), hn::Set(di, 32));
        StoreScaled(ToFloat(q), dl, y + 16 * g + l);
      }
    });
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq {

HWY_EXPORT(DequantizeRowQ6K);

void dequantize_row_q6_k_ref(const BlockQ6_K* x, float* y, int64_t k) {
  for (int64_t i = 0; i < k / kQK_K; ++i, y += kQK_K) {
    for_each_q6_k_group(x[i], [&](int g, const uint8_t* ql, bool high, const uint8_t* qh, int shift, float dl) {
      for (int l = 0; l < 16; ++l) {
        const int nib = high ? (ql[l] >> 4) : (ql[l] & 0xF);
        y[16 * g + l] = dl * float((nib | (((qh[l] >> shift) & 3) << 4)) - 32);
      }
    });
  }
}

void dequantize_row_q6_k(const BlockQ6_K* x, float* y, int64_t k, KernelPath path) {
  if (path == KernelPath::kRef) return dequantize_row_q6_k_ref(x, y, k);
  HWY_DYNAMIC_DISPATCH(DequantizeRowQ6K)(x, y, k);
}

}  // namespace kvq
#endif  // HWY_ONCE
