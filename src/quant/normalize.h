// SPDX-License-Identifier: MIT
// Normalization to [-1, 1] from an upper and a lower threshold (KVQuant §3.1 / spec §1.1):
//   zero point z = (u + l) / 2, half-range h = (u - l) / 2, x̂ = (x - z) * (1/h), x' = h*c + z.
// z and h are stored as fp16 (paper App M: a 16-bit zero point and scale per vector) and both
// directions use the stored values. h = 0 (u == l) gives 1/h := 0, so x̂ = 0 and x' = z.
// Per channel (keys): thresholds calibrated offline, one ChannelNorm per layer.
// Per token (values): thresholds computed online (min/max, or the inlier range in outliers.h).
#pragma once

#include <cstddef>
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

NormParams norm_from_thresholds(float upper, float lower);
NormF norm_float(NormParams p);
// Online per-token thresholds without outliers: u = max, l = min (KVQuant "t = 1").
NormParams norm_from_minmax(const float* x, size_t n);

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
