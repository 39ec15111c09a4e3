// SPDX-License-Identifier: MIT
// Constants shared by the ggml weight block formats (ggml-common.h): the K-quant super-block
// size, the 6-bit packed scale/min pairs of Q4_K and Q5_K, and the IQ4 non-linear codebook.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "base/fp16.h"

namespace kvq {

inline constexpr int kQK_K = 256;     // elements per K-quant super-block
inline constexpr int kKScaleSize = 12;  // bytes of Q4_K/Q5_K's eight 6-bit scales and mins

// Scale and min of sub-block j (0..7) from Q4_K/Q5_K's 12 packed bytes: j < 4 keep the low
// 6 bits of bytes j and j + 4; j >= 4 take a nibble of byte j + 4 and the top 2 bits of
// bytes j - 4 (scale) and j (min).
inline void k_scale_min(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = uint8_t((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// The inverse of k_scale_min: stores sub-block j's 6-bit scale ls and min lm. Sub-blocks
// 4..7 OR their top bits into bytes 0..7, so j < 4 must be stored first.
inline void put_k_scale_min(int j, uint8_t ls, uint8_t lm, uint8_t* q) {
  if (j < 4) {
    q[j] = ls;
    q[j + 4] = lm;
  } else {
    q[j + 4] = uint8_t((ls & 0xF) | ((lm & 0xF) << 4));
    q[j - 4] = uint8_t(q[j - 4] | ((ls >> 4) << 6));
    q[j] = uint8_t(q[j] | ((lm >> 4) << 6));
  }
}

// Quantizer helpers (ggml's reference quantizers).
// The smallest and largest of x[0, n).
inline void block_min_max(const float* x, int n, float* min, float* max) {
  *min = *max = x[0];
  for (int j = 1; j < n; ++j) {
    *min = x[j] < *min ? x[j] : *min;
    *max = x[j] > *max ? x[j] : *max;
  }
}
// The value of largest magnitude in x[0, n), signed; the first one on ties; 0 for all zeros.
inline float block_signed_absmax(const float* x, int n) {
  float amax = 0, max = 0;
  for (int j = 0; j < n; ++j) {
    const float a = x[j] < 0 ? -x[j] : x[j];
    if (amax < a) {
      amax = a;
      max = x[j];
    }
  }
  return max;
}
// Q5_0/Q5_1: element j's code q0 and element j + 16's code q1 into the low nibbles of qs[j] and
// the fifth bits j and j + 16 of qh.
inline void put_q5_codes(int j, int q0, int q1, uint8_t* qs, uint32_t* qh) {
  qs[j] = uint8_t((q0 & 0x0F) | ((q1 & 0x0F) << 4));
  *qh |= uint32_t((q0 & 0x10) >> 4) << j;
  *qh |= uint32_t((q1 & 0x10) >> 4) << (j + 16);
}

// Q4_K/Q5_K: calls fn(c, d1, m1, d2, m2) for the block's 4 chunks of 64 weights; the first 32
// weights of chunk c are x = d1 * q - m1, the next 32 x = d2 * q - m2 (sub-blocks 2c, 2c + 1).
template <typename Fn>
inline void for_each_k_chunk(f16_t d16, f16_t dmin16, const uint8_t* scales, Fn&& fn) {
  const float d = f16_to_f32(d16), dmin = f16_to_f32(dmin16);
  for (int c = 0; c < 4; ++c) {
    uint8_t sc, m;
    k_scale_min(2 * c, scales, &sc, &m);
    const float d1 = d * float(sc), m1 = dmin * float(m);
    k_scale_min(2 * c + 1, scales, &sc, &m);
    fn(c, d1, m1, d * float(sc), dmin * float(m));
  }
}

// IQ4_NL / IQ4_XS: a 4-bit index selects one of these 16 signed levels (ggml kvalues_iq4nl).
inline constexpr int8_t kIq4nlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                            1,    13,   25,  38,  53,  69,  89,  113};
// The same levels as floats, for SIMD lookups.
inline constexpr std::array<float, 16> kIq4nlLevels = [] {
  std::array<float, 16> a{};
  for (int i = 0; i < 16; ++i) a[std::size_t(i)] = float(kIq4nlValues[i]);
  return a;
}();

}  // namespace kvq
