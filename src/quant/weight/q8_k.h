// SPDX-License-Identifier: MIT
// ggml block_q8_K: the activation format llama.cpp's CPU matmul pairs with K-quant and IQ4_XS
// weights (their vec_dot_type). kvq rounds activations through it so that its products with
// those weights match llama.cpp's numerics up to float summation order.
#pragma once

#include <cstdint>

#include "quant/weight/block_common.h"

namespace kvq {

// Layout (292 bytes): [0:4) float d, [4:260) int8 qs[256], [260:292) int16 bsums[16] (sums of
// 16 consecutive qs, used by integer dot products); x = d * q.
// Quantize: max = the signed value of largest magnitude (first on ties), iscale = -127 / max,
// q = min(127, round_half_even(iscale * x)), d = 1 / iscale; an all-zero block has d = 0.
struct BlockQ8_K {
  float d;
  int8_t qs[kQK_K];
  int16_t bsums[kQK_K / 16];
};
static_assert(sizeof(BlockQ8_K) == 292, "ggml block_q8_K is 292 bytes");

// k must be a multiple of 256.
void quantize_row_q8_k_ref(const float* x, BlockQ8_K* y, int64_t k);
void dequantize_row_q8_k_ref(const BlockQ8_K* x, float* y, int64_t k);

}  // namespace kvq
