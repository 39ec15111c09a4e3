// SPDX-License-Identifier: MIT
// Q6_K: scalar reference and Highway dequantizer (bit-identical), over one walk of the
// block (q6_k.h).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/weight/q6_k.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/weight/block_common-inl.h"
#include "quant/weight/q6_k.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/weight/quantize_search.h"

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

void quantize_row_q6_k_ref(const float* x, BlockQ6_K* y, int64_t k) {
  for (int64_t i = 0; i < k / kQK_K; ++i, x += kQK_K) {
    int8_t L[kQK_K];
    float scales[16];
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
      scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
      if (std::fabs(scales[ib]) > max_abs_scale) {
        max_abs_scale = std::fabs(scales[ib]);
        max_scale = scales[ib];
      }
    }
    if (max_abs_scale < kGroupMaxEps) {
      y[i] = {};
      continue;
    }
    // The largest scale maps to -128: d carries the sign so that it fits int8.
    const float iscale = -128.0f / max_scale;
    y[i].d = f32_to_f16(1 / iscale);
    for (int ib = 0; ib < 16; ++ib) y[i].scales[ib] = int8_t(std::min(127, nearest_int(iscale * scales[ib])));
    for (int j = 0; j < 16; ++j) {
      const float d = f16_to_f32(y[i].d) * float(y[i].scales[j]);
      if (d == 0) continue;
      for (int l = 0; l < 16; ++l) L[16 * j + l] = int8_t(std::clamp(nearest_int(x[16 * j + l] / d), -32, 31) + 32);
    }
    for (int h = 0; h < 2; ++h) {
      const int8_t* q = L + 128 * h;
      uint8_t* ql = y[i].ql + 64 * h;
      uint8_t* qh = y[i].qh + 32 * h;
      for (int l = 0; l < 32; ++l) {
        ql[l] = uint8_t((q[l] & 0xF) | ((q[l + 64] & 0xF) << 4));
        ql[l + 32] = uint8_t((q[l + 32] & 0xF) | ((q[l + 96] & 0xF) << 4));
        qh[l] = uint8_t((q[l] >> 4) | ((q[l + 32] >> 4) << 2) | ((q[l + 64] >> 4) << 4) | ((q[l + 96] >> 4) << 6));
      }
    }
  }
}

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
