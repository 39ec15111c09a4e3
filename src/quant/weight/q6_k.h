// SPDX-License-Identifier: MIT
// ggml block_q6_K: a super-block of 256 weights at 6 bits, 16 sub-blocks of 16 with int8
// scales.
#pragma once

#include <cstdint>

#include "base/fp16.h"
#include "base/kernel_path.h"
#include "quant/weight/block_common.h"

namespace kvq {

// Layout (210 bytes): [0:128) ql low nibbles, [128:192) qh top 2 bits, [192:208) int8
// scales[16], [208:210) fp16 d. Half h (128 weights) uses ql[64h, +64), qh[32h, +32),
// scales[8h, +8); its weight 32p + l (p < 4, l < 32) has low nibble ql[64h + l + 32 (p & 1)]
// (high nibble when p >= 2), top bits 2p..2p+1 of qh[32h + l], scale scales[8h + 2p + l / 16];
// x = d * scale * (q - 32).
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  f16_t d;
};
static_assert(sizeof(BlockQ6_K) == 210, "ggml block_q6_K is 210 bytes");

// Calls fn(g, ql, high, qh, shift, dl) for the block's 16 groups of 16 weights in order:
// weight l of group g is dl * ((nibble | ((qh[l] >> shift) & 3) << 4) - 32), the nibble the
// high or low one of ql[l].
template <typename Fn>
inline void for_each_q6_k_group(const BlockQ6_K& b, Fn&& fn) {
  const float d = f16_to_f32(b.d);
  for (int g = 0; g < 16; ++g) {
    const int h = g / 8, p = (g % 8) / 2, l0 = 16 * (g % 2);
    fn(g, b.ql + 64 * h + 32 * (p & 1) + l0, p >= 2, b.qh + 32 * h + l0, 2 * p, d * float(b.scales[g]));
  }
}

// ggml's quantize_row_q6_K_ref: per 16 weights make_qx_quants (codes -32..31, x²-weighted),
// the 16 scales quantized to int8 under d = -max scale / 128, and the codes recomputed with
// them. k must be a multiple of 256.
void quantize_row_q6_k_ref(const float* x, BlockQ6_K* y, int64_t k);
// k must be a multiple of 256.
void dequantize_row_q6_k_ref(const BlockQ6_K* x, float* y, int64_t k);
// Highway path (bit-identical) or the reference.
void dequantize_row_q6_k(const BlockQ6_K* x, float* y, int64_t k, KernelPath path = KernelPath::kSimd);

}  // namespace kvq
