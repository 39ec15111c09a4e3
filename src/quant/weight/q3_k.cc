// SPDX-License-Identifier: MIT
// Q3_K: scalar reference and Highway dequantizer (bit-identical), over one walk of the
// block (q3_k.h).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/weight/q3_k.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/weight/block_common-inl.h"
#include "quant/weight/q3_k.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/weight/quantize_search.h"

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

void quantize_row_q3_k_ref(const float* x, BlockQ3_K* y, int64_t k) {
  for (int64_t i = 0; i < k / kQK_K; ++i, x += kQK_K) {
    int8_t L[kQK_K];
    float scales[16];
    float max_scale = 0, amax = 0;
    for (int j = 0; j < 16; ++j) {
      scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
      if (std::fabs(scales[j]) > amax) {
        amax = std::fabs(scales[j]);
        max_scale = scales[j];
      }
    }
    std::memset(y[i].scales, 0, sizeof(y[i].scales));
    if (max_scale != 0) {
      const float iscale = -32.0f / max_scale;
      for (int j = 0; j < 16; ++j) {
        // ggml stores nearest_int into an int8_t before clamping; |iscale * scale| <= 32 here.
        const int l = std::clamp(int(int8_t(nearest_int(iscale * scales[j]))), -32, 31) + 32;
        y[i].scales[j % 8] = uint8_t(y[i].scales[j % 8] | ((l & 0xF) << (j < 8 ? 0 : 4)));
        y[i].scales[8 + j % 4] = uint8_t(y[i].scales[8 + j % 4] | ((l >> 4) << (2 * (j / 4))));
      }
      y[i].d = f32_to_f16(1 / iscale);
    } else {
      y[i].d = f32_to_f16(0.0f);
    }
    int8_t sc[16];
    unpack_q3_k_scales(y[i].scales, sc);
    for (int j = 0; j < 16; ++j) {
      const float d = f16_to_f32(y[i].d) * float(sc[j]);
      if (d == 0) continue;
      for (int l = 0; l < 16; ++l) L[16 * j + l] = int8_t(std::clamp(nearest_int(x[16 * j + l] / d), -4, 3) + 4);
    }
    // Codes 4..7 set their high bit: weight j's bit is bit j / 32 of hmask[j % 32].
    std::memset(y[i].hmask, 0, sizeof(y[i].hmask));
    for (int j = 0; j < kQK_K; ++j) {
      if (L[j] > 3) {
        y[i].hmask[j % 32] = uint8_t(y[i].hmask[j % 32] | (1u << (j / 32)));
        L[j] = int8_t(L[j] - 4);
      }
    }
    for (int h = 0; h < 2; ++h) {
      const int8_t* q = L + 128 * h;
      for (int l = 0; l < 32; ++l)
        y[i].qs[32 * h + l] = uint8_t(q[l] | (q[l + 32] << 2) | (q[l + 64] << 4) | (q[l + 96] << 6));
    }
  }
}

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
