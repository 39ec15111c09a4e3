// SPDX-License-Identifier: MIT
// ggml block_iq4_nl: 32 weights as 4-bit indices into a fixed non-linear codebook.
#pragma once

#include <cstdint>

#include "base/fp16.h"
#include "base/kernel_path.h"

namespace kvq {

// Layout (18 bytes): [0:2) fp16 d, [2:18) qs[16] (element j low nibble, j + 16 high);
// x = d * kIq4nlValues[nibble].
struct BlockIQ4_NL {
  f16_t d;
  uint8_t qs[16];
};
static_assert(sizeof(BlockIQ4_NL) == 18, "ggml block_iq4_nl is 18 bytes");

// llama-quantize's IQ4_NL (quantize_iq4_nl, no importance matrix): per 32 weights the
// x²-weighted best scale on the 16 levels over 15 trial scales. k must be a multiple of 32.
void quantize_row_iq4_nl_ref(const float* x, BlockIQ4_NL* y, int64_t k);
// k must be a multiple of 32.
void dequantize_row_iq4_nl_ref(const BlockIQ4_NL* x, float* y, int64_t k);
// Highway path (bit-identical) or the reference.
void dequantize_row_iq4_nl(const BlockIQ4_NL* x, float* y, int64_t k, KernelPath path = KernelPath::kSimd);

}  // namespace kvq
