// SPDX-License-Identifier: MIT
// Activations rounded through an activation block format (quantize, then dequantize), what
// llama.cpp's CPU matmul does to activations before its integer vec_dot: the tile and panel
// matmul paths multiply float weights by these rounded rows, so their products match
// llama.cpp's numerics up to float summation order (docs/DESIGN.md, "Weights").
#pragma once

#include <cstdint>

#include "quant/common.h"
#include "quant/weight/q8_k.h"

namespace kvq {

// y = dequantize(quantize(x)) block by block (q8_0: 32 values, q8_K: 256). A block holding a
// NaN or an infinity is copied through unchanged (its products are non-finite either way, and
// the finiteness check downstream reports them). n must be a multiple of the block size.
// The `_ref` functions are the specification: quantize_row_*_ref then dequantize_row_*_ref.
void round_row_q8_0_ref(const float* x, float* y, int64_t n);
void round_row_q8_k_ref(const float* x, float* y, int64_t n);

// Highway, bit-identical to the references.
void round_row_q8_0(const float* x, float* y, int64_t n, KernelPath path = KernelPath::kSimd);
void round_row_q8_k(const float* x, float* y, int64_t n, KernelPath path = KernelPath::kSimd);

// quantize_row_q8_k_ref (quant/weight/q8_k.h) with Highway, bit-identical: the activations of
// the K-quant integer vec_dot. x must be finite; n a multiple of 256.
void quantize_row_q8_k(const float* x, BlockQ8_K* y, int64_t n, KernelPath path = KernelPath::kSimd);

}  // namespace kvq
