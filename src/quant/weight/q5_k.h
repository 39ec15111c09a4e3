// SPDX-License-Identifier: MIT
// ggml block_q5_K: a super-block of 256 weights at 5 bits, 8 sub-blocks of 32 with 6-bit
// scales and mins.
#pragma once

#include <cstdint>

#include "base/fp16.h"
#include "base/kernel_path.h"
#include "quant/weight/block_common.h"

namespace kvq {

// Layout (176 bytes): [0:2) fp16 d, [2:4) fp16 dmin, [4:16) scales (k_scale_min),
// [16:48) qh[32] fifth bits, [48:176) qs[128] low nibbles. Chunk c (64 weights) as in q4_K;
// weight l of its low half adds 16 when bit 2c of qh[l] is set, of its high half bit 2c + 1;
// x = d * scale * q - dmin * min.
struct BlockQ5_K {
  f16_t d;
  f16_t dmin;
  uint8_t scales[kKScaleSize];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ5_K) == 176, "ggml block_q5_K is 176 bytes");

// ggml's quantize_row_q5_K_ref: as Q4_K with codes 0..31 (a fifth bit in qh). k must be a
// multiple of 256.
void quantize_row_q5_k_ref(const float* x, BlockQ5_K* y, int64_t k);
// k must be a multiple of 256.
void dequantize_row_q5_k_ref(const BlockQ5_K* x, float* y, int64_t k);
// Highway path (bit-identical) or the reference.
void dequantize_row_q5_k(const BlockQ5_K* x, float* y, int64_t k, KernelPath path = KernelPath::kSimd);

}  // namespace kvq
