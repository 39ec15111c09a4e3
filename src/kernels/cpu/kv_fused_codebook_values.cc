// SPDX-License-Identifier: MIT
// Fused value kernels for KVQuant codebook rows (kvquant.md, values per token): 2-bit rows
// accumulate in integers, weights p half rounded to uint8 and levels to int8 steps, as
// ref::codebook_row_accumulate_ref specifies (the rounding is part of the format's
// specification, as KIVI-2's is); 3- and 4-bit rows in floats,
//   out += (p half) level[code] + p zero,  then  out[i] += p c_i per outlier (c_i = x_i - dense_i, stored),
// within float reassociation of ref::decode_run_ref then axpy (tested against attention over
// read()).
#ifndef HWY_WANT_AVX3_DL
#define HWY_WANT_AVX3_DL  // this file and kv_fused_ggml.cc: VNNI's byte dot products
#endif
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/kv_fused_codebook_values.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/cpu/kv_fused-inl.h"
#include "kernels/cpu/kv_fused_parts.h"
#include "kernels/cpu/kv_outliers-inl.h"
#include "quant/codebook-inl.h"
#ifndef KVQ_KERNELS_KV_FUSED_CODEBOOK_VALUES_ONCE
#define KVQ_KERNELS_KV_FUSED_CODEBOOK_VALUES_ONCE
#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "quant/normalize.h"
#endif

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

// Values: out_i[c] += p_it (x - dense) for queries [0, kQ) (p and out ldp and head_dim apart),
// as fma(p_it, x - dense, out_i[c]) on every path; a pass of two or four queries in the lanes
// of one vector, as the keys' corrections (kv_fused_codebook.cc).
template <int kQ>
HWY_NOINLINE void ValueOutlierCorrections(const KvRun& r, const float* HWY_RESTRICT p, size_t ldp,
                                          float* HWY_RESTRICT out) {
  const size_t hd = size_t(r.head_dim);
  if constexpr (kQ >= 2 && kOutliersInLanes) {
    if (size_t(r.n) <= kLaneTokens && hd <= kLaneHeadDim) {
      // The weights and the outputs in lanes: pt[t][i] = p_it, ot[c][i] = out_i[c].
      const hn::CappedTag<float, kQ> dq;
      HWY_ALIGN float pt[kLaneTokens * kQ], ot[kLaneHeadDim * kQ];
      RowsToLanes<kQ>(p, ldp, size_t(r.n), pt);
      RowsToLanes<kQ>(out, hd, hd, ot);
      ForRunOutliers(r, nullptr, [&](int t, size_t c, float corr) {
        float* o = ot + c * kQ;
        hn::Store(hn::MulAdd(hn::Load(dq, pt + size_t(t) * kQ), hn::Set(dq, corr), hn::Load(dq, o)), dq, o);
      });
      LanesToRows<kQ>(ot, hd, out, hd);
      return;
    }
  }
  const auto add = [=](int t, size_t c, float corr) {
    for (int i = 0; i < kQ; ++i) {
      float& o = out[size_t(i) * hd + c];
      o = std::fma(p[size_t(i) * ldp + size_t(t)], corr, o);
    }
  };
#if HWY_TARGET == HWY_AVX2
  const auto vec8 = [&](__m256i t, __m256i c, __m256 v) {
    HWY_ALIGN float pt[kQ][8], vv[8];
    HWY_ALIGN int32_t cc[8];
    for (int i = 0; i < kQ; ++i) _mm256_store_ps(pt[i], _mm256_i32gather_ps(p + size_t(i) * ldp, t, 4));
    _mm256_store_ps(vv, v);
    _mm256_store_si256(reinterpret_cast<__m256i*>(cc), c);
    for (int l = 0; l < 8; ++l) {
      for (int i = 0; i < kQ; ++i) {
        float& o = out[size_t(i) * hd + size_t(cc[l])];
        o = std::fma(pt[i][l], vv[l], o);
      }
    }
  };
#else
  const auto vec8 = nullptr;
#endif
  ForRunOutliers(r, vec8, add);
}

// o[0, n) += z: a run's zero points' sum, added after its outliers on every path.
HWY_INLINE void AddToRow(float* HWY_RESTRICT o, size_t n, float z) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const auto zv = hn::Set(df, z);
  size_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::Add(hn::LoadU(df, o + i), zv), df, o + i);
  for (; i < n; ++i) o[i] += z;
}

// The weights of a KVQuant value run (<= 64 tokens) for kQ queries (p: the first query's
// probabilities, queries ldp apart): a[i][t] = p_it half_t, and zsum[i] = sum_t p_it zero_t,
// both taken as 0 where p_it is 0 whatever the norm; a is written up to the next multiple of N
// tokens. Vectors of tokens where the norms are fp16 pairs at a stride of whole words (one
// gather per N tokens), else gathered one token at a time; the zero points' sums in lanes by
// token (t mod N), then across the lanes.
template <int kQ>
HWY_INLINE void RowWeights(const KvRun& r, const float* HWY_RESTRICT p, size_t ldp, float (&a)[kQ][64],
                           float (&zsum)[kQ]) {
  const DF df;
  const DI di;
  constexpr size_t N = hn::MaxLanes(DF());
  static_assert(64 % N == 0);
  hn::Vec<DF> zacc[kQ];
  for (auto& z : zacc) z = hn::Zero(df);
  // Tokens [t, t + N) with their zero points, half-ranges and the queries' probabilities.
  auto step = [&](size_t t, hn::Vec<DF> zero, hn::Vec<DF> half, const float* pt, size_t ldpt) {
    for (int i = 0; i < kQ; ++i) {
      const auto pv = hn::LoadU(df, pt + size_t(i) * ldpt);
      const auto live = hn::Ne(pv, hn::Zero(df));
      hn::StoreU(hn::IfThenElseZero(live, hn::Mul(pv, half)), df, a[i] + t);
      zacc[i] = hn::Add(zacc[i], hn::IfThenElseZero(live, hn::Mul(pv, zero)));
    }
  };
  size_t t = 0;
  if (!r.norm8 && r.meta_stride % 4 == 0) {
    const hn::Rebind<uint16_t, DI> du16;
    const hn::Rebind<hwy::float16_t, DF> dh;
    const size_t words = r.meta_stride / 4;
    const auto* norms = reinterpret_cast<const int32_t*>(r.rows + r.norm_off);  // NormParams: zero, half
    const auto at = hn::Mul(hn::Iota(di, 0), hn::Set(di, int32_t(words)));
    for (; t + N <= size_t(r.n); t += N) {
      const auto w = hn::GatherIndex(di, norms + t * words, at);
      const auto high = hn::BitCast(di, hn::ShiftRight<16>(hn::BitCast(DU(), w)));  // logical: [0, 0xFFFF]
      step(t, hn::PromoteTo(df, hn::BitCast(dh, hn::DemoteTo(du16, hn::And(w, hn::Set(di, 0xFFFF))))),
           hn::PromoteTo(df, hn::BitCast(dh, hn::DemoteTo(du16, high))), p + t, ldp);
    }
  }
  // The rest N at a time from scalars, zero-padded: each token in the lane it would have had
  // (t mod N) and +0 added where none is, as a prefill's masked tokens add, so that a query's
  // sums are the same whatever the run's length.
  for (; t < size_t(r.n); t += N) {
    HWY_ALIGN float zero[N] = {}, half[N] = {}, pt[kQ][N] = {};
    for (size_t k = 0; k < N && t + k < size_t(r.n); ++k) {
      const NormF f = RunNorm(r, int(t + k));
      zero[k] = f.zero;
      half[k] = f.half;
      for (int i = 0; i < kQ; ++i) pt[i][k] = p[size_t(i) * ldp + t + k];
    }
    step(t, hn::Load(df, zero), hn::Load(df, half), pt[0], N);
  }
  for (int i = 0; i < kQ; ++i) zsum[i] = hn::GetLane(hn::SumOfLanes(df, zacc[i]));
}

// KVQuant values of 3 and 4 bits: out_i += sum_t (p_it half_t) level[code_t] + sum_t p_it
// zero_t; sparse outliers then correct their dense value. A row's codes are looked up in the levels once
// (lane permutes) for every query of a pass (a GQA group) and each query's weight
// a_it = p_it half_t multiplies them in one FMA; the channels go in passes whose sums stay in
// registers while the run's tokens stream by. A query's sums are the same chains whatever the
// pass size (prefill and decode agree). Rows of a length the packing splits unevenly: a 2^bits
// table scaled per token feeds the codebook axpy, query by query.
// kHd: as CodebookPcRopeScores's.
template <int kBits, int kHd>
void CodebookRowAccumulate(const KvRun& r, const float* HWY_RESTRICT p, int n_q, size_t ldp, float* HWY_RESTRICT out) {
  const DF df;
  const size_t N = hn::Lanes(df), hd = kHd > 0 ? size_t(kHd) : size_t(r.head_dim);
  if (!(r.n <= 64 && hd % kChunk == 0)) {
    HWY_ALIGN float alut[16] = {};
    for (int q = 0; q < n_q; ++q) {
      const float* pi = p + size_t(q) * ldp;
      float* oi = out + size_t(q) * hd;
      float zsum = 0.0f;
      for (int t = 0; t < r.n; ++t) {
        if (pi[t] == 0.0f) continue;
        const NormF f = RunNorm(r, t);
        const float a = pi[t] * f.half;
        for (int j = 0; j < (1 << kBits); ++j) alut[j] = r.levels[j] * a;
        zsum += pi[t] * f.zero;
        AxpyRowT<kBits>(r.rows + size_t(t) * r.stride, hd, alut, oi);
      }
      if (r.out_ptr) ValueOutlierCorrections<1>(r, pi, ldp, oi);
      AddToRow(oi, hd, zsum);
    }
    return;
  }
  const LevelLut<kBits> lut(r.levels);
  const size_t row_bytes = packed_bytes(kBits, hd);
  ForQueryPasses<kMaxQ>(n_q, [&](auto kq, int i0) {
    constexpr int kQ = decltype(kq)::value;
    // Channels per pass: kQ * kV sums, kQ weights and the looked-up levels fit the registers.
    constexpr size_t kV = kQ >= 4 ? 2 : kQ == 2 ? 4 : 8;
    float a[kQ][64], zsum[kQ];
    RowWeights<kQ>(r, p + size_t(i0) * ldp, ldp, a, zsum);
    auto pass = [&](auto kv, size_t c0) {
      constexpr size_t kNv = decltype(kv)::value;
      hn::Vec<DF> acc[kQ][kNv];
      for (auto& x : acc) {
        for (auto& v : x) v = hn::Zero(df);
      }
      for (int t = 0; t < r.n; ++t) {
        hn::Vec<DF> w[kQ];
        for (int i = 0; i < kQ; ++i) w[i] = hn::Set(df, a[i][t]);
        const uint8_t* row = r.rows + size_t(t) * r.stride;
        for (size_t v = 0; v < kNv; ++v) {
          const size_t c = c0 + v * N;
          const auto lv = lut.at(row, c, row_bytes);
          for (int i = 0; i < kQ; ++i) acc[i][v] = hn::MulAdd(w[i], lv, acc[i][v]);
        }
      }
      for (int i = 0; i < kQ; ++i) {
        float* o = out + size_t(i0 + i) * hd + c0;
        for (size_t v = 0; v < kNv; ++v) hn::StoreU(hn::Add(hn::LoadU(df, o + v * N), acc[i][v]), df, o + v * N);
      }
    };
    size_t c0 = 0;
#pragma GCC unroll 8
    for (; c0 + kV * N <= hd; c0 += kV * N) pass(std::integral_constant<size_t, kV>(), c0);
    for (; c0 < hd; c0 += N) pass(std::integral_constant<size_t, 1>(), c0);
    // Outliers in a pass of their own, so that the row loops keep their registers.
    if (r.out_ptr) ValueOutlierCorrections<kQ>(r, p + size_t(i0) * ldp, ldp, out + size_t(i0) * hd);
    for (int i = 0; i < kQ; ++i) AddToRow(out + size_t(i0 + i) * hd, hd, zsum[i]);
  });
}

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
// Queries per pass of the integer kernel: its 16 int32 sums per query and slice (below) fit
// AVX-512's 32 registers four times, AVX2's 16 twice.
constexpr int kI8Q = HWY_TARGET <= HWY_AVX3 ? 4 : 2;

// 2-bit KVQuant values in integers (specification: ref::codebook_row_accumulate_ref): the run's
// weights a_t = p_t half_t rounded to uint8 with one scale d per run and query, its four levels
// to int8 steps lambda, then out_c += (d lambda) sum_t w8_t Lq[code_tc]. Four tokens' code bytes
// of one byte position are gathered into an int32 lane (punpcklbw of rows t, t + 1 and t + 2,
// t + 3, then punpcklwd): a byte's low nibble holds the codes of channels 4b and 4b + 1, its high
// nibble those of 4b + 2 and 4b + 3, so two pshufb tables (Lq[n & 3], Lq[n >> 2]) give each
// class's levels as signed bytes, and pmaddubsw + pmaddwd (AVX3_DL: vpdpbusd) multiplies them by
// the four tokens' weights and sums them into the lane, exactly (2 * 255 * kLevelSteps fits
// int16). ~21 instructions per 128-value token against ~80 for the float kernel's lookups and
// FMAs; the levels are looked up once for every query of a pass. Measured, the kernel takes
// 35-40% less time than the float one (the per-run weights and transposes are the rest;
// docs/PERFORMANCE.md, "2-bit KVQuant values in integers"). head_dim 64 (16-byte rows): the two
// 128-bit halves hold tokens t..t+3 and t+4..t+7, summed at the end. The int32 sums of byte
// positions come back to channels 4b + k in a 4 x 4 transpose per 128-bit lane.
template <int kQ, int kHd>
HWY_INLINE void CodebookRowAccumulateI8(const KvRun& r, const float* HWY_RESTRICT p, size_t ldp,
                                        float* HWY_RESTRICT out) {
  static_assert(kHd == 64 || kHd == 128);
  constexpr bool kHalf = kHd == 64;
  // AVX-512 with head_dim 128: tokens t..t+3 in the low 256 bits, t+4..t+7 in the high, the
  // halves' integer sums added at the end (the same sums: the same results); kvquant-2's
  // attention in cache 3-5% less time, its value kernel being ~16% of it (docs/PERFORMANCE.md,
  // "Integer kernels in 512-bit vectors").
  constexpr bool kWide = !kHalf && HWY_TARGET <= HWY_AVX3;
  constexpr int kTok = kHalf || kWide ? 8 : 4, kRowBytes = kHd / 4;
  // Byte positions X (4 of them, each an int32 lane of 4 tokens per byte) per slice: 4 kQ kXs
  // sums in registers.
  constexpr int kXs = std::max(1, (HWY_TARGET <= HWY_AVX3 ? 4 : 2) / kQ);
  static_assert(4 % kXs == 0);
  const DF df;
  const size_t N = hn::Lanes(df);
  float a[kQ][64], zsum[kQ];
  RowWeights<kQ>(r, p, ldp, a, zsum);
  // The levels in int8 steps (the store's, computed once per codebook) and the pshufb tables of
  // a nibble n: T0[n] = Lq[n & 3] (the four bytes repeated), T1[n] = Lq[n >> 2].
  const float lambda = r.level_step;
  int32_t l4;
  std::memcpy(&l4, r.levels_q, 4);
  const __m256i T0 = _mm256_set1_epi32(l4);
  const __m256i T1 = _mm256_shuffle_epi8(T0, _mm256_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 0, 0, 0, 0, 1,
                                                              1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3));
  // Tokens padded to whole steps: their weights are 0 (RowWeights writes a to a multiple of N).
  const int nt = (r.n + kTok - 1) / kTok * kTok, n_full = r.n / kTok * kTok;
  alignas(16) uint8_t wb[kQ][64];
  float dl[kQ];
  for (int i = 0; i < kQ; ++i) {
    auto mx = hn::Zero(df), chk = hn::Zero(df);
    for (size_t t = 0; t < size_t(r.n); t += N) {
      const auto v = hn::LoadU(df, a[i] + t);
      mx = hn::Max(mx, v);
      chk = hn::Add(chk, hn::Sub(v, v));  // 0 unless a weight is not finite
    }
    const float wm = hn::GetLane(hn::MaxOfLanes(df, mx));
    const bool finite = hn::AllTrue(df, hn::Eq(chk, hn::Zero(df)));
    const bool kept = finite && wm >= kRoundedMaxFloor;  // else every w8 zero
    dl[i] = (!finite ? NAN : kept ? wm / 255.0f : 0.0f) * lambda;
    const __m128 id = _mm_set1_ps(kept ? 255.0f / wm : 0.0f);
    for (int t = 0; t < nt; t += 4) {  // clamped to [0, 255] by the saturating packs
      const __m128i x = _mm_cvtps_epi32(_mm_mul_ps(_mm_loadu_ps(a[i] + t), id));
      const int32_t w4 = _mm_cvtsi128_si32(_mm_packus_epi16(_mm_packs_epi32(x, x), x));
      std::memcpy(wb[i] + t, &w4, 4);
    }
  }
  const __m256i m0f = _mm256_set1_epi8(0x0F);
#if HWY_TARGET != HWY_AVX3_DL
  const __m256i ones = _mm256_set1_epi16(1);  // pmaddwd's pair sums (VNNI needs none)
#endif
  // The last partial step's rows, zero-padded (no read past the run).
  alignas(32) uint8_t tail[kTok][kRowBytes] = {};
  for (int t = n_full; t < r.n; ++t) std::memcpy(tail[t - n_full], r.rows + size_t(t) * r.stride, kRowBytes);
  for (int x0 = 0; x0 < 4; x0 += kXs) {
    __m256i acc[kQ][kXs][4];
    for (auto& q : acc) for (auto& x : q) for (auto& v : x) v = _mm256_setzero_si256();
    auto step = [&](int t, const uint8_t* rows, size_t stride) {
      __m256i R[4];
      for (int k = 0; k < 4; ++k) {
        if constexpr (kHalf) {
          R[k] = _mm256_inserti128_si256(
              _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows + size_t(k) * stride))),
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows + size_t(k + 4) * stride)), 1);
        } else {
          R[k] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows + size_t(k) * stride));
        }
      }
      __m256i W[kQ];
      for (int i = 0; i < kQ; ++i) {
        int32_t lo, hi;
        std::memcpy(&lo, wb[i] + t, 4);
        if constexpr (kHalf) {
          std::memcpy(&hi, wb[i] + t + 4, 4);
        } else {
          hi = lo;
        }
        W[i] = _mm256_setr_epi32(lo, lo, lo, lo, hi, hi, hi, hi);
      }
      for (int xs = 0; xs < kXs; ++xs) {
        const int x = x0 + xs;  // byte positions 4x..4x+3 of each 16
        const __m256i u0 = x < 2 ? _mm256_unpacklo_epi8(R[0], R[1]) : _mm256_unpackhi_epi8(R[0], R[1]);
        const __m256i u1 = x < 2 ? _mm256_unpacklo_epi8(R[2], R[3]) : _mm256_unpackhi_epi8(R[2], R[3]);
        const __m256i X = (x & 1) ? _mm256_unpackhi_epi16(u0, u1) : _mm256_unpacklo_epi16(u0, u1);
        const __m256i lo = _mm256_and_si256(X, m0f), hi = _mm256_and_si256(_mm256_srli_epi16(X, 4), m0f);
        const __m256i lev[4] = {_mm256_shuffle_epi8(T0, lo), _mm256_shuffle_epi8(T1, lo), _mm256_shuffle_epi8(T0, hi),
                                _mm256_shuffle_epi8(T1, hi)};
        for (int i = 0; i < kQ; ++i) {
          for (int k = 0; k < 4; ++k) {
#if HWY_TARGET == HWY_AVX3_DL
            DotBytesAdd(&acc[i][xs][k], W[i], lev[k]);
#else
            acc[i][xs][k] = _mm256_add_epi32(acc[i][xs][k], _mm256_madd_epi16(_mm256_maddubs_epi16(W[i], lev[k]), ones));
#endif
          }
        }
      }
    };
#if HWY_TARGET <= HWY_AVX3
    if constexpr (kWide) {
      const __m512i T05 = _mm512_broadcast_i64x4(T0), T15 = _mm512_broadcast_i64x4(T1);
      const __m512i m0f5 = _mm512_set1_epi8(0x0F);
#if HWY_TARGET != HWY_AVX3_DL
      const __m512i ones5 = _mm512_set1_epi16(1);
#endif
      __m512i acc5[kQ][kXs][4];
      for (auto& q : acc5) for (auto& x : q) for (auto& v : x) v = _mm512_setzero_si512();
      auto step5 = [&](int t, const uint8_t* rows, size_t stride) {  // step's, rows t + k and t + 4 + k
        __m512i R[4];
        for (int k = 0; k < 4; ++k) {
          R[k] = _mm512_inserti64x4(
              _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows + size_t(k) * stride))),
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows + size_t(k + 4) * stride)), 1);
        }
        __m512i W[kQ];
        for (int i = 0; i < kQ; ++i) {
          int32_t lo, hi;
          std::memcpy(&lo, wb[i] + t, 4);
          std::memcpy(&hi, wb[i] + t + 4, 4);
          W[i] = _mm512_inserti64x4(_mm512_set1_epi32(lo), _mm256_set1_epi32(hi), 1);
        }
        for (int xs = 0; xs < kXs; ++xs) {
          const int x = x0 + xs;
          const __m512i u0 = x < 2 ? _mm512_unpacklo_epi8(R[0], R[1]) : _mm512_unpackhi_epi8(R[0], R[1]);
          const __m512i u1 = x < 2 ? _mm512_unpacklo_epi8(R[2], R[3]) : _mm512_unpackhi_epi8(R[2], R[3]);
          const __m512i X = (x & 1) ? _mm512_unpackhi_epi16(u0, u1) : _mm512_unpacklo_epi16(u0, u1);
          const __m512i lo = _mm512_and_si512(X, m0f5), hi = _mm512_and_si512(_mm512_srli_epi16(X, 4), m0f5);
          const __m512i lev[4] = {_mm512_shuffle_epi8(T05, lo), _mm512_shuffle_epi8(T15, lo),
                                  _mm512_shuffle_epi8(T05, hi), _mm512_shuffle_epi8(T15, hi)};
          for (int i = 0; i < kQ; ++i) {
            for (int k = 0; k < 4; ++k) {
#if HWY_TARGET == HWY_AVX3_DL
              DotBytesAdd(&acc5[i][xs][k], W[i], lev[k]);
#else
              acc5[i][xs][k] = _mm512_add_epi32(acc5[i][xs][k], _mm512_madd_epi16(_mm512_maddubs_epi16(W[i], lev[k]), ones5));
#endif
            }
          }
        }
      };
      for (int t = 0; t < n_full; t += kTok) step5(t, r.rows + size_t(t) * r.stride, r.stride);
      if (n_full < nt) step5(n_full, tail[0], kRowBytes);
      for (int i = 0; i < kQ; ++i) {
        for (int xs = 0; xs < kXs; ++xs) {
          for (int k = 0; k < 4; ++k) {
            acc[i][xs][k] = _mm256_add_epi32(_mm512_castsi512_si256(acc5[i][xs][k]), _mm512_extracti64x4_epi64(acc5[i][xs][k], 1));
          }
        }
      }
    } else
#endif
    {
      for (int t = 0; t < n_full; t += kTok) step(t, r.rows + size_t(t) * r.stride, r.stride);
      if (n_full < nt) step(n_full, tail[0], kRowBytes);
    }
    // Lane j of X x in 128-bit half L, class k: byte b = 16 L + 4 x + j, channel 4 b + k.
    for (int i = 0; i < kQ; ++i) {
      float* o = out + size_t(i) * kHd;
      for (int xs = 0; xs < kXs; ++xs) {
        const int x = x0 + xs;
        if constexpr (kHalf) {
          __m128 v[4];
          for (int k = 0; k < 4; ++k) {
            const __m256i s = acc[i][xs][k];
            v[k] = _mm_cvtepi32_ps(_mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1)));
          }
          _MM_TRANSPOSE4_PS(v[0], v[1], v[2], v[3]);
          const __m128 dv = _mm_set1_ps(dl[i]);
          for (int j = 0; j < 4; ++j) {
            float* oj = o + 16 * x + 4 * j;
            _mm_storeu_ps(oj, _mm_add_ps(_mm_loadu_ps(oj), _mm_mul_ps(dv, v[j])));
          }
        } else {
          __m256 v[4];
          for (int k = 0; k < 4; ++k) v[k] = _mm256_cvtepi32_ps(acc[i][xs][k]);
          const __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]), t1 = _mm256_unpackhi_ps(v[0], v[1]);
          const __m256 t2 = _mm256_unpacklo_ps(v[2], v[3]), t3 = _mm256_unpackhi_ps(v[2], v[3]);
          const __m256 m0 = _mm256_shuffle_ps(t0, t2, 0x44), m1 = _mm256_shuffle_ps(t0, t2, 0xEE);
          const __m256 m2 = _mm256_shuffle_ps(t1, t3, 0x44), m3 = _mm256_shuffle_ps(t1, t3, 0xEE);
          const __m256 nat[4] = {_mm256_permute2f128_ps(m0, m1, 0x20), _mm256_permute2f128_ps(m2, m3, 0x20),
                                 _mm256_permute2f128_ps(m0, m1, 0x31), _mm256_permute2f128_ps(m2, m3, 0x31)};
          const __m256 dv = _mm256_set1_ps(dl[i]);
          float* dst[4] = {o + 16 * x, o + 16 * x + 8, o + 64 + 16 * x, o + 64 + 16 * x + 8};
          for (int m = 0; m < 4; ++m) _mm256_storeu_ps(dst[m], _mm256_add_ps(_mm256_loadu_ps(dst[m]), _mm256_mul_ps(dv, nat[m])));
        }
      }
    }
  }
  // Outliers in floats, then the zero points, as the float kernel adds them.
  if (r.out_ptr) ValueOutlierCorrections<kQ>(r, p, ldp, out);
  for (int i = 0; i < kQ; ++i) AddToRow(out + size_t(i) * kHd, kHd, zsum[i]);
}
#endif

bool AccumulateRunCodebook(const KvRun& r, const float* p, int n_q, size_t ldp, float* out) {
  if (r.bits < 2 || r.bits > 4) return false;
  if (r.bits == 2) {  // in integers (CodebookRowAccumulateI8); other targets and shapes: the reference
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
    if (r.n > 64 || (r.head_dim != 64 && r.head_dim != 128) || r.levels_q == nullptr) return false;
    auto run = [&](auto kHd) {
      ForQueryPasses<kI8Q>(n_q, [&](auto kq, int i0) {
        CodebookRowAccumulateI8<decltype(kq)::value, kHd()>(r, p + size_t(i0) * ldp, ldp, out + size_t(i0) * kHd());
      });
    };
    if (r.head_dim == 64) {
      run(std::integral_constant<int, 64>());
    } else {
      run(std::integral_constant<int, 128>());
    }
    return true;
#else
    return false;
#endif
  }
  WithHeadDim(r.head_dim, [&](auto kHd) {
    WithCodeBits(r.bits, [&](auto b) {
      if constexpr (b() >= 3 && b() <= 4) CodebookRowAccumulate<b(), kHd()>(r, p, n_q, ldp, out);
    });
  });
  return true;
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq::cpu {
HWY_EXPORT(AccumulateRunCodebook);
bool accumulate_run_codebook(const KvRun& run, const float* p, int n_q, size_t ld, float* out) {
  return HWY_DYNAMIC_DISPATCH(AccumulateRunCodebook)(run, p, n_q, ld, out);
}
}  // namespace kvq::cpu
#endif
