// SPDX-License-Identifier: MIT
// ggml block_q5_1: 32 weights at 5 bits with a scale and a minimum.
#pragma once

#include <cstdint>

#include "base/fp16.h"
#include "base/kernel_path.h"

namespace kvq {

// Layout (24 bytes): [0:2) fp16 d, [2:4) fp16 m, [4:8) qh (fifth bits as in q5_0),
// [8:24) qs[16] low nibbles; x = (nibble | fifth_bit << 4) * d + m.
struct BlockQ5_1 {
  f16_t d;
  f16_t m;
  uint8_t qh[4];
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ5_1) == 24, "ggml block_q5_1 is 24 bytes");

// ggml's quantize_row_q5_1_ref: d = (max - min) / 31, m = min, q = (uint8_t)((x - min) / d + 0.5).
void quantize_row_q5_1_ref(const float* x, BlockQ5_1* y, int64_t k);
// k must be a multiple of 32.
void dequantize_row_q5_1_ref(const BlockQ5_1* x, float* y, int64_t k);
// Highway path (bit-identical) or the reference.
void dequantize_row_q5_1(const BlockQ5_1* x, float* y, int64_t k, KernelPath path = KernelPath::kSimd);

}  // namespace kvq
