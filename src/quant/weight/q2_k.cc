// SPDX-License-Identifier: MIT
// Q2_K: scalar reference and Highway dequantizer (bit-identical), over one walk of the
// block (q2_k.h).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/weight/q2_k.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/weight/block_common-inl.h"
#include "quant/weight/q2_k.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/weight/quantize_search.h"

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

void quantize_row_q2_k_ref(const float* x, BlockQ2_K* y, int64_t k) {
  constexpr float kQ4Scale = 15.0f;  // the 4-bit range of the sub-block scales and mins
  for (int64_t i = 0; i < k / kQK_K; ++i, x += kQK_K) {
    uint8_t L[kQK_K], laux[16];
    float weights[16], mins[16], scales[16];
    float max_scale = 0, max_min = 0;  // scales are positive: the min carries the offset
    for (int j = 0; j < 16; ++j) {
      for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
      scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], laux, -0.5f, 0.1f, 15, true);
      max_scale = std::max(max_scale, scales[j]);
      max_min = std::max(max_min, mins[j]);
    }
    if (max_scale > 0) {
      const float iscale = kQ4Scale / max_scale;
      for (int j = 0; j < 16; ++j) y[i].scales[j] = uint8_t(nearest_int(iscale * scales[j]));
      y[i].d = f32_to_f16(max_scale / kQ4Scale);
    } else {
      std::memset(y[i].scales, 0, sizeof(y[i].scales));
      y[i].d = f32_to_f16(0.0f);
    }
    if (max_min > 0) {
      const float iscale = kQ4Scale / max_min;
      for (int j = 0; j < 16; ++j) y[i].scales[j] = uint8_t(y[i].scales[j] | (nearest_int(iscale * mins[j]) << 4));
      y[i].dmin = f32_to_f16(max_min / kQ4Scale);
    } else {
      y[i].dmin = f32_to_f16(0.0f);
    }
    // Codes again under the scales as stored (a zero scale keeps the search's codes).
    for (int j = 0; j < 16; ++j) {
      const float d = f16_to_f32(y[i].d) * float(y[i].scales[j] & 0xF);
      if (d == 0) continue;
      const float dm = f16_to_f32(y[i].dmin) * float(y[i].scales[j] >> 4);
      for (int l = 0; l < 16; ++l) L[16 * j + l] = uint8_t(std::clamp(nearest_int((x[16 * j + l] + dm) / d), 0, 3));
    }
    for (int h = 0; h < 2; ++h) {
      const uint8_t* q = L + 128 * h;
      for (int l = 0; l < 32; ++l)
        y[i].qs[32 * h + l] = uint8_t(q[l] | (q[l + 32] << 2) | (q[l + 64] << 4) | (q[l + 96] << 6));
    }
  }
}

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
