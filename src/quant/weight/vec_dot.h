// SPDX-License-Identifier: MIT
// Dot products of packed weight rows with activation rows quantized to Q8 blocks, as ggml's
// vec_dot does: an exact int32 sum per block (per sub-block for the K-quants, times its integer
// scale), then one float multiply-add per block. The references add the blocks in order; the
// Highway versions keep the float sums in vector lanes and reduce once per row (as ggml's
// kernels do), so they differ from the references only by float rounding.
// n (the row length) must be a multiple of the weight block (32 or 256).
#pragma once

#include <cstdint>

#include "base/kernel_path.h"
#include "quant/ggml_blocks.h"
#include "quant/weight/iq4_nl.h"
#include "quant/weight/iq4_xs.h"
#include "quant/weight/q2_k.h"
#include "quant/weight/q3_k.h"
#include "quant/weight/q4_1.h"
#include "quant/weight/q4_k.h"
#include "quant/weight/q5_0.h"
#include "quant/weight/q5_1.h"
#include "quant/weight/q5_k.h"
#include "quant/weight/q6_k.h"
#include "quant/weight/q8_k.h"

namespace kvq {

// Q8_0 and Q4_0 weights with Q8_0 activations: sum_b d_w d_a sum_j q_w q_a.
float vec_dot_q8_0_q8_0_ref(const BlockQ8_0* w, const BlockQ8_0* a, int64_t n);
float vec_dot_q4_0_q8_0_ref(const BlockQ4_0* w, const BlockQ8_0* a, int64_t n);
// Q4_1 and Q5_1 (d q + m, q unsigned) and Q5_0 (d (q - 16)) with Q8_0 activations: Q4_1's and
// Q5_1's m times d_a and the activation block's code sum.
float vec_dot_q4_1_q8_0_ref(const BlockQ4_1* w, const BlockQ8_0* a, int64_t n);
float vec_dot_q5_0_q8_0_ref(const BlockQ5_0* w, const BlockQ8_0* a, int64_t n);
float vec_dot_q5_1_q8_0_ref(const BlockQ5_1* w, const BlockQ8_0* a, int64_t n);
// IQ4_NL (Q8_0 activations) and IQ4_XS (Q8_K): each nibble's level from kIq4nlValues.
float vec_dot_iq4_nl_q8_0_ref(const BlockIQ4_NL* w, const BlockQ8_0* a, int64_t n);
float vec_dot_iq4_xs_q8_k_ref(const BlockIQ4_XS* w, const BlockQ8_K* a, int64_t n);
// K-quant weights with Q8_K activations; Q4_K's and Q5_K's minimums use the activation's
// 16-sums.
float vec_dot_q4_k_q8_k_ref(const BlockQ4_K* w, const BlockQ8_K* a, int64_t n);
float vec_dot_q5_k_q8_k_ref(const BlockQ5_K* w, const BlockQ8_K* a, int64_t n);
// Q2_K (its 4-bit minimums with the activation's 16-sums) and Q3_K (signed 6-bit scales).
float vec_dot_q2_k_q8_k_ref(const BlockQ2_K* w, const BlockQ8_K* a, int64_t n);
float vec_dot_q3_k_q8_k_ref(const BlockQ3_K* w, const BlockQ8_K* a, int64_t n);
float vec_dot_q6_k_q8_k_ref(const BlockQ6_K* w, const BlockQ8_K* a, int64_t n);

float vec_dot_q8_0_q8_0(const BlockQ8_0* w, const BlockQ8_0* a, int64_t n, KernelPath path = KernelPath::kSimd);
float vec_dot_q4_0_q8_0(const BlockQ4_0* w, const BlockQ8_0* a, int64_t n, KernelPath path = KernelPath::kSimd);
float vec_dot_q4_1_q8_0(const BlockQ4_1* w, const BlockQ8_0* a, int64_t n, KernelPath path = KernelPath::kSimd);
float vec_dot_q5_0_q8_0(const BlockQ5_0* w, const BlockQ8_0* a, int64_t n, KernelPath path = KernelPath::kSimd);
float vec_dot_q5_1_q8_0(const BlockQ5_1* w, const BlockQ8_0* a, int64_t n, KernelPath path = KernelPath::kSimd);
float vec_dot_iq4_nl_q8_0(const BlockIQ4_NL* w, const BlockQ8_0* a, int64_t n, KernelPath path = KernelPath::kSimd);
float vec_dot_iq4_xs_q8_k(const BlockIQ4_XS* w, const BlockQ8_K* a, int64_t n, KernelPath path = KernelPath::kSimd);
float vec_dot_q4_k_q8_k(const BlockQ4_K* w, const BlockQ8_K* a, int64_t n, KernelPath path = KernelPath::kSimd);
float vec_dot_q2_k_q8_k(const BlockQ2_K* w, const BlockQ8_K* a, int64_t n, KernelPath path = KernelPath::kSimd);
float vec_dot_q3_k_q8_k(const BlockQ3_K* w, const BlockQ8_K* a, int64_t n, KernelPath path = KernelPath::kSimd);
float vec_dot_q5_k_q8_k(const BlockQ5_K* w, const BlockQ8_K* a, int64_t n, KernelPath path = KernelPath::kSimd);
float vec_dot_q6_k_q8_k(const BlockQ6_K* w, const BlockQ8_K* a, int64_t n, KernelPath path = KernelPath::kSimd);

// y[r] = vec_dot_q4_k_q8_k(w + r * row_stride, a, n, path) for r in [0, n_rows) (row_stride in
// blocks): a decode step's rows without a dispatched call per row. A row's result is
// bit-identical to vec_dot_q4_k_q8_k's on the same path, whatever n_rows and the row's place.
void vec_dot_q4_k_q8_k_rows(const BlockQ4_K* w, size_t row_stride, int n_rows, const BlockQ8_K* a, int64_t n, float* y,
                            KernelPath path = KernelPath::kSimd);

}  // namespace kvq
