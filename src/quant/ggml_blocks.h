// SPDX-License-Identifier: MIT
// llama.cpp-compatible per-token blocks of 32 (ggml q8_0 and q4_0), bit-identical to ggml's
// quantize_row_q{8,4}_0_ref and dequantize_row_q{8,4}_0, for comparisons with llama.cpp's
// quantized KV cache (-ctk/-ctv q8_0, q4_0).
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/fp16.h"
#include "quant/common.h"

namespace kvq {

inline constexpr int kQK8_0 = 32;
inline constexpr int kQK4_0 = 32;

// Layout (34 bytes): [0:2) fp16 d, [2:34) int8 qs[32]; x_j = qs[j] * d.
// Quantize: d = amax / 127, qs = roundf(x / d) (half away from zero), using 1/d in float.
struct BlockQ8_0 {
  f16_t d;
  int8_t qs[kQK8_0];
};
static_assert(sizeof(BlockQ8_0) == 34, "ggml block_q8_0 is 34 bytes");

// Layout (18 bytes): [0:2) fp16 d, [2:18) uint8 qs[16]; byte j holds element j in its low
// nibble and element j + 16 in its high nibble; x = (nibble - 8) * d.
// Quantize: d = max / -8 where max is the signed value of largest magnitude (first one on
// ties), nibble = min(15, (int8_t)(x / d + 8.5f)).
struct BlockQ4_0 {
  f16_t d;
  uint8_t qs[kQK4_0 / 2];
};
static_assert(sizeof(BlockQ4_0) == 18, "ggml block_q4_0 is 18 bytes");

// References, transcribed from ggml-quants.c. k must be a multiple of 32.
void quantize_row_q8_0_ref(const float* x, BlockQ8_0* y, int64_t k);
void dequantize_row_q8_0_ref(const BlockQ8_0* x, float* y, int64_t k);
void quantize_row_q4_0_ref(const float* x, BlockQ4_0* y, int64_t k);
void dequantize_row_q4_0_ref(const BlockQ4_0* x, float* y, int64_t k);

// Checked: invalid_argument for k not a positive multiple of 32, NaN/Inf input. The Highway
// path is bit-identical to the reference.
Status quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t k,
                         KernelPath path = KernelPath::kSimd);
Status quantize_row_q4_0(const float* x, BlockQ4_0* y, int64_t k,
                         KernelPath path = KernelPath::kSimd);
void dequantize_row_q8_0(const BlockQ8_0* x, float* y, int64_t k,
                         KernelPath path = KernelPath::kSimd);
void dequantize_row_q4_0(const BlockQ4_0* x, float* y, int64_t k,
                         KernelPath path = KernelPath::kSimd);
// sum_i q[i] * x'_i (float accumulation; within tolerances.h of the reference).
float dot_q8_0(const float* q, const BlockQ8_0* x, int64_t k, KernelPath path = KernelPath::kSimd);
float dot_q4_0(const float* q, const BlockQ4_0* x, int64_t k, KernelPath path = KernelPath::kSimd);

}  // namespace kvq
