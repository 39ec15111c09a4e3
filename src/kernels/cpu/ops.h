// SPDX-License-Identifier: MIT
// Highway kernels with run-time dispatch over the CPU's best SIMD target. Each has a scalar
// specification in kernels/ref/ops_ref.h. Results depend only on the inputs and the SIMD target,
// never on how the caller splits the work across threads.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/fp16.h"

namespace kvq::cpu {

// Plain strided views of row-major matrices: f32 activations, weights of type W (float, or
// f16 rows as a GGUF's F16 tensors hold them).
template <typename W>
struct MatmulParamsT {
  const float* x = nullptr;  // [n_tokens, n_in], row stride ldx
  const W* w = nullptr;      // [n_rows, n_in], row stride ldw
  float* y = nullptr;        // [n_tokens, n_rows], row stride ldy
  size_t ldx = 0, ldw = 0, ldy = 0;
  int n_tokens = 0, n_rows = 0, n_in = 0;
};
using MatmulParams = MatmulParamsT<float>;

// y[t, r] = x[t, :] . w[r, :]. Every output element is accumulated in the same order whatever
// n_tokens / n_rows the call covers, so tiling and threading do not change results.
void matmul(const MatmulParams& p);
// Weights of 16-bit floats, as a GGUF's F16 and BF16 tensors hold them.
enum class HalfType { kF16, kBF16 };
struct MatmulHalfParams {
  MatmulParamsT<uint16_t> m;  // the rows' 16-bit words
  HalfType type = HalfType::kF16;
};
// The same over f16 or bf16 weights, each converted to f32 in registers as it is loaded: bit
// for bit convert_f16_to_f32 (convert_bf16_to_f32) of the rows, then matmul. For a decode
// step's few tokens (each weight used by each token once), where converting the rows into a
// tile first costs a store and a reload of every weight; a prefill converts each row once into
// a tile and reuses it instead.
void matmul(const MatmulHalfParams& p);

// A panel: kPanelRows weight rows stored k-major, panel[k * kPanelRows + r] = w[r0 + r, k]
// (rows past the matrix's end are zero). Batched matmuls over packed weights dequantize each
// panel once and multiply it by every token (model/model_ops.cc).
inline constexpr int kPanelRows = 16;

struct PanelMatmulParams {
  const float* x = nullptr;      // [n_tokens, n_in], row stride ldx
  const float* panel = nullptr;  // [n_in, kPanelRows]
  float* y = nullptr;            // [n_tokens, n_rows], row stride ldy
  size_t ldx = 0, ldy = 0;
  int n_tokens = 0, n_rows = 0, n_in = 0;  // 1 <= n_rows <= kPanelRows
};

// y[t, r] = sum_k x[t, k] * panel[k, r], each output a fused multiply-add per k in increasing k
// (spec: ref::matmul_ref on the unpacked rows, equal up to float rounding); every output sees
// the same sequence whatever n_tokens the call covers.
void matmul_panel(const PanelMatmulParams& p);
// Writes n_rows (<= kPanelRows) rows of stride ldw as a panel, zero-padded to kPanelRows.
void pack_panel(const float* rows, size_t ldw, int n_rows, int n_in, float* panel);

// Attention over K/V rows (f32 or f16, row stride ldk/ldv elements) for n_q queries:
//   scores[i * lds + j] = scale * q_i . k_j           (q_i = q + i * ldq, j < n_rows)
//   out[i * ldo + :] += sum_j p[i * ldp + j] * v_j
// Each (query, row) score and each query's accumulation are computed the same way whatever
// n_q is, so batching queries never changes results.
void attn_scores(const float* q, size_t ldq, int n_q, const float* k, size_t ldk, int n_rows,
                 int head_dim, float scale, float* scores, size_t lds);
void attn_scores(const float* q, size_t ldq, int n_q, const f16_t* k, size_t ldk, int n_rows,
                 int head_dim, float scale, float* scores, size_t lds);
void attn_accumulate(const float* p, size_t ldp, int n_q, const float* v, size_t ldv, int n_rows,
                     int head_dim, float* out, size_t ldo);
void attn_accumulate(const float* p, size_t ldp, int n_q, const f16_t* v, size_t ldv, int n_rows,
                     int head_dim, float* out, size_t ldo);
// Rotates row j of x: [n_rows, head_dim] by row j of table: [n_rows][2][head_dim] (Rope::key_table):
// x_j = x_j * C_j + partner(x_j) * S_j, the partner of a dim the other dim of its pair
// (Rope::pair_stride: 1 adjacent, else the neox half). Spec: Rope::rotate with the same offsets.
void rope_rows_table(float* x, int n_rows, int head_dim, const float* table, int pair_stride = 1);
// Rotates each row of x: [n_rows, head_dim] by the one angle set cs: [rope_dim / 2][2] (cos, sin;
// Rope::angles, Rope::offset), adjacent pairs, R or R^T; dims past rope_dim are left alone.
// Spec: Rope::rotate per row (agrees within a rounding). False, having done nothing, when
// rope_dim is not a multiple of 4.
bool rope_rotate_rows(float* x, int n_rows, int head_dim, int rope_dim, const float* cs, bool transpose);

// In-place softmax over x[0, n); round_f16 rounds each probability to f16 (the f16-cache path).
// Scalar specification: ref::softmax_ref (then round_to_f16); agrees within a few ulp, and a
// NaN among x makes every probability, *max and *sum NaN.
// max / sum (optional) receive the row max and the sum of exp(x - max) it normalized by.
void softmax(float* x, int n, bool round_f16, float* max = nullptr, float* sum = nullptr);

// The FFN's SwiGLU gate in place: g[i] = silu(g[i]) * u[i] over n values. Scalar
// specification: ref::silu(g[i]) * u[i]; agrees within a few ulp (Highway's Exp).
void swiglu(float* g, const float* u, size_t n);

// The randomized Hadamard transform of the n_rows head vectors x: [n_rows, head_dim] in place,
// forward or inverse (kernels/ref/hadamard_ref.h, which it matches exactly); head_dim a power
// of two, signs from hadamard_signs.
void hadamard_rows(float* x, int n_rows, int head_dim, const float* signs, bool inverse);

// Converts n floats to f16 (round to nearest even), and back. prefetch_bytes > 0: also
// prefetches the source that many bytes ahead of where it reads, into L2 (the rows of an F16
// weight matrix follow each other in memory and a decode step streams them from there; the
// addresses may pass x's end, which a prefetch never faults on).
void convert_f32_to_f16(const float* x, f16_t* y, size_t n);
void convert_f16_to_f32(const f16_t* x, float* y, size_t n, size_t prefetch_bytes = 0);
// bf16 to float (exact), prefetching as convert_f16_to_f32.
void convert_bf16_to_f32(const bf16_t* x, float* y, size_t n, size_t prefetch_bytes = 0);

}  // namespace kvq::cpu
