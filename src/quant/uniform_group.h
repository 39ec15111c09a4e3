// SPDX-License-Identifier: MIT
// Uniform min-max quantization in groups (KIVI §1.1) and the per-token int-b baselines of
// KVQuant Table 1/18 (symmetric or asymmetric, whole vector or groups; ATOM/FlexGen style).
//
// Math (the scalar *_ref functions are the specification; docs/QUANT_SCHEMES.md §2):
//   asymmetric: zero z = f16(min), scale s = f16((max - min) / (2^b - 1)),
//               code = clamp(rint((x - z) * (1/s)), 0, 2^b - 1),  x' = code * s + z.
//   symmetric:  s = f16(absmax / (2^(b-1) - 1)), m = 2^(b-1) - 1,
//               code = clamp(rint(x * (1/s)), -m, m) + 2^(b-1),   x' = (code - 2^(b-1)) * s.
// rint is round-half-to-even, 1/s is one float division per group, and quantization uses the
// fp16-rounded s and z that dequantization will see. A constant group (or a range below fp16
// resolution) has s = 0: every code is 0 (asymmetric) or 2^(b-1) (symmetric), and x' = z
// exactly. All float ops are unfused, so the Highway path is bit-exact with the reference.
//
// Storage: codes of a row are one packed stream (bitpack.h), one fp16 scale (and zero) per group.
// Thread-safety: all functions are pure and reentrant.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/fp16.h"
#include "base/thread_pool.h"
#include "quant/bitpack.h"
#include "quant/common.h"

namespace kvq {

struct UniformParams {
  int bits = 2;            // 2, 3, 4 or 8
  int group_size = 32;     // values per group along the row; 0 = the whole row is one group
  bool symmetric = false;  // false: fp16 scale + fp16 zero (min); true: fp16 scale only
};

// Number of groups of a row of n values (the last group may be partial).
constexpr size_t uniform_group_count(size_t n, int group_size) {
  if (n == 0) return 0;
  return group_size <= 0 ? 1 : (n + size_t(group_size) - 1) / size_t(group_size);
}

// ---- Groups along a contiguous row (KIVI values per token, int-b per-token baselines) ----
// x[n] -> codes[packed_bytes(bits, n)], scales[uniform_group_count(n, G)], zeros[same]
// (zeros unused and may be null when symmetric).
void quantize_uniform_row_ref(const float* x, size_t n, const UniformParams& p, uint8_t* codes,
                              f16_t* scales, f16_t* zeros);
void dequantize_uniform_row_ref(const uint8_t* codes, const f16_t* scales, const f16_t* zeros,
                                size_t n, const UniformParams& p, float* out);
// Checked: invalid_argument for bad bits/group size, null pointers, NaN/Inf or |x| > 65504.
Status quantize_uniform_row(const float* x, size_t n, const UniformParams& p, uint8_t* codes,
                            f16_t* scales, f16_t* zeros, KernelPath path = KernelPath::kSimd);
// Batched: rows r < n_rows of x (leading dimension ld) into codes + r*codes_stride,
// scales/zeros + r*uniform_group_count(n, G). Rows are independent, so the result does not
// depend on the pool (null = caller thread) or its thread count.
Status quantize_uniform_rows(ThreadPool* pool, const float* x, size_t n_rows, size_t n, size_t ld,
                             const UniformParams& p, uint8_t* codes, size_t codes_stride,
                             f16_t* scales, f16_t* zeros, KernelPath path = KernelPath::kSimd);
// Read path (programmer errors abort): out[i] = x'_i.
void dequantize_uniform_row(const uint8_t* codes, const f16_t* scales, const f16_t* zeros,
                            size_t n, const UniformParams& p, float* out,
                            KernelPath path = KernelPath::kSimd);
// Returns sum_i q[i] * x'_i (float accumulation; within tolerances.h of the reference).
float dot_uniform_row(const float* q, const uint8_t* codes, const f16_t* scales,
                      const f16_t* zeros, size_t n, const UniformParams& p,
                      KernelPath path = KernelPath::kSimd);
// y[i] += a * x'_i (attention-weighted value accumulation).
void axpy_uniform_row(float a, const uint8_t* codes, const f16_t* scales, const f16_t* zeros,
                      size_t n, const UniformParams& p, float* y,
                      KernelPath path = KernelPath::kSimd);

// ---- Groups along columns (KIVI keys: one channel over G tokens) ----
// Block x[n_rows][n_cols] with leading dimension ld; each column is one asymmetric group over
// the rows. codes: n_rows packed rows of packed_bytes(bits, n_cols) bytes (row t = token t's
// codes for all channels, so a score is a dot along one row); scales, zeros: [n_cols].
void quantize_uniform_cols_ref(const float* x, size_t n_rows, size_t n_cols, size_t ld,
                               int bits, uint8_t* codes, f16_t* scales, f16_t* zeros);
Status quantize_uniform_cols(const float* x, size_t n_rows, size_t n_cols, size_t ld, int bits,
                             uint8_t* codes, f16_t* scales, f16_t* zeros,
                             KernelPath path = KernelPath::kSimd);
// out[t * ldo + c] = x'[t][c].
void dequantize_uniform_cols(const uint8_t* codes, const f16_t* scales, const f16_t* zeros,
                             size_t n_rows, size_t n_cols, int bits, float* out, size_t ldo,
                             KernelPath path = KernelPath::kSimd);
// scores[t] = sum_c q[c] * x'[t][c] for t < n_rows (the q.K^T of one KIVI key block).
void dot_uniform_cols(const float* q, const uint8_t* codes, const f16_t* scales,
                      const f16_t* zeros, size_t n_rows, size_t n_cols, int bits, float* scores,
                      KernelPath path = KernelPath::kSimd);

}  // namespace kvq
