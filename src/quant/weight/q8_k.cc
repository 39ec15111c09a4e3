// SPDX-License-Identifier: MIT
#include "quant/weight/q8_k.h"

#include <algorithm>
#include <cmath>

namespace kvq {

void quantize_row_q8_k_ref(const float* x, BlockQ8_K* y, int64_t k) {
  for (int64_t i = 0; i < k / kQK_K; ++i, x += kQK_K) {
    const float max = block_signed_absmax(x, kQK_K);
    if (max == 0) {
      y[i] = {};
      continue;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < kQK_K; ++j) y[i].qs[j] = int8_t(std::min(127, int(std::nearbyint(iscale * x[j]))));
    for (int g = 0; g < kQK_K / 16; ++g) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += y[i].qs[16 * g + j];
      y[i].bsums[g] = int16_t(sum);
    }
    y[i].d = 1 / iscale;
  }
}

void dequantize_row_q8_k_ref(const BlockQ8_K* x, float* y, int64_t k) {
  for (int64_t i = 0; i < k / kQK_K; ++i, y += kQK_K) {
    for (int j = 0; j < kQK_K; ++j) y[j] = x[i].d * float(x[i].qs[j]);
  }
}

}  // namespace kvq
