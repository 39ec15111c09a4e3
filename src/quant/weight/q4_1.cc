// SPDX-License-Identifier: MIT
// Q4_1: scalar reference and Highway dequantizer (bit-identical).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/weight/q4_1.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/weight/block_common-inl.h"
#include "quant/weight/q4_1.h"

#include <algorithm>
#include <cmath>

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

void quantize_row_q4_1_ref(const float* x, BlockQ4_1* y, int64_t k) {
  for (int64_t i = 0; i < k / 32; ++i, x += 32) {
    float min, max;
    block_min_max(x, 32, &min, &max);
    const float d = (max - min) / 15, id = d ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    y[i].m = f32_to_f16(min);
    for (int j = 0; j < 16; ++j) {
      const uint8_t lo = uint8_t(std::min(15, int(int8_t((x[j] - min) * id + 0.5f))));
      const uint8_t hi = uint8_t(std::min(15, int(int8_t((x[j + 16] - min) * id + 0.5f))));
      y[i].qs[j] = uint8_t(lo | (hi << 4));
    }
  }
}

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
