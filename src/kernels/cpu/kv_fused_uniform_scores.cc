// SPDX-License-Identifier: MIT
// Fused score kernels for uniform codes: KIVI keys (per-channel groups of G tokens) and
// per-token groups (int-b keys):
//   q . x' = d sum_c w8_c code_c + q . z           (KIVI keys; w8, d: w = q * s in int8 per block)
//   q . x' = (d sum_c w8_c code_c) s + z sum(q)    (int2 / int4, one group per head; w8, d: q in int8)
//   q . x' = sum_g s_g (q_g . codes_g) + z_g sum(q_g) (other per-token groups)
// The first two follow ref::uniform_cols_scores_ref and ref::uniform_row_scores_ref (their
// rounding is part of the formats' specifications, key_query_in_integers); the others
// ref::decode_run_ref then dot, within float reassociation (tested against attention over read()).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/kv_fused_uniform_scores.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "base/check.h"
#include "hwy/highway.h"
#include "kernels/cpu/kv_fused-inl.h"
#include "kernels/cpu/kv_fused_parts.h"
#include "quant/bitpack-inl.h"
#ifndef KVQ_KERNELS_KV_FUSED_UNIFORM_SCORES_ONCE
#define KVQ_KERNELS_KV_FUSED_UNIFORM_SCORES_ONCE
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <utility>
#endif

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

// KIVI keys scored in integers: one G-token block, per-channel scale s_c and zero z_c; each
// query's weighted query w = q * s rounded to int8 per block (w8, d: ref::round_weighted_query_ref)
// and q . x'_t = d sum_c w8_c code_tc + q . z, the sum exact (specification:
// ref::uniform_cols_scores_ref). On AVX2 a 32-byte vector of 2-/4-bit codes is one pmaddubsw
// per class (codes unsigned, w8 signed) and one pmaddwd, ~20 instructions per 128-value row
// against ~115 for float FMAs; elsewhere the same sums in float (products and sums of small
// integers, exact below 2^24).
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
// 32 int8 lanes in order: four runs of 8 floats times id, rounded to nearest even (the
// conversion's default mode: std::nearbyint's), as round_weighted_query_ref rounds them.
HWY_INLINE __m256i PackI8(__m256 id, const float* a, const float* b, const float* c, const float* e) {
  auto cvt = [&](const float* x) { return _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_load_ps(x), id)); };
  const __m256i ab = _mm256_packs_epi32(cvt(a), cvt(b));
  const __m256i ce = _mm256_packs_epi32(cvt(c), cvt(e));
  return _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, ce), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// The 8 int32 row sums of r[0..8) (each 8 lanes of partial sums), in row order.
HWY_INLINE __m256i SumRows8(const __m256i (&r)[8]) {
  const __m256i h01 = _mm256_hadd_epi32(r[0], r[1]), h23 = _mm256_hadd_epi32(r[2], r[3]);
  const __m256i h45 = _mm256_hadd_epi32(r[4], r[5]), h67 = _mm256_hadd_epi32(r[6], r[7]);
  const __m256i x = _mm256_hadd_epi32(h01, h23), y = _mm256_hadd_epi32(h45, h67);
  return _mm256_add_epi32(_mm256_permute2x128_si256(x, y, 0x20), _mm256_permute2x128_si256(x, y, 0x31));
}

// Whether a run's rows are whole 32-byte vectors (or one 16-byte half, rows then in pairs).
template <int kBits>
bool ColsI8Fit(const KvRun& r) {
  const size_t rb = size_t(r.head_dim) * kBits / 8;
  return (kBits == 2 || kBits == 4) && (rb % 32 == 0 || rb == 16);
}

// Scores of kQ queries from their class-ordered w (ColsScores; RowScores: the query itself),
// rounded here to w8 = w * id: (d sum + bias) * scale, or with kRows (int2 / int4 keys) ((d sum)
// s_t + z_t bias) * scale with token t's scale and zero point. kNv: 32-byte vectors per row when
// a constant (-1: a 16-byte half, rows in pairs; 0: rb / 32).
template <int kBits, int kQ, int kNv, bool kRows = false>
void ColsScoresI8(const KvRun& r, const float (*w)[512], const float* id, const float* d, const float* bias,
                  float scale, float* HWY_RESTRICT s, size_t lds) {
  constexpr int kPer = 8 / kBits;
  constexpr bool half = kNv < 0;  // two rows per vector
  const size_t nv = half ? 1 : kNv > 0 ? size_t(kNv) : size_t(r.head_dim) * kBits / 256;
  // Class k of vector j: bytes b hold channels (32 j + b) kPer + k, whose class-ordered w are the
  // runs of 8 at ((4 j + u) kPer + k) * 8, u < 4 (a half: its two runs, twice).
  __m256i w8[kQ][8][kPer];
  for (int i = 0; i < kQ; ++i) {
    const __m256 idv = _mm256_set1_ps(id[i]);
    for (size_t j = 0; j < nv; ++j) {
      for (int k = 0; k < kPer; ++k) {
        auto run = [&](size_t u) { return w[i] + ((4 * j + u) * kPer + size_t(k)) * 8; };
        w8[i][j][k] = half ? PackI8(idv, run(0), run(1), run(0), run(1)) : PackI8(idv, run(0), run(1), run(2), run(3));
      }
    }
  }
  const __m256i mask = _mm256_set1_epi8(char((1 << kBits) - 1)), ones = _mm256_set1_epi16(1);
  // acc[i] += the products of the 32 codes of x (both halves: rows in pairs) with w8[i][j].
  auto dot = [&](__m256i x, size_t j, __m256i (&acc)[kQ]) {
    __m256i p[kQ];
    [&]<int... K>(std::integer_sequence<int, K...>) {
      (
          [&] {
            __m256i c = K == 0 ? x : _mm256_srli_epi16(x, K * kBits);
            c = _mm256_and_si256(c, mask);
            for (int i = 0; i < kQ; ++i) {
              const __m256i m = _mm256_maddubs_epi16(c, w8[i][j][K]);
              p[i] = K == 0 ? m : _mm256_add_epi16(p[i], m);
            }
          }(),
          ...);
    }(std::make_integer_sequence<int, kPer>());
    for (int i = 0; i < kQ; ++i) acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(p[i], ones));
  };
  auto meta_f16 = [&](int t, ptrdiff_t off) {  // kRows: token t's scale or zero point
    uint16_t h;
    std::memcpy(&h, r.rows + size_t(t) * r.meta_stride + off, 2);
    return h;
  };
  auto store8 = [&](int t0, const __m256i (&sums)[kQ]) {
    __m256 sv = _mm256_setzero_ps(), zv = sv;
    if constexpr (kRows) {
      HWY_ALIGN uint16_t sh[8], zh[8];
      for (int u = 0; u < 8; ++u) sh[u] = meta_f16(t0 + u, r.scales_off), zh[u] = meta_f16(t0 + u, r.zeros_off);
      sv = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(sh)));
      zv = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(zh)));
    }
    for (int i = 0; i < kQ; ++i) {
      const __m256 ds = _mm256_mul_ps(_mm256_cvtepi32_ps(sums[i]), _mm256_set1_ps(d[i]));
      // kRows: one explicit FMA here and in store1, so that a row gives the same bits in a block
      // of 8 as alone (which product the compiler would contract is its choice).
      const __m256 x = kRows ? _mm256_fmadd_ps(ds, sv, _mm256_mul_ps(zv, _mm256_set1_ps(bias[i])))
                             : _mm256_add_ps(ds, _mm256_set1_ps(bias[i]));
      _mm256_storeu_ps(s + size_t(i) * lds + size_t(t0), _mm256_mul_ps(x, _mm256_set1_ps(scale)));
    }
  };
  auto store1 = [&](int t, const __m256i (&acc)[kQ], int lane0) {  // one row's lanes [lane0, lane0 + 8 / (1 + half))
    float st = 0.0f, zt = 0.0f;
    if constexpr (kRows) {
      const uint8_t* meta = r.rows + size_t(t) * r.meta_stride;
      st = F16ToF32(meta + r.scales_off), zt = F16ToF32(meta + r.zeros_off);
    }
    for (int i = 0; i < kQ; ++i) {
      HWY_ALIGN int32_t l[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(l), acc[i]);
      int32_t sum = 0;
      for (int k = lane0; k < lane0 + (half ? 4 : 8); ++k) sum += l[k];
      s[size_t(i) * lds + size_t(t)] =
          kRows ? std::fma(d[i] * float(sum), st, zt * bias[i]) * scale : (d[i] * float(sum) + bias[i]) * scale;
    }
  };
  const uint8_t* rows = r.rows;
  int t = 0;
  if (half) {
    auto pair = [&](int t0, int n2, __m256i (&acc)[kQ]) {  // rows t0 and (n2 == 2) t0 + 1
      const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows + size_t(t0) * r.stride));
      const __m128i hi = n2 == 2 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows + size_t(t0 + 1) * r.stride))
                                 : _mm_setzero_si128();
      for (auto& a : acc) a = _mm256_setzero_si256();
      dot(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1), 0, acc);
    };
    for (; t + 8 <= r.n; t += 8) {
      __m256i a[4][kQ], sums[kQ];
      for (int u = 0; u < 4; ++u) pair(t + 2 * u, 2, a[u]);
      for (int i = 0; i < kQ; ++i) {
        const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0][i], a[1][i]), _mm256_hadd_epi32(a[2][i], a[3][i]));
        sums[i] = _mm256_permutevar8x32_epi32(h, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      }
      store8(t, sums);
    }
    for (; t < r.n; t += 2) {
      __m256i a[kQ];
      const int n2 = std::min(2, r.n - t);
      pair(t, n2, a);
      store1(t, a, 0);
      if (n2 == 2) store1(t + 1, a, 4);
    }
    return;
  }
  auto row = [&](int tr, __m256i (&acc)[kQ]) {
    for (auto& a : acc) a = _mm256_setzero_si256();
    const uint8_t* x = rows + size_t(tr) * r.stride;
    for (size_t j = 0; j < nv; ++j) dot(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32 * j)), j, acc);
  };
#if HWY_TARGET <= HWY_AVX3
  // AVX-512: two rows side by side in the halves of each vector, the same integer sums (the
  // same bits), half the instructions per row (docs/PERFORMANCE.md, "Integer kernels in
  // 512-bit vectors"). Rows past the last whole 8 take the 256-bit loop below.
  __m512i w8w[kQ][8][kPer];
  for (int i = 0; i < kQ; ++i) {
    for (size_t j = 0; j < nv; ++j) {
      for (int k = 0; k < kPer; ++k) w8w[i][j][k] = _mm512_broadcast_i64x4(w8[i][j][k]);
    }
  }
  const __m512i mask5 = _mm512_set1_epi8(char((1 << kBits) - 1)), ones5 = _mm512_set1_epi16(1);
  auto row_pair = [&](int tr, __m512i (&acc)[kQ]) {  // rows tr (low half) and tr + 1 (high)
    for (auto& a : acc) a = _mm512_setzero_si512();
    const uint8_t* x = rows + size_t(tr) * r.stride;
    for (size_t j = 0; j < nv; ++j) {
      const __m512i v = _mm512_inserti64x4(
          _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32 * j))),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + r.stride + 32 * j)), 1);
      __m512i p[kQ];
      for (int k = 0; k < kPer; ++k) {
        const __m512i c = _mm512_and_si512(k == 0 ? v : _mm512_srli_epi16(v, unsigned(k * kBits)), mask5);
        for (int i = 0; i < kQ; ++i) {
          const __m512i m = _mm512_maddubs_epi16(c, w8w[i][j][k]);
          p[i] = k == 0 ? m : _mm512_add_epi16(p[i], m);
        }
      }
      for (int i = 0; i < kQ; ++i) acc[i] = _mm512_add_epi32(acc[i], _mm512_madd_epi16(p[i], ones5));
    }
  };
  for (; t + 8 <= r.n; t += 8) {
    __m256i a[kQ][8], sums[kQ];
    for (int u = 0; u < 8; u += 2) {
      __m512i acc[kQ];
      row_pair(t + u, acc);
      for (int i = 0; i < kQ; ++i) {
        a[i][u] = _mm512_castsi512_si256(acc[i]);
        a[i][u + 1] = _mm512_extracti64x4_epi64(acc[i], 1);
      }
    }
    for (int i = 0; i < kQ; ++i) sums[i] = SumRows8(a[i]);
    store8(t, sums);
  }
#endif
  for (; t + 8 <= r.n; t += 8) {
    __m256i a[kQ][8], sums[kQ];
    for (int u = 0; u < 8; ++u) {
      __m256i acc[kQ];
      row(t + u, acc);
      for (int i = 0; i < kQ; ++i) a[i][u] = acc[i];
    }
    for (int i = 0; i < kQ; ++i) sums[i] = SumRows8(a[i]);
    store8(t, sums);
  }
  for (; t < r.n; ++t) {
    __m256i acc[kQ];
    row(t, acc);
    store1(t, acc, 0);
  }
}
#endif

template <int kBits>
void ColsScores(const KvRun& r, const float* HWY_RESTRICT q, int n_q, float scale, float* HWY_RESTRICT s,
                size_t lds) {
  const DF8 df;
  const size_t N = hn::Lanes(df), hd = size_t(r.head_dim), row_blocks = hd * kBits / (8 * N);
  constexpr size_t kPer = 8 / kBits;
  HWY_ALIGN float w[kMaxQ][512];  // class order: w (the integer path rounds it as it packs)
  float bias[kMaxQ], dq[kMaxQ], id[kMaxQ];
  // The block's f16 scales and zero points, converted as they are used (a G = 32 block's setup
  // is spread over only 32 rows).
  const hn::Rebind<hwy::float16_t, DF8> dh;
  const auto* sh = reinterpret_cast<const hwy::float16_t*>(r.rows + r.scales_off);
  const auto* zh = reinterpret_cast<const hwy::float16_t*>(r.rows + r.zeros_off);
  ForQueryPasses<kScoreQ>(n_q, [&](auto kq, int i0) {
    constexpr int kQ = decltype(kq)::value;
    for (int i = 0; i < kQ; ++i) {
      const float* qi = q + size_t(i0 + i) * hd;
      auto b = hn::Zero(df), amax = hn::Zero(df), bad = hn::Zero(df);
      for (size_t c0 = 0; c0 < hd; c0 += kPer * N) {
        hn::Vec<DF8> x[kPer];
        for (size_t k = 0; k < kPer; ++k) {
          const size_t c = c0 + k * N;
          const auto qv = hn::LoadU(df, qi + c);
          x[k] = hn::Mul(qv, hn::PromoteTo(df, hn::LoadU(dh, sh + c)));
          b = hn::MulAdd(qv, hn::PromoteTo(df, hn::LoadU(dh, zh + c)), b);
          amax = hn::Max(amax, hn::Abs(x[k]));
          bad = hn::Add(bad, x[k]);  // NaN once a w is NaN (an infinite one: amax)
        }
        StoreClassOrder<kBits>(x, w[i] + c0);
      }
      bias[i] = hn::GetLane(hn::SumOfLanes(df, b));
      // round_weighted_query_ref, in class order (elementwise, so the same w8).
      const float am = hn::GetLane(hn::MaxOfLanes(df, amax));
      const bool finite = std::isfinite(am) && !std::isnan(hn::GetLane(hn::SumOfLanes(df, bad)));
      const bool kept = finite && am >= kRoundedMaxFloor;  // else every w8 zero
      id[i] = kept ? 127.0f / am : 0.0f;
      dq[i] = !finite ? NAN : kept ? am / 127.0f : 0.0f;
    }
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
    if (ColsI8Fit<kBits>(r)) {
      const size_t rb = hd * kBits / 8;
      float* si = s + size_t(i0) * lds;
      if (rb == 16) return ColsScoresI8<kBits, kQ, -1>(r, w, id, dq, bias, scale, si, lds);
      if (rb == 32) return ColsScoresI8<kBits, kQ, 1>(r, w, id, dq, bias, scale, si, lds);
      if (rb == 64) return ColsScoresI8<kBits, kQ, 2>(r, w, id, dq, bias, scale, si, lds);
      return ColsScoresI8<kBits, kQ, 0>(r, w, id, dq, bias, scale, si, lds);
    }
#endif
    for (int i = 0; i < kQ; ++i) {
      const auto idv = hn::Set(df, id[i]);
      for (size_t c = 0; c < hd; c += N) hn::Store(hn::Round(hn::Mul(hn::Load(df, w[i] + c), idv)), df, w[i] + c);
    }
    for (int t = 0; t < r.n; ++t) {
      const uint8_t* row = r.rows + size_t(t) * r.stride;
      hn::Vec<DF8> acc[kQ][kChains];
      for (int i = 0; i < kQ; ++i) {
        for (auto& a : acc[i]) a = hn::Zero(df);
      }
      for (size_t blk = 0; blk < row_blocks; ++blk) {
        ForEachClass<kBits>(row + blk * N, [&](int k, hn::Vec<DF8> codes) {
          const size_t v = blk * (8 / kBits) + size_t(k), off = v * N;
          for (int i = 0; i < kQ; ++i) {
            auto& a = acc[i][v % kChains];
            a = hn::MulAdd(hn::Load(df, w[i] + off), codes, a);
          }
        });
      }
      for (int i = 0; i < kQ; ++i) {
        const float sum = hn::GetLane(hn::SumOfLanes(df, SumChains(acc[i])));  // an exact integer
        s[size_t(i0 + i) * lds + size_t(t)] = (dq[i] * sum + bias[i]) * scale;
      }
    }
  });
}

// Per-token groups (int-b keys): scale s_g and zero z_g per group of g values:
// q . x'_t = sum_g s_g (q_g . codes_g) + z_g sum(q_g); with kIntQuery (int2 / int4 of one group
// per head, key_query_in_integers) q . x'_t = (d sum_c w8_c code_tc) s + z sum(q) against the
// query rounded to int8 (ref::uniform_row_scores_ref): on AVX2 and up ColsScoresI8, elsewhere the
// same integer sums in float (exact below 2^24: at most 127 * 15 * 512).
template <int kBits, bool kIntQuery>
void RowScores(const KvRun& r, const float* HWY_RESTRICT q, int n_q, float scale, float* HWY_RESTRICT s,
               size_t lds) {
  const DF8 df;
  const size_t N = hn::Lanes(df), hd = size_t(r.head_dim), g = std::min(size_t(r.group), hd);
  const size_t n_groups = hd / g, group_blocks = g * kBits / (8 * N);
  constexpr size_t kPer = 8 / kBits;
  HWY_ALIGN float qp[kMaxQ][512];
  float qsum[kMaxQ][64];
  float dq[kMaxQ], id[kMaxQ], bias[kMaxQ];  // kIntQuery: the rounding of each query, and sum(q)
  if constexpr (kIntQuery) KVQ_CHECK(n_groups == 1);
  ForQueryPasses<kScoreQ>(n_q, [&](auto kq, int i0) {
    constexpr int kQ = decltype(kq)::value;
    for (int i = 0; i < kQ; ++i) {
      const float* qi = q + size_t(i0 + i) * hd;
      auto amax = hn::Zero(df), bad = hn::Zero(df);
      for (size_t c0 = 0; c0 < hd; c0 += kPer * N) {
        hn::Vec<DF8> x[kPer];
        for (size_t k = 0; k < kPer; ++k) {
          x[k] = hn::LoadU(df, qi + c0 + k * N);
          if constexpr (kIntQuery) {
            amax = hn::Max(amax, hn::Abs(x[k]));
            bad = hn::Add(bad, x[k]);  // NaN once a q is NaN (an infinite one: amax)
          }
        }
        StoreClassOrder<kBits>(x, qp[i] + c0);
      }
      if constexpr (kIntQuery) {  // round_weighted_query_ref of q_i (elementwise: the same w8)
        const float am = hn::GetLane(hn::MaxOfLanes(df, amax));
        const bool finite = std::isfinite(am) && !std::isnan(hn::GetLane(hn::SumOfLanes(df, bad)));
        const bool kept = finite && am >= kRoundedMaxFloor;  // else every w8 zero
        id[i] = kept ? 127.0f / am : 0.0f;
        dq[i] = !finite ? NAN : kept ? am / 127.0f : 0.0f;
      }
    }
    // Each group's sum of each query, one value at a time in channel order (as the reference
    // sums it), the queries' sums side by side: kQ independent chains of additions, where one
    // query after another took a 128-add chain each (~40% of int4's key time with 4 queries).
    for (size_t k = 0; k < n_groups; ++k) {
      float sum[kQ] = {};
      for (size_t c = k * g; c < (k + 1) * g; ++c) {
        for (int i = 0; i < kQ; ++i) sum[i] += q[size_t(i0 + i) * hd + c];
      }
      for (int i = 0; i < kQ; ++i) qsum[i][k] = sum[i];
    }
    if constexpr (kIntQuery) {
      for (int i = 0; i < kQ; ++i) bias[i] = qsum[i][0];
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
      if (ColsI8Fit<kBits>(r)) {
        const size_t rb = hd * kBits / 8;
        float* si = s + size_t(i0) * lds;
        if (rb == 16) return ColsScoresI8<kBits, kQ, -1, true>(r, qp, id, dq, bias, scale, si, lds);
        if (rb == 32) return ColsScoresI8<kBits, kQ, 1, true>(r, qp, id, dq, bias, scale, si, lds);
        if (rb == 64) return ColsScoresI8<kBits, kQ, 2, true>(r, qp, id, dq, bias, scale, si, lds);
        return ColsScoresI8<kBits, kQ, 0, true>(r, qp, id, dq, bias, scale, si, lds);
      }
#endif
      for (int i = 0; i < kQ; ++i) {
        const auto idv = hn::Set(df, id[i]);
        for (size_t c = 0; c < hd; c += N) hn::Store(hn::Round(hn::Mul(hn::Load(df, qp[i] + c), idv)), df, qp[i] + c);
      }
    }
    // Row t's kQ partial-sum vectors and zero-point terms.
    auto row_sums = [&](int t, hn::Vec<DF8>(&acc)[kQ], float(&zpart)[kQ]) {
      const uint8_t* row = r.rows + size_t(t) * r.stride;
      const auto* sc = reinterpret_cast<const f16_t*>(r.rows + r.scales_off + size_t(t) * r.meta_stride);
      const auto* zc = reinterpret_cast<const f16_t*>(r.rows + r.zeros_off + size_t(t) * r.meta_stride);
      for (int i = 0; i < kQ; ++i) acc[i] = hn::Zero(df), zpart[i] = 0.0f;
      for (size_t k = 0; k < n_groups; ++k) {
        hn::Vec<DF8> ga[kQ][kChains];
        for (int i = 0; i < kQ; ++i) {
          for (auto& a : ga[i]) a = hn::Zero(df);
        }
        for (size_t blk = k * group_blocks; blk < (k + 1) * group_blocks; ++blk) {
          ForEachClass<kBits>(row + blk * N, [&](int c, hn::Vec<DF8> codes) {
            const size_t v = blk * (8 / kBits) + size_t(c), off = v * N;
            for (int i = 0; i < kQ; ++i) {
              auto& a = ga[i][v % kChains];
              a = hn::MulAdd(hn::Load(df, qp[i] + off), codes, a);
            }
          });
        }
        const auto sk = hn::Set(df, F16ToF32(sc + k));
        const float zk = F16ToF32(zc + k);
        for (int i = 0; i < kQ; ++i) {
          // kIntQuery: the lanes' integer sums times s d (summed below), against (d sum) s.
          acc[i] = hn::MulAdd(kIntQuery ? hn::Mul(sk, hn::Set(df, dq[i])) : sk, SumChains(ga[i]), acc[i]);
          zpart[i] += zk * qsum[i][k];
        }
      }
    };
    float* sq = s + size_t(i0) * lds;
    int t = 0;
    // 8 rows' lanes summed in one transpose, then (sum + zero term) * scale.
    ForRowsOf8<kQ, DF8, true>(r.n, scale, sq, lds, &t, [&](int t0, const auto& keep) {
      for (int w = 0; w < 8; ++w) {
        hn::Vec<DF8> acc[kQ];
        float zpart[kQ];
        row_sums(t0 + w, acc, zpart);
        keep(t0 + w, acc, zpart);
      }
    });
    for (; t < r.n; ++t) {
      hn::Vec<DF8> acc[kQ];
      float zpart[kQ];
      row_sums(t, acc, zpart);
      StoreScores<kQ>(acc, zpart, scale, sq + size_t(t), lds);
    }
  });
}


bool ScoreRunUniform(const KvRun& r, const float* q, int n_q, float scale, float* s, size_t lds) {
  return WithClassBlocks(r, [&](auto b) {
    if (r.format == KvFormat::kUniformCols) return ColsScores<b()>(r, q, n_q, scale, s, lds);
    if (key_query_in_integers(r)) {
      if constexpr (b() == 2 || b() == 4) return RowScores<b(), true>(r, q, n_q, scale, s, lds);
    }
    RowScores<b(), false>(r, q, n_q, scale, s, lds);
  });
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq::cpu {
HWY_EXPORT(ScoreRunUniform);
bool score_run_uniform(const KvRun& run, const float* q, int n_q, float scale, float* scores, size_t ld) {
  return HWY_DYNAMIC_DISPATCH(ScoreRunUniform)(run, q, n_q, scale, scores, ld);
}
}  // namespace kvq::cpu
#endif
