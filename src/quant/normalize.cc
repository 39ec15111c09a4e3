// SPDX-License-Identifier: MIT
#include "quant/normalize.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace kvq {

NormParams norm_from_thresholds(float upper, float lower) {
  NormParams p;
  p.zero = f32_to_f16((upper + lower) * 0.5f + 0.0f);
  p.half_range = f32_to_f16((upper - lower) * 0.5f);
  return p;
}

NormF norm_float(NormParams p) {
  NormF f;
  f.zero = f16_to_f32(p.zero);
  f.half = f16_to_f32(p.half_range);
  f.inv = f.half > 0.0f ? 1.0f / f.half : 0.0f;
  return f;
}

NormParams norm8_decode(NormParams8 p) {
  const NormF f = norm8_float(p);
  return {f32_to_f16(f.zero), f32_to_f16(f.half)};
}

StatusOr<NormParams8> norm8_from_thresholds(float upper, float lower) {
  if (!std::isfinite(upper) || !std::isfinite(lower) || upper < lower) {
    return invalid_argument("8-bit norm: bad range [" + std::to_string(lower) + ", " + std::to_string(upper) + "]");
  }
  const float h0 = (upper - lower) * 0.5f, z0 = (upper + lower) * 0.5f;
  for (int c = 0; c < 256; ++c) {
    NormParams8 p;
    p.log_half = uint8_t(c);
    const NormF f = norm8_float(p);
    if (f.half < h0) continue;
    const float step = std::ldexp(1.0f, c / 16 + kNorm8MinExp - 5);
    p.zero = int8_t(std::clamp(std::lround(z0 / step), -127L, 127L));
    const NormF g = norm8_float(p);
    if (g.zero - g.half <= lower && g.zero + g.half >= upper) return p;
  }
  return invalid_argument("8-bit norm (norm=8): no 8-bit half-range and zero point cover the values' range [" +
                          std::to_string(lower) + ", " + std::to_string(upper) + "]; use norm=16");
}

NormParams norm_from_minmax(const float* x, size_t n) {
  if (n == 0) return NormParams{};
  float mn = x[0], mx = x[0];
  for (size_t i = 1; i < n; ++i) {
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
  }
  return norm_from_thresholds(mx, mn);
}

StatusOr<NormParams> row_norm_from_minmax(const float* x, size_t n, NormParams8* norm8) {
  if (!norm8) return norm_from_minmax(x, n);
  if (n == 0) return invalid_argument("row_norm_from_minmax: empty row");
  float mn = x[0], mx = x[0];
  for (size_t i = 1; i < n; ++i) {
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
  }
  KVQ_ASSIGN_OR_RETURN(*norm8, norm8_from_thresholds(mx, mn));
  return norm8_decode(*norm8);
}

ChannelNorm channel_norm_from_stored(const f16_t* zero, const f16_t* half_range, size_t n) {
  ChannelNorm c;
  c.zero.assign(zero, zero + n);
  c.half_range.assign(half_range, half_range + n);
  c.zero_f.resize(n);
  c.half_f.resize(n);
  c.inv_f.resize(n);
  c.upper.resize(n);
  c.lower.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const NormF f = norm_float(NormParams{zero[i], half_range[i]});
    c.zero_f[i] = f.zero;
    c.half_f[i] = f.half;
    c.inv_f[i] = f.inv;
    c.upper[i] = f.zero + f.half;
    c.lower[i] = f.zero - f.half;
  }
  return c;
}

StatusOr<ChannelNorm> make_channel_norm(const float* upper, const float* lower, size_t n) {
  KVQ_RETURN_IF_ERROR(check_finite(upper, n, "upper thresholds", true));
  KVQ_RETURN_IF_ERROR(check_finite(lower, n, "lower thresholds", true));
  std::vector<f16_t> z(n), h(n);
  for (size_t i = 0; i < n; ++i) {
    if (upper[i] < lower[i]) {
      return invalid_argument("channel " + std::to_string(i) + ": upper threshold below lower");
    }
    const NormParams p = norm_from_thresholds(upper[i], lower[i]);
    z[i] = p.zero;
    h[i] = p.half_range;
  }
  ChannelNorm c = channel_norm_from_stored(z.data(), h.data(), n);
  c.upper.assign(upper, upper + n);
  c.lower.assign(lower, lower + n);
  return c;
}

void normalize_ref(const float* x, size_t n, NormParams p, float* out) {
  const NormF f = norm_float(p);
  for (size_t i = 0; i < n; ++i) out[i] = (x[i] - f.zero) * f.inv;
}

void normalize_channels_ref(const float* x, size_t n, const ChannelNorm& norm, float* out) {
  for (size_t i = 0; i < n; ++i) out[i] = (x[i] - norm.zero_f[i]) * norm.inv_f[i];
}

}  // namespace kvq
