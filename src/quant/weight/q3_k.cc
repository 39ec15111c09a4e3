// SPDX-License-Identifier: MIT
// Q3_K: scalar reference and Highway dequantizer (bit-identical), over one walk of the
// block (q3_k.h).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/weight/q3_k.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/weight/block_common-inl.h"
#include "quant/weight/q3_k.h"

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

void DequantizeRowQ3K(const BlockQ3_K* HWY_RESTRICT x, float* HWY_RESTRICT y, int64_t k) {
  const DU du;
  const DI di;
  const size_t N = hn::Lanes(DF());
  for (int64_t i = 0; i < k / kQK_K; ++i, y += kQK_K) {
    for_each_q3_k_group(x[i], [&](int g, const uint8_t* q, const uint8_t* hm, int shift, uint8_t m, float dl) {
      for (size_t l = 0; l < 16; l += N) {
        const auto low = hn::And(hn::ShiftRightSame(LoadBytes(q + l), shift), hn::Set(du, 3u));
        const auto no_high = hn::Eq(hn::And(LoadBytes(hm + l), hn::Set(du, uint32_t(m))), hn::Zero(du));
        const auto v = hn::Sub(hn::BitCast(di, low), hn::BitCast(di, hn::IfThenElseZero(no_high, hn::Set(du, 4u))));
        StoreScaled(ToFloat(v), dl, y + 16 * g + l);
      }
    });
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq {

HWY_EXPORT(DequantizeRowQ3K);

void unpack_q3_k_scales(const uint8_t packed[12], int8_t scales[16]) {
  for (int s = 0; s < 16; ++s) {
    const int low = s < 8 ? (packed[s] & 0xF) : (packed[s - 8] >> 4);
    const int high = (packed[8 + s % 4] >> (2 * (s / 4))) & 3;
    scales[s] = int8_t((low | (high << 4)) - 32);
  }
}

void dequantize_row_q3_k_ref(const BlockQ3_K* x, float* y, int64_t k) {
  for (int64_t i = 0; i < k / kQK_K; ++i, y += kQK_K) {
    for_each_q3_k_group(x[i], [&](int g, const uint8_t* q, const uint8_t* hm, int shift, uint8_t m, float dl) {
      for (int l = 0; l < 16; ++l) y[16 * g + l] = dl * float(((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4));
    });
  }
}

void dequantize_row_q3_k(const BlockQ3_K* x, float* y, int64_t k, KernelPath path) {
  if (path == KernelPath::kRef) return dequantize_row_q3_k_ref(x, y, k);
  HWY_DYNAMIC_DISPATCH(DequantizeRowQ3K)(x, y, k);
}

}  // namespace kvq
#endif  // HWY_ONCE
