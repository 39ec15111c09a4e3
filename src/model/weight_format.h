// SPDX-License-Identifier: MIT
// The ggml weight types kvq computes with, straight from their packed GGUF bytes: one table
// entry per type with its block geometry (io's ggml_block_info) and its row dequantizers, the
// scalar reference (the specification, from ggml-quants.c's formulas) and the Highway version.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "base/kernel_path.h"
#include "io/gguf.h"

namespace kvq {

// Dequantizes n weights (a whole number of blocks) from packed bytes into f32.
using DequantizeRowFn = void (*)(const uint8_t* src, float* dst, int64_t n);
// Rounds n activations (a whole number of blocks) to the values of the activation format
// llama.cpp's CPU matmul pairs with a weight type (its vec_dot_type): Q8_0 for Q8_0, Q4_0,
// Q5_0, IQ4_NL; Q8_1 (same values as Q8_0) for Q4_1, Q5_1; Q8_K for the K-quants and IQ4_XS.
// A block holding a non-finite value is copied unchanged, so NaN still reaches the logits.
using RoundActivationsFn = void (*)(const float* x, float* y, int64_t n);
// The integer path of a type, as ggml's vec_dot: quantizes n activations to the blocks of that
// activation format (false when x holds a non-finite value), and the dot of a packed weight
// row with such a row.
using QuantizeActivationsFn = bool (*)(const float* x, uint8_t* blocks, int64_t n);
using VecDotFn = float (*)(const uint8_t* w_row, const uint8_t* act_blocks, int64_t n, KernelPath path);
// y[r] = vec_dot(w + r * row_bytes, act_blocks, n, path) for r in [0, n_rows), bit for bit:
// the decode step's rows in one call (a kernel may share each activation load among rows).
using VecDotRowsFn = void (*)(const uint8_t* w, size_t row_bytes, int n_rows, const uint8_t* act_blocks, int64_t n,
                              float* y, KernelPath path);

struct WeightFormat {
  GgmlType type;
  DequantizeRowFn dequantize_ref;   // scalar specification
  DequantizeRowFn dequantize_simd;  // Highway, runtime dispatch; equal to the reference
  // nullptr for F32/F16/BF16, whose activations stay f32. With it, y = W x is computed as
  // W round(x): llama.cpp's integer dot products up to float rounding (scalar, and O(n_in) per
  // token against the matmul's O(n_in * n_rows)).
  RoundActivationsFn round_activations;
  // The activation block length round_activations works on (32 or 256; 1 without it).
  int activation_block;
  // Bytes of one activation block (34 for Q8_0, 292 for Q8_K).
  int activation_block_bytes;
  QuantizeActivationsFn quantize_activations;
  // nullptr: the matmul multiplies round_activations(x) with dequantized rows in f32 instead,
  // which equals vec_dot up to float rounding.
  VecDotFn vec_dot;
  // Set whenever vec_dot is: a multi-row kernel, or vec_dot called per row.
  VecDotRowsFn vec_dot_rows;
  DequantizeRowFn dequantize(KernelPath p) const {
    return p == KernelPath::kRef ? dequantize_ref : dequantize_simd;
  }
};

// The entry for a ggml type id, or nullptr when kvq cannot compute with it.
const WeightFormat* find_weight_format(uint32_t type);
// "F32, F16, ..." for error messages.
std::string weight_format_names();

}  // namespace kvq
