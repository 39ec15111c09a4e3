// SPDX-License-Identifier: MIT
// Q4_K: scalar reference and Highway dequantizer (bit-identical), over one walk of the
// block (for_each_k_chunk, block_common.h).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/weight/q4_k.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/weight/block_common-inl.h"
#include "quant/weight/q4_k.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/weight/quantize_search.h"

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

void DequantizeRowQ4K(const BlockQ4_K* HWY_RESTRICT x, float* HWY_RESTRICT y, int64_t k) {
  const size_t N = hn::Lanes(DF());
  for (int64_t i = 0; i < k / kQK_K; ++i, y += kQK_K) {
    for_each_k_chunk(x[i].d, x[i].dmin, x[i].scales, [&](int c, float d1, float m1, float d2, float m2) {
      const uint8_t* q = x[i].qs + 32 * c;
      for (size_t l = 0; l < 32; l += N) {
        const auto b = LoadBytes(q + l);
        StoreScaledMinusMin(ToFloat(LowNibbles(b)), d1, m1, y + 64 * c + l);
        StoreScaledMinusMin(ToFloat(HighNibbles(b)), d2, m2, y + 64 * c + 32 + l);
      }
    });
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq {

HWY_EXPORT(DequantizeRowQ4K);

void quantize_row_q4_k_ref(const float* x, BlockQ4_K* y, int64_t k) {
  constexpr int kMax = 15;
  for (int64_t i = 0; i < k / kQK_K; ++i, x += kQK_K) {
    uint8_t L[kQK_K], laux[32];
    float weights[32], mins[8], scales[8];
    float max_scale = 0, max_min = 0;  // scales are positive: the min carries the offset
    for (int j = 0; j < 8; ++j) {
      // Weights rms + |x|: large values matter more, but every value counts.
      float sum_x2 = 0;
      for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
      const float av_x = std::sqrt(sum_x2 / 32);
      for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
      scales[j] = make_qkx2_quants(32, kMax, x + 32 * j, weights, L + 32 * j, &mins[j], laux, -1.0f, 0.1f, 20, false);
      max_scale = std::max(max_scale, scales[j]);
      max_min = std::max(max_min, mins[j]);
    }
    const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    for (int j = 0; j < 8; ++j) {
      const uint8_t ls = std::min<uint8_t>(63, uint8_t(nearest_int(inv_scale * scales[j])));
      const uint8_t lm = std::min<uint8_t>(63, uint8_t(nearest_int(inv_min * mins[j])));
      put_k_scale_min(j, ls, lm, y[i].scales);
    }
    y[i].d = f32_to_f16(max_scale / 63.0f);
    y[i].dmin = f32_to_f16(max_min / 63.0f);
    // Codes again under the scales as stored (a zero scale keeps the search's codes).
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      k_scale_min(j, y[i].scales, &sc, &m);
      const float d = f16_to_f32(y[i].d) * float(sc);
      if (d == 0) continue;
      const float dm = f16_to_f32(y[i].dmin) * float(m);
      for (int l = 0; l < 32; ++l) L[32 * j + l] = uint8_t(std::clamp(nearest_int((x[32 * j + l] + dm) / d), 0, kMax));
    }
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) y[i].qs[32 * c + l] = uint8_t(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
    }
  }
}

void dequantize_row_q4_k_ref(const BlockQ4_K* x, float* y, int64_t k) {
  for (int64_t i = 0; i < k / kQK_K; ++i, y += kQK_K) {
    for_each_k_chunk(x[i].d, x[i].dmin, x[i].scales, [&](int c, float d1, float m1, float d2, float m2) {
      const uint8_t* q = x[i].qs + 32 * c;
      for (int l = 0; l < 32; ++l) {
        y[64 * c + l] = d1 * float(q[l] & 0xF) - m1;
        y[64 * c + 32 + l] = d2 * float(q[l] >> 4) - m2;
      }
    });
  }
}

void dequantize_row_q4_k(const BlockQ4_K* x, float* y, int64_t k, KernelPath path) {
  if (path == KernelPath::kRef) return dequantize_row_q4_k_ref(x, y, k);
  HWY_DYNAMIC_DISPATCH(DequantizeRowQ4K)(x, y, k);
}

}  // namespace kvq
#endif  // HWY_ONCE
