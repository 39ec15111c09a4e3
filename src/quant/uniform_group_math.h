// SPDX-License-Identifier: MIT
// Scalar per-group math of uniform_group.h, shared verbatim by the reference and the Highway
// path so both round identically (internal header).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "base/fp16.h"

namespace kvq::detail {

// The float quantities one group is quantized with: code = clamp(rint((x - z) * inv), lo, hi)
// + off and x' = (code - off) * s + z.
struct UniformGroupQ {
  float s, z, inv, lo, hi, off;
};

// From the group's min and max: writes the fp16 scale (and zero when asymmetric) and returns
// the rounded values both directions use. "+ 0.0f" maps -0 to +0 so that min/max order (SIMD
// vs scalar) cannot change a stored sign bit.
inline UniformGroupQ uniform_group_q(int bits, bool symmetric, float mn, float mx, f16_t* scale,
                                     f16_t* zero) {
  UniformGroupQ g{};
  if (symmetric) {
    const float m = float((1 << (bits - 1)) - 1);
    const float amax = std::max(-mn, mx) + 0.0f;
    *scale = f32_to_f16(amax / m);
    g.s = f16_to_f32(*scale);
    g.z = 0.0f;
    g.lo = -m;
    g.hi = m;
    g.off = float(1 << (bits - 1));
  } else {
    const float qmax = float((1 << bits) - 1);
    *zero = f32_to_f16(mn + 0.0f);
    *scale = f32_to_f16((mx - mn) / qmax);
    g.s = f16_to_f32(*scale);
    g.z = f16_to_f32(*zero);
    g.lo = 0.0f;
    g.hi = qmax;
    g.off = 0.0f;
  }
  g.inv = g.s > 0.0f ? 1.0f / g.s : 0.0f;
  return g;
}

// Same quantities from stored fp16 scale/zero (the read path).
inline UniformGroupQ uniform_group_q_stored(int bits, bool symmetric, f16_t scale, f16_t zero) {
  UniformGroupQ g{};
  g.s = f16_to_f32(scale);
  g.z = symmetric ? 0.0f : f16_to_f32(zero);
  g.off = symmetric ? float(1 << (bits - 1)) : 0.0f;
  return g;
}

inline uint8_t uniform_code(float x, const UniformGroupQ& g) {
  float r = std::nearbyint((x - g.z) * g.inv);
  r = std::min(std::max(r, g.lo), g.hi);
  return uint8_t(int(r + g.off));
}

inline float uniform_value(uint32_t code, const UniformGroupQ& g) {
  return (float(code) - g.off) * g.s + g.z;
}

}  // namespace kvq::detail
