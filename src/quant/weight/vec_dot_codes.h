// SPDX-License-Identifier: MIT
// The weight blocks' codes and scales as the vec_dot references and kernels read them
// (vec_dot.h): one definition for the scalar references (vec_dot_ref.cc) and the Highway
// kernels (vec_dot.cc).
#pragma once

#include <cstdint>
#include <cstring>

#include "quant/weight/vec_dot.h"

namespace kvq::vec_dot_detail {

// Exact int8 dot product of n values.
inline int32_t dot_i8_ref(const int8_t* a, const int8_t* b, int n) {
  int32_t s = 0;
  for (int j = 0; j < n; ++j) s += int32_t(a[j]) * int32_t(b[j]);
  return s;
}

// The references' float step per block.
inline float q8_0_block(float acc, f16_t dw, f16_t da, int32_t isum) {
  return acc + float(isum) * (f16_to_f32(dw) * f16_to_f32(da));
}
inline float q8_k_block(float acc, float dw_da, float dmin_da, int32_t sumi, int32_t summ) {
  return acc + dw_da * float(sumi) - dmin_da * float(summ);
}

// Q4_K and Q5_K: the weights' 8 sub-block scales and mins.
template <typename Block>
inline void k_scales(const Block& b, uint8_t sc[8], uint8_t m[8]) {
  for (int j = 0; j < 8; ++j) k_scale_min(j, b.scales, &sc[j], &m[j]);
}
// Q5_K: weight l of sub-block j (l < 32): nibble of qs[32 (j / 2) + l] (high for odd j) with bit
// j of qh[l] on top, 0..31.
inline int8_t q5_k_weight(const BlockQ5_K& b, int j, int l) {
  const uint8_t q = b.qs[32 * (j / 2) + l];
  return int8_t((j % 2 ? q >> 4 : q & 15) | (((b.qh[l] >> j) & 1) << 4));
}
inline int32_t q4_k_min_sum(const uint8_t m[8], const BlockQ8_K& a) {
  int32_t s = 0;
  for (int j = 0; j < 8; ++j) s += int32_t(m[j]) * (a.bsums[2 * j] + a.bsums[2 * j + 1]);
  return s;
}

// Q4_0, Q4_1, Q5_0, Q5_1: a block's 32 codes in weight order (the low nibbles, then the high
// ones), with bit j of qh on top of code j for the 5-bit types: 0..15 or 0..31. Q4_1 and Q5_1
// add a minimum m; Q4_0 and Q5_0 weigh code - kLegacyOffset (half the codes' range) instead.
template <class Block>
inline constexpr bool kLegacyMin = requires(const Block& b) { b.m; };
template <class Block>
inline constexpr int kLegacyOffset = kLegacyMin<Block> ? 0 : requires(const Block& b) { b.qh; } ? 16 : 8;
template <class Block>
inline void legacy_codes(const Block& b, uint8_t q[32]) {
  uint32_t qh = 0;
  if constexpr (requires { b.qh; }) std::memcpy(&qh, b.qh, 4);
  for (int j = 0; j < 16; ++j) {
    q[j] = uint8_t((b.qs[j] & 15) | (((qh >> j) & 1) << 4));
    q[j + 16] = uint8_t((b.qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
  }
}
inline int32_t code_sum(const int8_t* a) {
  int32_t s = 0;
  for (int j = 0; j < 32; ++j) s += a[j];
  return s;
}

// Q2_K and Q3_K: the block's 256 codes in weight order, 128h + 32p + l from bits 2p, 2p + 1 of
// qs[32h + l] (Q3_K: minus 4 unless bit 4h + p of hmask[l] is set).
inline void q2_k_codes(const BlockQ2_K& b, int8_t q[256]) {
  for (int i = 0; i < 256; ++i) q[i] = int8_t((b.qs[32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3);
}
inline void q3_k_codes(const BlockQ3_K& b, int8_t q[256]) {
  for (int i = 0; i < 256; ++i) {
    const int h = i / 128, p = (i % 128) / 32, l = i % 32;
    q[i] = int8_t(((b.qs[32 * h + l] >> (2 * p)) & 3) - ((b.hmask[l] >> (4 * h + p)) & 1 ? 0 : 4));
  }
}

// IQ4_XS: sub-block b's scale, ls - 32 (for_each_iq4_xs_sub_block's).
inline int iq4_xs_scale(const BlockIQ4_XS& x, int b) {
  return (((x.scales_l[b / 2] >> (4 * (b % 2))) & 0xF) | (((x.scales_h >> (2 * b)) & 3) << 4)) - 32;
}
// IQ4 nibbles: 16 bytes to 32 levels, the low nibbles first (the blocks' weight order).
inline void iq4_levels(const uint8_t* qs, int8_t* q) {
  for (int j = 0; j < 16; ++j) {
    q[j] = kIq4nlValues[qs[j] & 0xF];
    q[j + 16] = kIq4nlValues[qs[j] >> 4];
  }
}

}  // namespace kvq::vec_dot_detail
