// SPDX-License-Identifier: MIT
// Q5_1: scalar reference and Highway dequantizer (bit-identical).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/weight/q5_1.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/weight/block_common-inl.h"
#include "quant/weight/q5_1.h"

#include <algorithm>
#include <cmath>

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

void DequantizeRowQ51(const BlockQ5_1* HWY_RESTRICT x, float* HWY_RESTRICT y, int64_t k) {
  const size_t N = hn::Lanes(DF());
  for (int64_t i = 0; i < k / 32; ++i, y += 32) {
    const float d = f16_to_f32(x[i].d), m = f16_to_f32(x[i].m);
    for (size_t j = 0; j < 16; j += N) {
      const auto b = LoadBytes(x[i].qs + j);
      const auto lo = hn::Or(LowNibbles(b), FifthBits(x[i].qh, j));
      const auto hi = hn::Or(HighNibbles(b), FifthBits(x[i].qh, j + 16));
      StoreScaledPlusMin(ToFloat(lo), d, m, y + j);
      StoreScaledPlusMin(ToFloat(hi), d, m, y + 16 + j);
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq {

HWY_EXPORT(DequantizeRowQ51);

void quantize_row_q5_1_ref(const float* x, BlockQ5_1* y, int64_t k) {
  for (int64_t i = 0; i < k / 32; ++i, x += 32) {
    float min, max;
    block_min_max(x, 32, &min, &max);
    const float d = (max - min) / 31, id = d ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    y[i].m = f32_to_f16(min);
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      const int q0 = int(uint8_t((x[j] - min) * id + 0.5f));
      const int q1 = int(uint8_t((x[j + 16] - min) * id + 0.5f));
      put_q5_codes(j, q0, q1, y[i].qs, &qh);
    }
    std::memcpy(y[i].qh, &qh, 4);
  }
}

void dequantize_row_q5_1_ref(const BlockQ5_1* x, float* y, int64_t k) {
  for (int64_t i = 0; i < k / 32; ++i, y += 32) {
    const float d = f16_to_f32(x[i].d), m = f16_to_f32(x[i].m);
    uint32_t qh;
    std::memcpy(&qh, x[i].qh, 4);
    for (int j = 0; j < 16; ++j) {
      const int h0 = int((qh >> j) & 1) << 4, h1 = int((qh >> (j + 16)) & 1) << 4;
      y[j] = float((x[i].qs[j] & 0x0F) | h0) * d + m;
      y[j + 16] = float((x[i].qs[j] >> 4) | h1) * d + m;
    }
  }
}

void dequantize_row_q5_1(const BlockQ5_1* x, float* y, int64_t k, KernelPath path) {
  if (path == KernelPath::kRef) return dequantize_row_q5_1_ref(x, y, k);
  HWY_DYNAMIC_DISPATCH(DequantizeRowQ51)(x, y, k);
}

}  // namespace kvq
#endif  // HWY_ONCE
