// SPDX-License-Identifier: MIT
// Q4_1: scalar reference and Highway dequantizer (bit-identical).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/weight/q4_1.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/weight/block_common-inl.h"
#include "quant/weight/q4_1.h"

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

void DequantizeRowQ41(const BlockQ4_1* HWY_RESTRICT x, float* HWY_RESTRICT y, int64_t k) {
  const size_t N = hn::Lanes(DF());
  for (int64_t i = 0; i < k / 32; ++i, y += 32) {
    const float d = f16_to_f32(x[i].d), m = f16_to_f32(x[i].m);
    for (size_t j = 0; j < 16; j += N) {
      const auto b = LoadBytes(x[i].qs + j);
      StoreScaledPlusMin(ToFloat(LowNibbles(b)), d, m, y + j);
      StoreScaledPlusMin(ToFloat(HighNibbles(b)), d, m, y + 16 + j);
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq {

HWY_EXPORT(DequantizeRowQ41);

void dequantize_row_q4_1_ref(const BlockQ4_1* x, float* y, int64_t k) {
  for (int64_t i = 0; i < k / 32; ++i, y += 32) {
    const float d = f16_to_f32(x[i].d), m = f16_to_f32(x[i].m);
    for (int j = 0; j < 16; ++j) {
      y[j] = float(x[i].qs[j] & 0x0F) * d + m;
      y[j + 16] = float(x[i].qs[j] >> 4) * d + m;
    }
  }
}

void dequantize_row_q4_1(const BlockQ4_1* x, float* y, int64_t k, KernelPath path) {
  if (path == KernelPath::kRef) return dequantize_row_q4_1_ref(x, y, k);
  HWY_DYNAMIC_DISPATCH(DequantizeRowQ41)(x, y, k);
}

}  // namespace kvq
#endif  // HWY_ONCE
