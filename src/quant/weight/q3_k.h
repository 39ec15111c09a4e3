// SPDX-License-Identifier: MIT
// ggml block_q3_K: a super-block of 256 weights at 3 bits, 16 sub-blocks of 16 with signed
// 6-bit scales.
#pragma once

#include <cstdint>

#include "base/fp16.h"
#include "base/kernel_path.h"
#include "quant/weight/block_common.h"

namespace kvq {

// Layout (110 bytes): [0:32) hmask (high bits), [32:96) qs[64] (low 2 bits),
// [96:108) scales (16 x 6 bits: low nibbles in bytes 0-7, top 2 bits in bytes 8-11),
// [108:110) fp16 d. Weight 32p + l of half h (p < 4, l < 32): low bits 2p..2p+1 of
// qs[32h + l], high bit 4h + p of hmask[l], sub-block 8h + 2p + l / 16;
// x = d * (scale - 32) * (low - (high ? 0 : 4)).
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];
  uint8_t qs[kQK_K / 4];
  uint8_t scales[12];
  f16_t d;
};
static_assert(sizeof(BlockQ3_K) == 110, "ggml block_q3_K is 110 bytes");

// The 16 scales of a block, unpacked to their signed values (scale - 32).
void unpack_q3_k_scales(const uint8_t packed[12], int8_t scales[16]);

// Calls fn(g, q, hm, shift, m, dl) for the block's 16 groups of 16 weights in order: weight l
// of group g is dl * (((q[l] >> shift) & 3) - (hm[l] & m ? 0 : 4)).
template <typename Fn>
inline void for_each_q3_k_group(const BlockQ3_K& b, Fn&& fn) {
  const float d = f16_to_f32(b.d);
  int8_t scales[16];
  unpack_q3_k_scales(b.scales, scales);
  for (int g = 0; g < 16; ++g) {
    const int p = (g % 8) / 2;  // bit pair within the low bits; 4 * (g / 8) + p is the hmask bit
    fn(g, b.qs + 32 * (g / 8) + 16 * (g % 2), b.hmask + 16 * (g % 2), 2 * p, uint8_t(1u << (4 * (g / 8) + p)),
       d * float(scales[g]));
  }
}

// ggml's quantize_row_q3_K_ref: per 16 weights make_q3_quants (codes -4..3, x²-weighted),
// the 16 scales quantized to signed 6 bits under d = -max scale / 32, and the codes recomputed
// with them. k must be a multiple of 256.
void quantize_row_q3_k_ref(const float* x, BlockQ3_K* y, int64_t k);
// k must be a multiple of 256.
void dequantize_row_q3_k_ref(const BlockQ3_K* x, float* y, int64_t k);
// Highway path (bit-identical) or the reference.
void dequantize_row_q3_k(const BlockQ3_K* x, float* y, int64_t k, KernelPath path = KernelPath::kSimd);

}  // namespace kvq
