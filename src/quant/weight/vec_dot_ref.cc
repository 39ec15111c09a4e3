// SPDX-License-Identifier: MIT
// vec_dot.h's scalar references: each block's exact integer sum (per sub-block times its scale
// for the K-quants and IQ4_XS), then one float step per block, the blocks in order. They are
// the specification the Highway kernels (vec_dot.cc) are tested against.
#include <cstdint>

#include "quant/weight/vec_dot.h"
#include "quant/weight/vec_dot_codes.h"

namespace kvq {

using namespace vec_dot_detail;  // the blocks' codes and scales (vec_dot_codes.h)

float vec_dot_q8_0_q8_0_ref(const BlockQ8_0* w, const BlockQ8_0* a, int64_t n) {
  float acc = 0;
  for (int64_t b = 0; b < n / 32; ++b) acc = q8_0_block(acc, w[b].d, a[b].d, dot_i8_ref(w[b].qs, a[b].qs, 32));
  return acc;
}

namespace {
template <class Block>
float legacy_row_ref(const Block* w, const BlockQ8_0* a, int64_t n) {
  float acc = 0;
  for (int64_t b = 0; b < n / 32; ++b) {
    uint8_t q[32];
    legacy_codes(w[b], q);
    int8_t qi[32];
    for (int j = 0; j < 32; ++j) qi[j] = int8_t(q[j] - kLegacyOffset<Block>);
    acc = q8_0_block(acc, w[b].d, a[b].d, dot_i8_ref(qi, a[b].qs, 32));
    if constexpr (kLegacyMin<Block>) acc += float(code_sum(a[b].qs)) * (f16_to_f32(w[b].m) * f16_to_f32(a[b].d));
  }
  return acc;
}
}  // namespace

float vec_dot_q4_0_q8_0_ref(const BlockQ4_0* w, const BlockQ8_0* a, int64_t n) { return legacy_row_ref(w, a, n); }
float vec_dot_q4_1_q8_0_ref(const BlockQ4_1* w, const BlockQ8_0* a, int64_t n) { return legacy_row_ref(w, a, n); }
float vec_dot_q5_0_q8_0_ref(const BlockQ5_0* w, const BlockQ8_0* a, int64_t n) { return legacy_row_ref(w, a, n); }
float vec_dot_q5_1_q8_0_ref(const BlockQ5_1* w, const BlockQ8_0* a, int64_t n) { return legacy_row_ref(w, a, n); }

float vec_dot_iq4_nl_q8_0_ref(const BlockIQ4_NL* w, const BlockQ8_0* a, int64_t n) {
  float acc = 0;
  for (int64_t b = 0; b < n / 32; ++b) {
    int8_t q[32];
    iq4_levels(w[b].qs, q);
    acc = q8_0_block(acc, w[b].d, a[b].d, dot_i8_ref(q, a[b].qs, 32));
  }
  return acc;
}

float vec_dot_iq4_xs_q8_k_ref(const BlockIQ4_XS* w, const BlockQ8_K* a, int64_t n) {
  float acc = 0;
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    int32_t sumi = 0;
    for (int j = 0; j < 8; ++j) {
      int8_t q[32];
      iq4_levels(w[b].qs + 16 * j, q);
      sumi += iq4_xs_scale(w[b], j) * dot_i8_ref(q, a[b].qs + 32 * j, 32);
    }
    acc = q8_k_block(acc, f16_to_f32(w[b].d) * a[b].d, 0.0f, sumi, 0);
  }
  return acc;
}

namespace {
// Q4_K and Q5_K: 8 sub-blocks of 32 with 6-bit scales and minimums; kWeight(block, j, l) is
// weight l of sub-block j.
template <class Block, int8_t (*kWeight)(const Block&, int, int)>
float k_scale_min_row_ref(const Block* w, const BlockQ8_K* a, int64_t n) {
  float acc = 0;
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    uint8_t sc[8], m[8];
    k_scales(w[b], sc, m);
    int32_t sumi = 0;
    for (int j = 0; j < 8; ++j) {
      int8_t q[32];
      for (int l = 0; l < 32; ++l) q[l] = kWeight(w[b], j, l);
      sumi += int32_t(sc[j]) * dot_i8_ref(q, a[b].qs + 32 * j, 32);
    }
    acc = q8_k_block(acc, f16_to_f32(w[b].d) * a[b].d, f16_to_f32(w[b].dmin) * a[b].d, sumi,
                     q4_k_min_sum(m, a[b]));
  }
  return acc;
}
int8_t q4_k_weight(const BlockQ4_K& b, int j, int l) {
  const uint8_t q = b.qs[32 * (j / 2) + l];
  return int8_t(j % 2 ? q >> 4 : q & 15);
}
}  // namespace

float vec_dot_q4_k_q8_k_ref(const BlockQ4_K* w, const BlockQ8_K* a, int64_t n) {
  return k_scale_min_row_ref<BlockQ4_K, q4_k_weight>(w, a, n);
}

float vec_dot_q2_k_q8_k_ref(const BlockQ2_K* w, const BlockQ8_K* a, int64_t n) {
  float acc = 0;
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    int8_t q[kQK_K];
    q2_k_codes(w[b], q);
    int32_t sumi = 0, summ = 0;
    for (int g = 0; g < 16; ++g) {
      sumi += int32_t(w[b].scales[g] & 15) * dot_i8_ref(q + 16 * g, a[b].qs + 16 * g, 16);
      summ += int32_t(w[b].scales[g] >> 4) * a[b].bsums[g];
    }
    acc = q8_k_block(acc, f16_to_f32(w[b].d) * a[b].d, f16_to_f32(w[b].dmin) * a[b].d, sumi, summ);
  }
  return acc;
}

float vec_dot_q3_k_q8_k_ref(const BlockQ3_K* w, const BlockQ8_K* a, int64_t n) {
  float acc = 0;
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    int8_t q[kQK_K], sc[16];
    q3_k_codes(w[b], q);
    unpack_q3_k_scales(w[b].scales, sc);
    int32_t sumi = 0;
    for (int g = 0; g < 16; ++g) sumi += int32_t(sc[g]) * dot_i8_ref(q + 16 * g, a[b].qs + 16 * g, 16);
    acc = q8_k_block(acc, f16_to_f32(w[b].d) * a[b].d, 0.0f, sumi, 0);
  }
  return acc;
}

float vec_dot_q5_k_q8_k_ref(const BlockQ5_K* w, const BlockQ8_K* a, int64_t n) {
  return k_scale_min_row_ref<BlockQ5_K, q5_k_weight>(w, a, n);
}

float vec_dot_q6_k_q8_k_ref(const BlockQ6_K* w, const BlockQ8_K* a, int64_t n) {
  float acc = 0;
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    int32_t sumi = 0;
    for_each_q6_k_group(w[b], [&](int g, const uint8_t* ql, bool high, const uint8_t* qh, int shift, float) {
      int8_t q[16];
      for (int l = 0; l < 16; ++l) q[l] = int8_t(((high ? ql[l] >> 4 : ql[l] & 15) | (((qh[l] >> shift) & 3) << 4)) - 32);
      sumi += int32_t(w[b].scales[g]) * dot_i8_ref(q, a[b].qs + 16 * g, 16);
    });
    acc = q8_k_block(acc, f16_to_f32(w[b].d) * a[b].d, 0.0f, sumi, 0);
  }
  return acc;
}

}  // namespace kvq
