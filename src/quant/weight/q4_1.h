// SPDX-License-Identifier: MIT
// ggml block_q4_1: 32 weights at 4 bits with a scale and a minimum.
#pragma once

#include <cstdint>

#include "base/fp16.h"
#include "base/kernel_path.h"

namespace kvq {

// Layout (20 bytes): [0:2) fp16 d, [2:4) fp16 m, [4:20) qs[16]; byte j holds element j in its
// low nibble and element j + 16 in its high nibble; x = nibble * d + m.
struct BlockQ4_1 {
  f16_t d;
  f16_t m;
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ4_1) == 20, "ggml block_q4_1 is 20 bytes");

// ggml's quantize_row_q4_1_ref: d = (max - min) / 15, m = min, nibble = min(15, (int8_t)((x - min) / d + 0.5)).
void quantize_row_q4_1_ref(const float* x, BlockQ4_1* y, int64_t k);
// k must be a multiple of 32.
void dequantize_row_q4_1_ref(const BlockQ4_1* x, float* y, int64_t k);
// Highway path (bit-identical) or the reference.
void dequantize_row_q4_1(const BlockQ4_1* x, float* y, int64_t k, KernelPath path = KernelPath::kSimd);

}  // namespace kvq
