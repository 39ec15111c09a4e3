// SPDX-License-Identifier: MIT
// ggml block_iq4_xs: a super-block of 256 weights as 4-bit codebook indices (IQ4_NL's
// levels), 8 sub-blocks of 32 with signed 6-bit scales.
#pragma once

#include <cstdint>

#include "base/fp16.h"
#include "base/kernel_path.h"
#include "quant/weight/block_common.h"

namespace kvq {

// Layout (136 bytes): [0:2) fp16 d, [2:4) scales_h (uint16 LE, 2 high bits per sub-block),
// [4:8) scales_l (a nibble per sub-block, sub-block 2j low), [8:136) qs[128]: sub-block b uses
// qs[16b, +16), element j low nibble, j + 16 high;
// x = d * (scale - 32) * kIq4nlValues[nibble].
struct BlockIQ4_XS {
  f16_t d;
  uint16_t scales_h;
  uint8_t scales_l[kQK_K / 64];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockIQ4_XS) == 136, "ggml block_iq4_xs is 136 bytes");

// Calls fn(b, qs, dl) for the block's 8 sub-blocks of 32 weights in order: weight j of
// sub-block b is dl * kIq4nlValues[nibble], the low nibble of qs[j] for j < 16, else the high
// nibble of qs[j - 16].
template <typename Fn>
inline void for_each_iq4_xs_sub_block(const BlockIQ4_XS& x, Fn&& fn) {
  const float d = f16_to_f32(x.d);
  for (int b = 0; b < 8; ++b) {
    const int ls = ((x.scales_l[b / 2] >> (4 * (b % 2))) & 0xF) | (((x.scales_h >> (2 * b)) & 3) << 4);
    fn(b, x.qs + 16 * b, d * float(ls - 32));
  }
}

// llama-quantize's IQ4_XS (quantize_iq4_xs, no importance matrix): IQ4_NL's search per 32
// weights, then the 8 scales quantized to signed 6 bits under d = -max scale / 32 and the
// indices recomputed with them. k must be a multiple of 256.
void quantize_row_iq4_xs_ref(const float* x, BlockIQ4_XS* y, int64_t k);
// k must be a multiple of 256.
void dequantize_row_iq4_xs_ref(const BlockIQ4_XS* x, float* y, int64_t k);
// Highway path (bit-identical) or the reference.
void dequantize_row_iq4_xs(const BlockIQ4_XS* x, float* y, int64_t k, KernelPath path = KernelPath::kSimd);

}  // namespace kvq
