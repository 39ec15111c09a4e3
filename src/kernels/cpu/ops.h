// SPDX-License-Identifier: MIT
// Highway kernels with run-time dispatch over the CPU's best SIMD target. Each has a scalar
// specification in kernels/ref/ops_ref.h. Results depend only on the inputs and the SIMD target,
// never on how the caller splits the work across threads.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/fp16.h"

namespace kvq::cpu {

// Plain strided view of a row-major float matrix.
struct MatmulParams {
  const float* x = nullptr;  // [n_tokens, n_in], row stride ldx
  const float* w = nullptr;  // [n_rows, n_in], row stride ldw
  float* y = nullptr;        // [n_tokens, n_rows], row stride ldy
  size_t ldx = 0, ldw = 0, ldy = 0;
  int n_tokens = 0, n_rows = 0, n_in = 0;
};

// y[t, r] = x[t, :] . w[r, :]. Every output element is accumulated in the same order whatever
// n_tokens / n_rows the call covers, so tiling and threading do not change results.
void matmul(const MatmulParams& p);

// scores[j] = scale * q . k_j for j < n_rows; k rows are f32 or f16 with stride head_dim.
void attn_scores_f32(const float* q, const float* k, int n_rows, int head_dim, float scale,
                     float* scores);
void attn_scores_f16(const float* q, const f16_t* k, int n_rows, int head_dim, float scale,
                     float* scores);
// out[:] += sum_j p[j] * v_j for j < n_rows.
void attn_accumulate_f32(const float* p, const float* v, int n_rows, int head_dim, float* out);
void attn_accumulate_f16(const float* p, const f16_t* v, int n_rows, int head_dim, float* out);

// In-place softmax over x[0, n); round_f16 rounds each probability to f16 (the f16-cache path).
// Scalar specification: ref::softmax_ref (then round_to_f16); agrees within a few ulp.
void softmax(float* x, int n, bool round_f16);

// Converts n floats to f16 (round to nearest even), and back.
void convert_f32_to_f16(const float* x, f16_t* y, size_t n);
void convert_f16_to_f32(const f16_t* x, float* y, size_t n);

// Name of the SIMD target chosen at run time, e.g. "AVX3" or "AVX2".
const char* simd_target_name();

}  // namespace kvq::cpu
