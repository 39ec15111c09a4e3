// SPDX-License-Identifier: MIT
// IQ4_XS: scalar reference and Highway dequantizer (bit-identical), over one walk of the
// block (iq4_xs.h).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/weight/iq4_xs.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/weight/block_common-inl.h"
#include "quant/weight/iq4_xs.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/weight/quantize_search.h"

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

void DequantizeRowIQ4XS(const BlockIQ4_XS* HWY_RESTRICT x, float* HWY_RESTRICT y, int64_t k) {
  const size_t N = hn::Lanes(DF());
  for (int64_t i = 0; i < k / kQK_K; ++i, y += kQK_K) {
    for_each_iq4_xs_sub_block(x[i], [&](int b, const uint8_t* qs, float dl) {
      for (size_t j = 0; j < 16; j += N) {
        const auto v = LoadBytes(qs + j);
        StoreScaled(Iq4nlLevels(LowNibbles(v)), dl, y + 32 * b + j);
        StoreScaled(Iq4nlLevels(HighNibbles(v)), dl, y + 32 * b + 16 + j);
      }
    });
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq {

HWY_EXPORT(DequantizeRowIQ4XS);

void quantize_row_iq4_xs_ref(const float* x, BlockIQ4_XS* y, int64_t k) {
  for (int64_t i = 0; i < k / kQK_K; ++i, x += kQK_K)
    quantize_iq4_super_block(kQK_K, x, &y[i].d, y[i].qs, &y[i].scales_h, y[i].scales_l);
}

void dequantize_row_iq4_xs_ref(const BlockIQ4_XS* x, float* y, int64_t k) {
  for (int64_t i = 0; i < k / kQK_K; ++i, y += kQK_K) {
    for_each_iq4_xs_sub_block(x[i], [&](int b, const uint8_t* qs, float dl) {
      for (int j = 0; j < 16; ++j) {
        y[32 * b + j] = dl * float(kIq4nlValues[qs[j] & 0xF]);
        y[32 * b + 16 + j] = dl * float(kIq4nlValues[qs[j] >> 4]);
      }
    });
  }
}

void dequantize_row_iq4_xs(const BlockIQ4_XS* x, float* y, int64_t k, KernelPath path) {
  if (path == KernelPath::kRef) return dequantize_row_iq4_xs_ref(x, y, k);
  HWY_DYNAMIC_DISPATCH(DequantizeRowIQ4XS)(x, y, k);
}

}  // namespace kvq
#endif  // HWY_ONCE
