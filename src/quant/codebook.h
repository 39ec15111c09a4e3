// SPDX-License-Identifier: MIT
// Codebook formats in the normalized [-1, 1] domain (KVQuant §3.3, spec §4):
//   nuq-b: a per-layer codebook of 2^b centroids from Fisher-weighted k-means (kmeans.h),
//          loaded from calibration as data;
//   nf-b:  NormalFloat signposts (spec §4.4), the paper's baseline.
// Encode is nearest centroid on x̂ = (x - z) * (1/h) (normalize.h); decode is a table lookup
// x' = h * c[code] + z. Codes are packed with bitpack.h.
//
// Nearest centroid, exactly: code = #{j : x̂ > t_j} with t_j = (c_j + c_{j+1}) * 0.5f over the
// sorted centroids, i.e. argmin_j |x̂ - c_j| with ties going to the lower centroid. The
// Highway path does the same comparisons (bit-exact); decode is bit-exact too, dot and axpy
// are within tolerances.h.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "quant/common.h"
#include "quant/normalize.h"

namespace kvq {

struct Codebook {
  int bits = 0;                       // 2, 3 or 4
  std::array<float, 16> values{};     // decode levels (sorted; Q-Norm may shift/scale them)
  std::array<float, 15> thresholds{}; // encode boundaries between the original centroids
  int size() const { return 1 << bits; }
};

// Sorts `centroids` (2^bits finite, distinct values, any order, as KVQuant stores them) into a
// codebook. invalid_argument otherwise.
StatusOr<Codebook> make_codebook(int bits, std::span<const float> centroids);
// NormalFloat-b (spec §4.4): 2^(b-1) normal quantiles from p0 = (1/32 + 1/30)/2 to 1/2 scaled
// to [-1, 0], 2^(b-1)+1 from 1/2 to 1 - p0 scaled to [0, 1], shared 0 kept once. bits in 2..4.
Codebook make_nf_codebook(int bits);
// Inverse standard normal CDF in double (Acklam's approximation + one Halley step on erfc).
double normal_quantile(double p);

inline uint8_t codebook_encode(float xhat, const Codebook& cb) {
  int code = 0;
  for (int j = 0; j + 1 < cb.size(); ++j) code += xhat > cb.thresholds[j];
  return uint8_t(code);
}

// ---- Per-token normalization (KVQuant values): one NormParams for the whole row ----
void encode_codebook_row_ref(const float* x, size_t n, NormParams norm, const Codebook& cb,
                             uint8_t* codes);
// Checked: NaN/Inf -> invalid_argument. codes: packed_bytes(cb.bits, n) bytes.
Status encode_codebook_row(const float* x, size_t n, NormParams norm, const Codebook& cb,
                           uint8_t* codes, KernelPath path = KernelPath::kSimd);
void decode_codebook_row(const uint8_t* codes, size_t n, NormParams norm, const Codebook& cb,
                         float* out, KernelPath path = KernelPath::kSimd);
// y[i] += a * x'_i.
void axpy_codebook_row(float a, const uint8_t* codes, size_t n, NormParams norm,
                       const Codebook& cb, float* y, KernelPath path = KernelPath::kSimd);

// ---- Per-channel normalization (KVQuant keys): element i uses channel i of `norm` ----
void encode_codebook_row_pc_ref(const float* x, size_t n, const ChannelNorm& norm,
                                const Codebook& cb, uint8_t* codes);
Status encode_codebook_row_pc(const float* x, size_t n, const ChannelNorm& norm,
                              const Codebook& cb, uint8_t* codes,
                              KernelPath path = KernelPath::kSimd);
void decode_codebook_row_pc(const uint8_t* codes, size_t n, const ChannelNorm& norm,
                            const Codebook& cb, float* out, KernelPath path = KernelPath::kSimd);
// Fused q.k for per-channel keys: sum_c q_c (h_c c[code_c] + z_c) = sum_c w_c c[code_c] + bias
// with w_c = q_c h_c and bias = sum_c q_c z_c, prepared once per query (w has n floats).
void prepare_codebook_query_pc(const float* q, size_t n, const ChannelNorm& norm, float* w,
                               float* bias);
float dot_codebook_row_pc(const float* w, float bias, const uint8_t* codes, size_t n,
                          const Codebook& cb, KernelPath path = KernelPath::kSimd);

}  // namespace kvq
