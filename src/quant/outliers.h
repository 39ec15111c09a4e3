// SPDX-License-Identifier: MIT
// Dense-and-sparse outliers (KVQuant §3.4, spec §5.1): values outside a per-vector range are
// kept exactly in a sparse part (fp16 value + uint16 index) and the dense part is quantized
// with the range narrowed to the inliers.
//   Keys (per channel): outlier iff x > u_c or x < l_c with thresholds calibrated offline.
//   Values (per token): the k largest and k smallest of the token are outliers, k =
//     outliers_per_side(n, fraction) (deployment QuantV: topk(k+1), 21 + 21 for 4096 at 1%);
//     the range is [l, u] = [(k+1)-th smallest, (k+1)-th largest], the inliers' min and max.
// Ties are broken by index so the selection is deterministic: "larger" means greater value,
// or equal value and lower index; the bottom k are the k smallest in that same order, so
// the two sets never overlap while 2k < n.
// The dense code of an outlier is its clamped nearest centroid (an end level); reconstruction
// overwrites it with the sparse value (apply_outliers), and the fused helpers below add the
// difference. Sparse values are stored in fp16 (exact for fp16 inputs).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/fp16.h"
#include "quant/codebook.h"
#include "quant/common.h"
#include "quant/normalize.h"

namespace kvq {

// k per side: ceil(n * fraction / 2), capped at (n - 1) / 2 so at least one inlier remains.
size_t outliers_per_side(size_t n, double fraction);

// Per-token selection. idx receives the 2k outlier indices in ascending order; upper/lower
// the inlier range (max and min of x when k = 0). n >= 1, 2k < n, x finite (callers check it).
void select_token_outliers(const float* x, size_t n, size_t k, uint16_t* idx, float* upper,
                           float* lower);
// Brute-force specification: a full sort in the tie-broken order.
void select_token_outliers_ref(const float* x, size_t n, size_t k, uint16_t* idx, float* upper,
                               float* lower);
// Per-channel selection: indices (ascending) of x[c] > upper[c] or x[c] < lower[c]; returns
// the count (idx needs room for n).
size_t select_channel_outliers(const float* x, size_t n, const float* upper, const float* lower,
                               uint16_t* idx);

// KVQuant values: one token of n <= 65536 values. Writes codes (packed_bytes(cb.bits, n)),
// the token's NormParams, and 2k outliers (idx ascending, fp16 val); *n_outliers = 2k.
// With norm8 (the spec's norm=8) the inliers' range is encoded there in 8 bits
// (norm8_from_thresholds) and the codes use that decoded norm, which *norm then holds.
// invalid_argument for NaN/Inf, |x| > 65504, n = 0 or > 65536, fraction not in [0, 1), a
// range no 8-bit norm covers.
Status quantize_dense_sparse_token(const float* x, size_t n, double fraction, const Codebook& cb,
                                   uint8_t* codes, NormParams* norm, uint16_t* idx, f16_t* val,
                                   size_t* n_outliers, KernelPath path = KernelPath::kSimd,
                                   NormParams8* norm8 = nullptr);
// KVQuant keys: one token's n channels with offline thresholds in `norm` (its upper/lower).
// idx/val need room for n entries; *n_outliers is the data-dependent count.
Status quantize_dense_sparse_channels(const float* x, size_t n, const ChannelNorm& norm,
                                      const Codebook& cb, uint8_t* codes, uint16_t* idx,
                                      f16_t* val, size_t* n_outliers,
                                      KernelPath path = KernelPath::kSimd);

// out[idx[i]] = val[i]: turns a decoded dense row into the exact reconstruction.
void apply_outliers(const uint16_t* idx, const f16_t* val, size_t count, float* out);
// Corrections for the fused paths, sum over outliers of q[i] (val_i - dense_i):
// add to dot_codebook_row_pc (keys) ...
float outlier_dot_correction_pc(const float* q, const uint16_t* idx, const f16_t* val,
                                size_t count, const uint8_t* codes, const ChannelNorm& norm,
                                const Codebook& cb);
// ... and y[idx] += a (val_i - dense_i) after axpy_codebook_row (values).
void outlier_axpy_correction(float a, const uint16_t* idx, const f16_t* val, size_t count,
                             const uint8_t* codes, NormParams norm, const Codebook& cb,
                             float* y);

// Appendable per-token sparse storage (CSR by token: rows are tokens, each row a contiguous
// segment), used for both K and V. Bytes are exactly what the paper counts: a uint32 row
// pointer per token (+1), and a uint16 index + fp16 value per outlier.
class SparseRows {
 public:
  void append_row(const uint16_t* idx, const f16_t* val, size_t count);
  void truncate(size_t n_rows);  // keeps the first n_rows rows
  size_t n_rows() const { return row_ptr_.size() - 1; }
  size_t nnz() const { return idx_.size(); }
  std::span<const uint16_t> idx(size_t row) const;
  std::span<const f16_t> val(size_t row) const;
  size_t bytes() const { return row_ptr_.size() * 4 + nnz() * 4; }
  // The CSR arrays, for attention views: row r is [row_ptr()[r], row_ptr()[r + 1]).
  const uint32_t* row_ptr() const { return row_ptr_.data(); }
  const uint16_t* idx_data() const { return idx_.data(); }
  const f16_t* val_data() const { return val_.data(); }

 private:
  std::vector<uint32_t> row_ptr_{0};
  std::vector<uint16_t> idx_;
  std::vector<f16_t> val_;
};

}  // namespace kvq
