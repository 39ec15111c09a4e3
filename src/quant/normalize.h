// SPDX-License-Identifier: MIT
// Normalization to [-1, 1] from an upper and a lower threshold (KVQuant §3.1 / spec §1.1):
//   zero point z = (u + l) / 2, half-range h = (u - l) / 2, x̂ = (x - z) * (1/h), x' = h*c + z.
// z and h are stored as fp16 (paper App M: a 16-bit zero point and scale per vector) and both
// directions use the stored values. h = 0 (u == l) gives 1/h := 0, so x̂ = 0 and x' = z.
// Per channel (keys): thresholds calibrated offline, one ChannelNorm per layer.
// Per token (values): thresholds computed online (min/max, or the inlier range in outliers.h).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "base/fp16.h"
#include "quant/common.h"

namespace kvq {

// Stored form: 4 bytes per vector. Layout: {f16 zero, f16 half_range}.
struct NormParams {
  f16_t zero = 0;
  f16_t half_range = 0;
};
static_assert(sizeof(NormParams) == 4);

// Float form used by the kernels (inv = 1/h or 0).
struct NormF {
  float zero, half, inv;
};

// The 8-bit form (the spec's norm=8, KVQuant values only): 2 bytes per vector instead of 4.
//   half-range h = m[c % 16] * 2^(c / 16 - 8), m[i] = 2^(i / 16) rounded to fp16: a log scale
//                  of 16 steps per octave (4.4% apart) from 2^-8 to 245;
//   zero point z = q * 2^(c / 16 - 13), in 1/32 of the power of two at or below h.
// Every decoded pair is exactly an fp16 NormParams (norm8_decode), so the quantizer and the
// kernels use the same numbers as they would with that NormParams stored. Encoding takes the
// smallest h and the nearest q whose [z - h, z + h] covers [lower, upper]: the decoded norm
// never clips an inlier, and the grid is at most one log step (and one zero step) wider than the
// fp16 form's.
struct NormParams8 {
  uint8_t log_half = 0;
  int8_t zero = 0;
};
static_assert(sizeof(NormParams8) == 2);
inline constexpr float kNorm8Mantissa[16] = {1.0f,          1.0439453125f, 1.0908203125f, 1.138671875f,
                                             1.189453125f,  1.2421875f,    1.296875f,     1.3544921875f,
                                             1.4140625f,    1.4765625f,    1.5419921875f, 1.6103515625f,
                                             1.681640625f,  1.755859375f,  1.833984375f,  1.9150390625f};
inline constexpr int kNorm8MinExp = -8;  // code 0: h = 2^-8
// Exact floats of a stored 8-bit norm (what every decoder reads).
inline NormF norm8_float(NormParams8 p) {
  const int e = int(p.log_half) / 16 + kNorm8MinExp;
  NormF f;
  f.half = std::ldexp(kNorm8Mantissa[p.log_half % 16], e);
  f.zero = std::ldexp(float(p.zero), e - 5);
  f.inv = 1.0f / f.half;
  return f;
}
// The same norm as NormParams (exact: both pieces are fp16 values).
NormParams norm8_decode(NormParams8 p);
// The 8-bit norm covering [lower, upper] (upper >= lower, finite); invalid_argument, naming the
// range, when none does (a range wider than 490, or reaching beyond about +-750).
StatusOr<NormParams8> norm8_from_thresholds(float upper, float lower);

NormParams norm_from_thresholds(float upper, float lower);
NormF norm_float(NormParams p);
// Online per-token thresholds without outliers: u = max, l = min (KVQuant "t = 1").
NormParams norm_from_minmax(const float* x, size_t n);
// The per-token norm of a row without outliers as a KVQuant value store keeps it:
// norm_from_minmax, or, when norm8 is given (the spec's norm=8), the 8-bit norm covering
// [min, max] in *norm8 and its decoded form returned (the one the codes are encoded with).
// x finite; errors as norm8_from_thresholds.
StatusOr<NormParams> row_norm_from_minmax(const float* x, size_t n, NormParams8* norm8);

// Per-channel normalization of a layer's keys (n channels = n_kv_heads * head_dim).
// Float arrays are precomputed once so the per-token kernels only load them.
struct ChannelNorm {
  std::vector<f16_t> zero, half_range;  // stored (fp16)
  std::vector<float> zero_f, half_f, inv_f;
  // Outlier thresholds (outliers.h): the calibrated u and l, or z +- h when loaded from fp16.
  std::vector<float> upper, lower;
  size_t size() const { return zero.size(); }
};
// invalid_argument if a threshold is not finite, beyond fp16, or upper < lower.
StatusOr<ChannelNorm> make_channel_norm(const float* upper, const float* lower, size_t n);
// From stored fp16 values (e.g. loaded from a calibration file).
ChannelNorm channel_norm_from_stored(const f16_t* zero, const f16_t* half_range, size_t n);

// x̂ for a vector with one NormParams (per token) or one per element (per channel).
void normalize_ref(const float* x, size_t n, NormParams p, float* out);
void normalize_channels_ref(const float* x, size_t n, const ChannelNorm& norm, float* out);

}  // namespace kvq
