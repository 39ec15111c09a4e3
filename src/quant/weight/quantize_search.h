// SPDX-License-Identifier: MIT
// The scale searches of ggml's reference weight quantizers (ggml-quants.c), shared by the
// K-quant and IQ4 `quantize_row_*_ref`s. They follow ggml's algorithms and its float operation
// order (kvq_quant builds with -ffp-contract=off, as does ggml's reference path in effect), so
// quantizing a tensor gives the bytes llama-quantize writes without an importance matrix.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "base/fp16.h"

namespace kvq {

// Groups whose largest magnitude is below this are all zero (ggml's GROUP_MAX_EPS).
inline constexpr float kGroupMaxEps = 1e-15f;

// Round to nearest, ties to even, as ggml's nearest_int: adding 1.5 * 2^23 leaves the rounded
// integer in the low mantissa bits (exact for |x| < 2^22; no libm call, which matters at the
// 21 trial scales per sub-block). The clamp keeps huge inputs in that range (NaN gives some
// value in it, without undefined behaviour); every caller clamps the result to its code range.
inline int nearest_int(float x) {
  x = std::min(std::max(x, -4194303.0f), 4194303.0f);
  const float shifted = x + 12582912.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, 4);
  return (bits & 0x007FFFFF) - 0x00400000;
}

// make_qkx2_quants: codes L[i] in [0, nmax] and (scale, min) with x ≈ scale * L - min,
// minimizing the weighted squared (or absolute, use_mad) error over nstep + 1 trial scales
// (nmax + rmin + rdelta * is) / (max - min), each refined by weighted least squares. min >= 0
// is returned in *the_min (ggml stores -min); the return value is the scale. laux: n scratch.
float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                       uint8_t* laux, float rmin, float rdelta, int nstep, bool use_mad);

// The scale-and-min search of Q4_K and Q5_K (ggml's quantize_row_q4_K_ref / q5_K_ref) for one
// 256-weight super-block x: per 32-weight sub-block make_qkx2_quants with weights rms + |x|
// (rdelta 0.1; rmin, nstep: -1, 20 for Q4_K and -0.5, 15 for Q5_K), the 8 scales and mins
// quantized to 6 bits (scales: kKScaleSize bytes) under one f16 *d and *dmin, then the codes
// L[256] in [0, nmax] again under the scales as stored (a zero scale keeps the search's codes).
void quantize_k_scale_min_block(const float* x, int nmax, float rmin, int nstep, uint8_t* L, uint8_t* scales,
                                f16_t* d, f16_t* dmin);

// make_q3_quants with do_rmse: symmetric codes L[i] in [0, 2 nmax) (offset by nmax) for
// x ≈ scale * (L - nmax), refined by up to 5 passes of coordinate descent on the x²-weighted
// error. Returns the scale (0 for an all-zero group, L = 0).
float make_q3_quants(int n, int nmax, const float* x, int8_t* L);

// make_qx_quants with rmse_type 1 and no importance weights: symmetric codes as make_q3_quants,
// the scale from 19 trial steps (nmax + 0.1 is) / max, is = -9..9, by x²-weighted least squares.
float make_qx_quants(int n, int nmax, const float* x, int8_t* L);

// Index of the entry of the ascending table val[0, n) nearest to x (the upper one on ties).
int best_index_int8(int n, const int8_t* val, float x);

// quantize_row_iq4_nl_impl without importance weights and ntry = 7, as llama-quantize calls it
// for IQ4_NL (super_block = 32) and IQ4_XS (super_block = 256): per 32-weight sub-block the
// x²-weighted best scale over 15 trial scales on the 16 non-linear levels. For IQ4_NL *dh is the
// scale; for IQ4_XS the sub-block scales are quantized to 6 bits (scales_l, scales_h) under
// *dh = -max_scale / 32. q4: super_block / 2 bytes, element j of each 32 low nibble, j + 16 high.
void quantize_iq4_super_block(int super_block, const float* x, uint16_t* dh, uint8_t* q4, uint16_t* scales_h,
                              uint8_t* scales_l);

}  // namespace kvq
