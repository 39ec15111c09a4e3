// SPDX-License-Identifier: MIT
// ggml block_q2_K: a super-block of 256 weights at 2 bits, 16 sub-blocks of 16 with 4-bit
// scales and mins.
#pragma once

#include <cstdint>

#include "base/fp16.h"
#include "base/kernel_path.h"
#include "quant/weight/block_common.h"

namespace kvq {

// Layout (84 bytes): [0:16) scales (sub-block s: low nibble scale, high nibble min),
// [16:80) qs[64] 2-bit quants, [80:82) fp16 d, [82:84) fp16 dmin.
// Half h (128 weights) uses qs[32h, 32h + 32); its weight 32p + l (p < 4, l < 32) is bits
// 2p..2p+1 of qs[32h + l], in sub-block 8h + 2p + l / 16;
// x = d * scale * q - dmin * min.
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];
  uint8_t qs[kQK_K / 4];
  f16_t d;
  f16_t dmin;
};
static_assert(sizeof(BlockQ2_K) == 84, "ggml block_q2_K is 84 bytes");

// Calls fn(g, q, shift, dl, ml) for the block's 16 groups of 16 weights in order:
// weight l of group g is dl * ((q[l] >> shift) & 3) - ml.
template <typename Fn>
inline void for_each_q2_k_group(const BlockQ2_K& b, Fn&& fn) {
  const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
  for (int g = 0; g < 16; ++g) {
    const uint8_t sc = b.scales[g];
    fn(g, b.qs + 32 * (g / 8) + 16 * (g % 2), 2 * ((g % 8) / 2), d * float(sc & 0xF), dmin * float(sc >> 4));
  }
}

// ggml's quantize_row_q2_K_ref: per 16 weights make_qkx2_quants (codes 0..3, |x|-weighted
// absolute error), then the 16 scales and mins quantized to 4 bits under d = max scale / 15,
// dmin = max min / 15, and the codes recomputed with them. k must be a multiple of 256.
void quantize_row_q2_k_ref(const float* x, BlockQ2_K* y, int64_t k);
// k must be a multiple of 256.
void dequantize_row_q2_k_ref(const BlockQ2_K* x, float* y, int64_t k);
// Highway path (bit-identical) or the reference.
void dequantize_row_q2_k(const BlockQ2_K* x, float* y, int64_t k, KernelPath path = KernelPath::kSimd);

}  // namespace kvq
