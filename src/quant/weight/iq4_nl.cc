// SPDX-License-Identifier: MIT
// IQ4_NL: scalar reference and Highway dequantizer (bit-identical).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/weight/iq4_nl.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/weight/block_common-inl.h"
#include "quant/weight/iq4_nl.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/weight/quantize_search.h"

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

void DequantizeRowIQ4NL(const BlockIQ4_NL* HWY_RESTRICT x, float* HWY_RESTRICT y, int64_t k) {
  const size_t N = hn::Lanes(DF());
  for (int64_t i = 0; i < k / 32; ++i, y += 32) {
    const float d = f16_to_f32(x[i].d);
    for (size_t j = 0; j < 16; j += N) {
      const auto b = LoadBytes(x[i].qs + j);
      StoreScaled(Iq4nlLevels(LowNibbles(b)), d, y + j);
      StoreScaled(Iq4nlLevels(HighNibbles(b)), d, y + 16 + j);
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq {

HWY_EXPORT(DequantizeRowIQ4NL);

void quantize_row_iq4_nl_ref(const float* x, BlockIQ4_NL* y, int64_t k) {
  for (int64_t i = 0; i < k / 32; ++i, x += 32) quantize_iq4_super_block(32, x, &y[i].d, y[i].qs, nullptr, nullptr);
}

void dequantize_row_iq4_nl_ref(const BlockIQ4_NL* x, float* y, int64_t k) {
  for (int64_t i = 0; i < k / 32; ++i, y += 32) {
    const float d = f16_to_f32(x[i].d);
    for (int j = 0; j < 16; ++j) {
      y[j] = d * float(kIq4nlValues[x[i].qs[j] & 0x0F]);
      y[j + 16] = d * float(kIq4nlValues[x[i].qs[j] >> 4]);
    }
  }
}

void dequantize_row_iq4_nl(const BlockIQ4_NL* x, float* y, int64_t k, KernelPath path) {
  if (path == KernelPath::kRef) return dequantize_row_iq4_nl_ref(x, y, k);
  HWY_DYNAMIC_DISPATCH(DequantizeRowIQ4NL)(x, y, k);
}

}  // namespace kvq
#endif  // HWY_ONCE
