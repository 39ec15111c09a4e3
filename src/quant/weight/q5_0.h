// SPDX-License-Identifier: MIT
// ggml block_q5_0: 32 weights at 5 bits, symmetric around 16.
#pragma once

#include <cstdint>

#include "base/fp16.h"
#include "base/kernel_path.h"

namespace kvq {

// Layout (22 bytes): [0:2) fp16 d, [2:6) qh (32 fifth bits, little-endian uint32, bit j for
// element j), [6:22) qs[16] low nibbles (element j low, j + 16 high);
// x = ((nibble | fifth_bit << 4) - 16) * d.
struct BlockQ5_0 {
  f16_t d;
  uint8_t qh[4];
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ5_0) == 22, "ggml block_q5_0 is 22 bytes");

// ggml's quantize_row_q5_0_ref: d = max / -16 (max: the signed value of largest magnitude, first
// on ties), q = min(31, (int8_t)(x / d + 16.5)).
void quantize_row_q5_0_ref(const float* x, BlockQ5_0* y, int64_t k);
// k must be a multiple of 32.
void dequantize_row_q5_0_ref(const BlockQ5_0* x, float* y, int64_t k);
// Highway path (bit-identical) or the reference.
void dequantize_row_q5_0(const BlockQ5_0* x, float* y, int64_t k, KernelPath path = KernelPath::kSimd);

}  // namespace kvq
