// SPDX-License-Identifier: MIT
// vec_dot.h: scalar references and Highway kernels. Each block's weights are unpacked to int8
// (in registers, stored to a 32- or 256-byte stack buffer), then multiplied with the int8
// activations in int16 pairs summed to int32 (ReorderWidenMulAccumulate: pmaddwd on x86).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/weight/vec_dot.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/weight/vec_dot.h"

// Defined once, although foreach_target re-includes this file per target.
#ifndef KVQ_QUANT_WEIGHT_VEC_DOT_HELPERS_
#define KVQ_QUANT_WEIGHT_VEC_DOT_HELPERS_
namespace kvq {
namespace {

// The references' float step per block.
inline float q8_0_block(float acc, f16_t dw, f16_t da, int32_t isum) {
  return acc + float(isum) * (f16_to_f32(dw) * f16_to_f32(da));
}
inline float q8_k_block(float acc, float dw_da, float dmin_da, int32_t sumi, int32_t summ) {
  return acc + dw_da * float(sumi) - dmin_da * float(summ);
}

// Q4_K: the weights' 8 sub-block scales and mins.
inline void q4_k_scales(const BlockQ4_K& b, uint8_t sc[8], uint8_t m[8]) {
  for (int j = 0; j < 8; ++j) k_scale_min(j, b.scales, &sc[j], &m[j]);
}
inline int32_t q4_k_min_sum(const uint8_t m[8], const BlockQ8_K& a) {
  int32_t s = 0;
  for (int j = 0; j < 8; ++j) s += int32_t(m[j]) * (a.bsums[2 * j] + a.bsums[2 * j + 1]);
  return s;
}

}  // namespace
}  // namespace kvq
#endif  // KVQ_QUANT_WEIGHT_VEC_DOT_HELPERS_

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using D16 = hn::CappedTag<int16_t, 16>;
using D32 = hn::Repartition<int32_t, D16>;
using DB = hn::CappedTag<uint8_t, 16>;  // 16 bytes of packed weights

using DF = hn::Repartition<float, D32>;

// Products a[j] * b[j] over int8 summed in pairs into int32 lanes (exact; not yet reduced);
// n a multiple of 16.
HWY_INLINE hn::Vec<D32> DotI8Lanes(const int8_t* HWY_RESTRICT a, const int8_t* HWY_RESTRICT b, size_t n) {
  const D16 d16;
  const D32 d32;
  const hn::Rebind<int8_t, D16> d8;
  const size_t L = hn::Lanes(d16);
  auto s0 = hn::Zero(d32), s1 = hn::Zero(d32);
  for (size_t j = 0; j < n; j += L) {
    s0 = hn::ReorderWidenMulAccumulate(d32, hn::PromoteTo(d16, hn::LoadU(d8, a + j)),
                                       hn::PromoteTo(d16, hn::LoadU(d8, b + j)), s0, s1);
  }
  return hn::Add(s0, s1);
}

// acc += scale * float(lanes): the per-block float step, kept in vector lanes (one horizontal
// sum per row, as ggml's kernels do).
HWY_INLINE hn::Vec<DF> AccumulateBlock(hn::Vec<DF> acc, hn::Vec<D32> lanes, float scale) {
  return hn::MulAdd(hn::ConvertTo(DF(), lanes), hn::Set(DF(), scale), acc);
}

// 16 packed bytes to int8: low nibbles to lo[0, 16), high nibbles to hi[0, 16), minus bias.
HWY_INLINE void UnpackNibbles(const uint8_t* HWY_RESTRICT p, int bias, int8_t* lo, int8_t* hi) {
  const DB db;
  const hn::RebindToSigned<DB> di8;
  const size_t L = hn::Lanes(db);
  const auto vbias = hn::Set(di8, int8_t(bias));
  for (size_t j = 0; j < 16; j += L) {
    const auto b = hn::LoadU(db, p + j);
    hn::StoreU(hn::Sub(hn::BitCast(di8, hn::And(b, hn::Set(db, uint8_t(15)))), vbias), di8, lo + j);
    hn::StoreU(hn::Sub(hn::BitCast(di8, hn::ShiftRight<4>(b)), vbias), di8, hi + j);
  }
}

float VecDotQ8_0(const BlockQ8_0* HWY_RESTRICT w, const BlockQ8_0* HWY_RESTRICT a, int64_t n) {
  auto acc = hn::Zero(DF());
  for (int64_t b = 0; b < n / 32; ++b) {
    acc = AccumulateBlock(acc, DotI8Lanes(w[b].qs, a[b].qs, 32), f16_to_f32(w[b].d) * f16_to_f32(a[b].d));
  }
  return hn::GetLane(hn::SumOfLanes(DF(), acc));
}

float VecDotQ4_0(const BlockQ4_0* HWY_RESTRICT w, const BlockQ8_0* HWY_RESTRICT a, int64_t n) {
  auto acc = hn::Zero(DF());
  alignas(32) int8_t q[32];
  for (int64_t b = 0; b < n / 32; ++b) {
    UnpackNibbles(w[b].qs, 8, q, q + 16);
    acc = AccumulateBlock(acc, DotI8Lanes(q, a[b].qs, 32), f16_to_f32(w[b].d) * f16_to_f32(a[b].d));
  }
  return hn::GetLane(hn::SumOfLanes(DF(), acc));
}

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
// x86 with AVX2: the weights' nibbles stay unsigned bytes and multiply the int8 activations
// with pmaddubsw (u8 x i8, adjacent pairs summed to int16: at most 2 * 15 * 127, so it never
// saturates), then pmaddwd by the sub-block scale to int32: 32 weights per two instructions,
// in registers, where the portable version below widens to int16 through a stack buffer.
// Highway 1.0 has no u8 x i8 op, hence the intrinsics (Vec.raw). The integers are exact, so
// only the float lanes' summation order differs from the reference.
float VecDotQ4K(const BlockQ4_K* HWY_RESTRICT w, const BlockQ8_K* HWY_RESTRICT a, int64_t n) {
  const hn::Full256<float> df;
  const hn::Full256<uint8_t> du8;
  const __m256i low_mask = _mm256_set1_epi8(15);
  auto acc = hn::Zero(df);
  float mins = 0;
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    uint8_t sc[8], m[8];
    q4_k_scales(w[b], sc, m);
    __m256i sumi = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i bits = hn::LoadU(du8, w[b].qs + 32 * c).raw;
      const __m256i lo = _mm256_and_si256(bits, low_mask);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low_mask);
      const __m256i a_lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[b].qs + 64 * c));
      const __m256i a_hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[b].qs + 64 * c + 32));
      const __m256i p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, a_lo), _mm256_set1_epi16(int16_t(sc[2 * c])));
      const __m256i p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, a_hi), _mm256_set1_epi16(int16_t(sc[2 * c + 1])));
      sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p_lo, p_hi));
    }
    acc = hn::MulAdd(hn::ConvertTo(df, hn::Vec256<int32_t>{sumi}), hn::Set(df, f16_to_f32(w[b].d) * a[b].d), acc);
    mins += f16_to_f32(w[b].dmin) * a[b].d * float(q4_k_min_sum(m, a[b]));
  }
  return hn::GetLane(hn::SumOfLanes(df, acc)) - mins;
}
#else
float VecDotQ4K(const BlockQ4_K* HWY_RESTRICT w, const BlockQ8_K* HWY_RESTRICT a, int64_t n) {
  const D32 d32;
  auto acc = hn::Zero(DF());
  float mins = 0;
  alignas(64) int8_t q[kQK_K];
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    for (int c = 0; c < 4; ++c) {
      UnpackNibbles(w[b].qs + 32 * c, 0, q + 64 * c, q + 64 * c + 32);
      UnpackNibbles(w[b].qs + 32 * c + 16, 0, q + 64 * c + 16, q + 64 * c + 48);
    }
    uint8_t sc[8], m[8];
    q4_k_scales(w[b], sc, m);
    auto sumi = hn::Zero(d32);
    for (int j = 0; j < 8; ++j) sumi = hn::Add(sumi, hn::Mul(DotI8Lanes(q + 32 * j, a[b].qs + 32 * j, 32), hn::Set(d32, int32_t(sc[j]))));
    acc = AccumulateBlock(acc, sumi, f16_to_f32(w[b].d) * a[b].d);
    mins += f16_to_f32(w[b].dmin) * a[b].d * float(q4_k_min_sum(m, a[b]));
  }
  return hn::GetLane(hn::SumOfLanes(DF(), acc)) - mins;
}
#endif

float VecDotQ6K(const BlockQ6_K* HWY_RESTRICT w, const BlockQ8_K* HWY_RESTRICT a, int64_t n) {
  const DB db;
  const D32 d32;
  const hn::RebindToSigned<DB> di8;
  const size_t L = hn::Lanes(db);
  auto acc = hn::Zero(DF());
  alignas(64) int8_t q[kQK_K];
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    // Weight 128h + 32p + l: nibble of ql[64h + 32(p & 1) + l] (high for p >= 2) | top bits
    // 2p..2p+1 of qh[32h + l] << 4, minus 32.
    for (int h = 0; h < 2; ++h) {
      for (int p = 0; p < 4; ++p) {
        for (size_t l = 0; l < 32; l += L) {
          const auto low = hn::LoadU(db, w[b].ql + 64 * h + 32 * (p & 1) + l);
          const auto nib = p < 2 ? hn::And(low, hn::Set(db, uint8_t(15))) : hn::ShiftRight<4>(low);
          const auto top = hn::And(hn::ShiftRightSame(hn::LoadU(db, w[b].qh + 32 * h + l), 2 * p), hn::Set(db, uint8_t(3)));
          const auto v = hn::Or(nib, hn::ShiftLeft<4>(top));
          hn::StoreU(hn::Sub(hn::BitCast(di8, v), hn::Set(di8, int8_t(32))), di8, q + 128 * h + 32 * p + l);
        }
      }
    }
    auto sumi = hn::Zero(d32);
    for (int g = 0; g < 16; ++g) sumi = hn::Add(sumi, hn::Mul(DotI8Lanes(q + 16 * g, a[b].qs + 16 * g, 16), hn::Set(d32, int32_t(w[b].scales[g]))));
    acc = AccumulateBlock(acc, sumi, f16_to_f32(w[b].d) * a[b].d);
  }
  return hn::GetLane(hn::SumOfLanes(DF(), acc));
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq {

HWY_EXPORT(VecDotQ8_0);
HWY_EXPORT(VecDotQ4_0);
HWY_EXPORT(VecDotQ4K);
HWY_EXPORT(VecDotQ6K);

namespace {
int32_t dot_i8_ref(const int8_t* a, const int8_t* b, int n) {
  int32_t s = 0;
  for (int j = 0; j < n; ++j) s += int32_t(a[j]) * int32_t(b[j]);
  return s;
}
}  // namespace

float vec_dot_q8_0_q8_0_ref(const BlockQ8_0* w, const BlockQ8_0* a, int64_t n) {
  float acc = 0;
  for (int64_t b = 0; b < n / 32; ++b) acc = q8_0_block(acc, w[b].d, a[b].d, dot_i8_ref(w[b].qs, a[b].qs, 32));
  return acc;
}

float vec_dot_q4_0_q8_0_ref(const BlockQ4_0* w, const BlockQ8_0* a, int64_t n) {
  float acc = 0;
  for (int64_t b = 0; b < n / 32; ++b) {
    int8_t q[32];
    for (int j = 0; j < 16; ++j) {
      q[j] = int8_t((w[b].qs[j] & 15) - 8);
      q[j + 16] = int8_t((w[b].qs[j] >> 4) - 8);
    }
    acc = q8_0_block(acc, w[b].d, a[b].d, dot_i8_ref(q, a[b].qs, 32));
  }
  return acc;
}

float vec_dot_q4_k_q8_k_ref(const BlockQ4_K* w, const BlockQ8_K* a, int64_t n) {
  float acc = 0;
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    uint8_t sc[8], m[8];
    q4_k_scales(w[b], sc, m);
    int32_t sumi = 0;
    for (int j = 0; j < 8; ++j) {
      int8_t q[32];
      for (int l = 0; l < 32; ++l) q[l] = int8_t(j % 2 ? w[b].qs[32 * (j / 2) + l] >> 4 : w[b].qs[32 * (j / 2) + l] & 15);
      sumi += int32_t(sc[j]) * dot_i8_ref(q, a[b].qs + 32 * j, 32);
    }
    acc = q8_k_block(acc, f16_to_f32(w[b].d) * a[b].d, f16_to_f32(w[b].dmin) * a[b].d, sumi,
                     q4_k_min_sum(m, a[b]));
  }
  return acc;
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

float vec_dot_q8_0_q8_0(const BlockQ8_0* w, const BlockQ8_0* a, int64_t n, KernelPath path) {
  return path == KernelPath::kRef ? vec_dot_q8_0_q8_0_ref(w, a, n) : HWY_DYNAMIC_DISPATCH(VecDotQ8_0)(w, a, n);
}
float vec_dot_q4_0_q8_0(const BlockQ4_0* w, const BlockQ8_0* a, int64_t n, KernelPath path) {
  return path == KernelPath::kRef ? vec_dot_q4_0_q8_0_ref(w, a, n) : HWY_DYNAMIC_DISPATCH(VecDotQ4_0)(w, a, n);
}
float vec_dot_q4_k_q8_k(const BlockQ4_K* w, const BlockQ8_K* a, int64_t n, KernelPath path) {
  return path == KernelPath::kRef ? vec_dot_q4_k_q8_k_ref(w, a, n) : HWY_DYNAMIC_DISPATCH(VecDotQ4K)(w, a, n);
}
float vec_dot_q6_k_q8_k(const BlockQ6_K* w, const BlockQ8_K* a, int64_t n, KernelPath path) {
  return path == KernelPath::kRef ? vec_dot_q6_k_q8_k_ref(w, a, n) : HWY_DYNAMIC_DISPATCH(VecDotQ6K)(w, a, n);
}

}  // namespace kvq
#endif  // HWY_ONCE
