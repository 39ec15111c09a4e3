// SPDX-License-Identifier: MIT
// Q2_K: scalar reference and Highway dequantizer (bit-identical), over one walk of the
// block (q2_k.h).
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
  for (int64_t i = 0; i < k / kQK_K; ++i, y += kQK_K) {
    for_each_q2_k_group(x[i], [&](int g, const uint8_t* q, int shift, float dl, float ml) {
      for (size_t l = 0; l < 16; l += N) {
        const auto v = hn::And(hn::ShiftRightSame(LoadBytes(q + l), shift), hn::Set(du, 3u));
        StoreScaledMinusMin(ToFloat(v), dl, ml, y + 16 * g + l);
      }
    });
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq {

HWY_EXPORT(DequantizeRowQ2K);

void dequantize_row_q2_k_ref(const BlockQ2_K* x, float* y, int64_t k) {
  for (int64_t i = 0; i < k / kQK_K; ++i, y += kQK_K) {
    for_each_q2_k_group(x[i], [&](int g, const uint8_t* q, int shift, float dl, float ml) {
      for (int l = 0; l < 16; ++l) y[16 * g + l] = dl * float((q[l] >> shift) & 3) - ml;
    });
  }
}

void dequantize_row_q2_k(const BlockQ2_K* x, float* y, int64_t k, KernelPath path) {
  if (path == KernelPath::kRef) return dequantize_row_q2_k_ref(x, y, k);
  HWY_DYNAMIC_DISPATCH(DequantizeRowQ2K)(x, y, k);
}

}  // namespace kvq
#endif  // HWY_ONCE
