// SPDX-License-Identifier: MIT
// Q5_0: scalar reference and Highway dequantizer (bit-identical).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/weight/q5_0.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/weight/block_common-inl.h"
#include "quant/weight/q5_0.h"

#include <algorithm>
#include <cmath>

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

void DequantizeRowQ50(const BlockQ5_0* HWY_RESTRICT x, float* HWY_RESTRICT y, int64_t k) {
  const size_t N = hn::Lanes(DF());
  for (int64_t i = 0; i < k / 32; ++i, y += 32) {
    const float d = f16_to_f32(x[i].d);
    for (size_t j = 0; j < 16; j += N) {
      const auto b = LoadBytes(x[i].qs + j);
      const auto lo = hn::Or(LowNibbles(b), FifthBits(x[i].qh, j));
      const auto hi = hn::Or(HighNibbles(b), FifthBits(x[i].qh, j + 16));
      StoreScaled(hn::Sub(ToFloat(lo), hn::Set(DF(), 16.0f)), d, y + j);
      StoreScaled(hn::Sub(ToFloat(hi), hn::Set(DF(), 16.0f)), d, y + 16 + j);
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq {

HWY_EXPORT(DequantizeRowQ50);

void quantize_row_q5_0_ref(const float* x, BlockQ5_0* y, int64_t k) {
  for (int64_t i = 0; i < k / 32; ++i, x += 32) {
    const float d = block_signed_absmax(x, 32) / -16, id = d ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      const int q0 = std::min(31, int(int8_t(x[j] * id + 16.5f)));
      const int q1 = std::min(31, int(int8_t(x[j + 16] * id + 16.5f)));
      put_q5_codes(j, q0, q1, y[i].qs, &qh);
    }
    std::memcpy(y[i].qh, &qh, 4);
  }
}

void dequantize_row_q5_0_ref(const BlockQ5_0* x, float* y, int64_t k) {
  for (int64_t i = 0; i < k / 32; ++i, y += 32) {
    const float d = f16_to_f32(x[i].d);
    uint32_t qh;
    std::memcpy(&qh, x[i].qh, 4);
    for (int j = 0; j < 16; ++j) {
      const int h0 = int((qh >> j) & 1) << 4, h1 = int((qh >> (j + 16)) & 1) << 4;
      y[j] = float(((x[i].qs[j] & 0x0F) | h0) - 16) * d;
      y[j + 16] = float(((x[i].qs[j] >> 4) | h1) - 16) * d;
    }
  }
}

void dequantize_row_q5_0(const BlockQ5_0* x, float* y, int64_t k, KernelPath path) {
  if (path == KernelPath::kRef) return dequantize_row_q5_0_ref(x, y, k);
  HWY_DYNAMIC_DISPATCH(DequantizeRowQ50)(x, y, k);
}

}  // namespace kvq
#endif  // HWY_ONCE
