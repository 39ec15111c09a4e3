// SPDX-License-Identifier: MIT
// Every tolerance of the quant tests, with its reasoning (ggml test-quantize-fns style).
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstddef>

namespace kvq::tol {

// Relative rounding error of a float -> fp16 store (half an ulp at 11 significant bits).
inline constexpr double kF16Rel = 1.0 / 2048;
// Smallest fp16 subnormal: absolute error floor of any fp16-stored scale or zero point.
inline constexpr double kF16Abs = 5.960464477539063e-08;

// Uniform asymmetric group (KIVI), per element. With s' = f16(s), z' = f16(min):
//  - rounding to the nearest level costs at most s'/2;
//  - clamping at the ends adds at most |z' - min| <= 2^-11 |min| (bottom) or
//    (2^b - 1)|s' - s| + |z' - min| <= 2^-11 (range + |min|) (top);
//  - all float ops add a few ulps of max(|x|), covered by doubling the 2^-11 term.
inline double uniform_asym_bound(double s_stored, double mn, double mx) {
  return 0.5 * s_stored + 2 * kF16Rel * ((mx - mn) + std::fabs(mn)) + kF16Abs;
}
// Uniform symmetric group: s'/2 from rounding, the clamp at +-m costs m|s' - s| <= 2^-11 amax.
inline double uniform_sym_bound(double s_stored, double amax) {
  return 0.5 * s_stored + 2 * kF16Rel * amax + kF16Abs;
}

// Normalized codebook formats (nuq, nf): an inlier x̂ in [-1, 1] is at most half the largest
// gap between neighbouring centroids from its centroid, or, beyond the extreme centroids,
// 1 - c_max (1 + c_min). Mapped back: times the half-range h, plus the fp16 rounding of the
// stored zero point and half-range (2^-11 (|z| + h), doubled for float ops).
inline double codebook_bound(double max_norm_err, double half_range, double zero) {
  return max_norm_err * half_range * (1 + 2 * kF16Rel) + 2 * kF16Rel * (std::fabs(zero) + half_range) +
         kF16Abs;
}

// ggml q8_0: x' = round(x / d) * f16(d); rounding costs d/2 and the fp16 scale costs
// 127 |f16(d) - d| <= 127 * 2^-11 d, so <= d (0.5 + 0.062).
inline double q8_0_bound(double amax) { return amax / 127 * (0.5 + 127 * kF16Rel) + kF16Abs; }
// ggml q4_0: d = max/-8; codes are floor(x/d + 8.5) clamped to 15: a rounding step of |d|/2,
// except the clamp of +8 -> 7 levels on the side opposite the max costs a full |d|;
// the fp16 scale adds 8 * 2^-11 |d|.
inline double q4_0_bound(double amax) { return amax / 8 * (1.0 + 8 * kF16Rel) + kF16Abs; }

// SIMD dot products and axpy accumulate in float over lanes in a different order than the
// double reference. Error is relative to sum |q_i x'_i|: each partial sum gathers about
// n / 16 terms, so a bound of (n/16 + 8) float epsilons, and at least the 1e-6.
inline double dot_rel(size_t n) { return std::max(1e-6, (double(n) / 16 + 8) * FLT_EPSILON); }

// Weighted 1-D k-means against the brute-force Lloyd reference started from the same seeds:
// the two differ only in summation order (prefix sums vs direct sums in double), ~1e-13
// relative on the inputs used; 1e-9 leaves room without hiding a wrong assignment (which
// would move a centroid by ~1e-2 on these inputs).
inline constexpr double kKMeansRel = 1e-9;

// Normal quantile: Acklam's rational approximation (1.15e-9 relative) refined by one Halley
// step is at double precision; scipy reference values are printed with 16 digits.
inline constexpr double kNormQuantileAbs = 1e-12;

// Q-Norm: the mean and standard deviation after adjustment match the originals up to float
// accumulation over the sample (n = 1e5 values, float centroids): 1e-5 relative.
inline constexpr double kQNormRel = 1e-5;

// Expected mean-square error of a uniform quantizer with step s on smooth data: s^2 / 12.
// Tests assert the measured NMSE (MSE / variance) stays below this many times the
// theoretical value computed from the actual stored scales (clamping and fp16 add a little).
// The law needs the data density to be smooth over one step, so it is only asserted for
// b >= 4 or small groups (G = 32); 2-bit whole-row groups on Laplace data put most mass
// between two far-apart levels and exceed it legitimately.
inline constexpr double kUniformMseSlack = 1.25;

}  // namespace kvq::tol
