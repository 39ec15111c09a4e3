// SPDX-License-Identifier: MIT
// ggml block_q4_K: a super-block of 256 weights at 4 bits, 8 sub-blocks of 32 with 6-bit
// scales and mins.
#pragma once

#include <cstdint>

#include "base/fp16.h"
#include "base/kernel_path.h"
#include "quant/weight/block_common.h"

namespace kvq {

// Layout (144 bytes): [0:2) fp16 d, [2:4) fp16 dmin, [4:16) scales (k_scale_min),
// [16:144) qs[128]. Chunk c (64 weights) uses qs[32c, 32c + 32): its first 32 weights are the
// low nibbles (sub-block 2c), the next 32 the high nibbles (sub-block 2c + 1);
// x = d * scale * q - dmin * min.
struct BlockQ4_K {
  f16_t d;
  f16_t dmin;
  uint8_t scales[kKScaleSize];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ4_K) == 144, "ggml block_q4_K is 144 bytes");

// ggml's quantize_row_q4_K_ref: per 32 weights make_qkx2_quants (codes 0..15, weights
// rms + |x|), then the 8 scales and mins quantized to 6 bits under d = max scale / 63,
// dmin = max min / 63, and the codes recomputed with them. k must be a multiple of 256.
void quantize_row_q4_k_ref(const float* x, BlockQ4_K* y, int64_t k);
// k must be a multiple of 256.
void dequantize_row_q4_k_ref(const BlockQ4_K* x, float* y, int64_t k);
// Highway path (bit-identical) or the reference.
void dequantize_row_q4_k(const BlockQ4_K* x, float* y, int64_t k, KernelPath path = KernelPath::kSimd);

}  // namespace kvq
