// SPDX-License-Identifier: MIT
// Fused score kernels for KVQuant's keys (kvquant.md), stored before RoPE: each row decoded
// (level * half_c + zero_c), rotated by its offset in the run and dotted in registers, then the
// run's sparse outliers correct the scores (values: kv_fused_codebook_values.cc).
// Specification: ref::decode_run_ref, then the rotation and dot; results agree within float
// reassociation (tested against attention over read()).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/kv_fused_codebook.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/cpu/kv_fused-inl.h"
#include "kernels/cpu/kv_fused_parts.h"
#include "kernels/cpu/kv_outliers-inl.h"
#include "quant/codebook-inl.h"
#ifndef KVQ_KERNELS_KV_FUSED_CODEBOOK_ONCE
#define KVQ_KERNELS_KV_FUSED_CODEBOOK_ONCE
#include <algorithm>
#include <cstring>
#include <utility>

#include "kernels/rope.h"
#include "quant/normalize.h"
#endif

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

// Keys: the score of token t moves by (x - dense) * (R(t)^T q)_c, where
// (R(t)^T q)_c = q_c C_tc + q_c' S_tc', c' = c ^ 1 (kernels/rope.h's key table); s: the
// scores of the pass's first query, queries lds apart. Each entry's arithmetic is spelled out
// (fma(d, fma(q_c, C_tc, q_c' S_tc'), s)) so that the vector path and the one-by-one path
// agree bit for bit whichever entries a run's length puts in each. A pass of two or four
// queries (GQA) takes them in the lanes of one vector (kv_outliers-inl.h): with Llama-3's
// groups of 4, kvquant-2's attention in cache ~13% faster, kvquant-3's ~7%, than with a scalar
// update per query (AVX2's 8-entry gathers included; docs/PERFORMANCE.md).
template <int kQ>
HWY_NOINLINE void KeyOutlierCorrections(const KvRun& r, const float* HWY_RESTRICT qs, const float* HWY_RESTRICT table,
                                        float scale, float* HWY_RESTRICT s, size_t lds) {
  const size_t hd = size_t(r.head_dim);
  if constexpr (kQ >= 2 && kOutliersInLanes) {
    if (size_t(r.n) <= kLaneTokens && hd <= kLaneHeadDim) {
      // The queries in lanes, qa[c][j] = q_j[c]; the scores too, st[t][j].
      const hn::CappedTag<float, kQ> dq;
      HWY_ALIGN float qa[kLaneHeadDim * kQ], st[kLaneTokens * kQ];
      RowsToLanes<kQ>(qs, hd, hd, qa);
      RowsToLanes<kQ>(s, lds, size_t(r.n), st);
      ForRunOutliers(r, nullptr, [&](int t, size_t c, float corr) {
        const float* C = table + size_t(t) * 2 * hd;
        const float* S = C + hd;
        const auto x = hn::MulAdd(hn::Load(dq, qa + c * kQ), hn::Set(dq, C[c]),
                                  hn::Mul(hn::Load(dq, qa + (c ^ 1) * kQ), hn::Set(dq, S[c ^ 1])));
        float* o = st + size_t(t) * kQ;
        hn::Store(hn::MulAdd(hn::Set(dq, corr * scale), x, hn::Load(dq, o)), dq, o);
      });
      LanesToRows<kQ>(st, size_t(r.n), s, lds);
      return;
    }
  }
  const auto add = [=](int t, size_t c, float corr) {
    const float* C = table + size_t(t) * 2 * hd;
    const float* S = C + hd;
    const float d = corr * scale;
    for (int j = 0; j < kQ; ++j) {
      const float* qj = qs + size_t(j) * hd;
      float& sj = s[size_t(j) * lds + size_t(t)];
      sj = std::fma(d, std::fma(qj[c], C[c], qj[c ^ 1] * S[c ^ 1]), sj);
    }
  };
#if HWY_TARGET == HWY_AVX2
  const __m256i one = _mm256_set1_epi32(1), row = _mm256_set1_epi32(int(2 * hd)), half = _mm256_set1_epi32(int(hd));
  const auto vec8 = [&](__m256i t, __m256i c, __m256 v) {
    const __m256i at = _mm256_mullo_epi32(t, row), c1 = _mm256_xor_si256(c, one);
    const __m256 cc = _mm256_i32gather_ps(table, _mm256_add_epi32(at, c), 4);
    const __m256 sc = _mm256_i32gather_ps(table, _mm256_add_epi32(at, _mm256_add_epi32(half, c1)), 4);
    HWY_ALIGN float x[kQ][8], d[8];
    HWY_ALIGN int32_t tt[8];
    for (int j = 0; j < kQ; ++j) {
      const float* qj = qs + size_t(j) * hd;
      const __m256 qa = _mm256_i32gather_ps(qj, c, 4), qb = _mm256_i32gather_ps(qj, c1, 4);
      _mm256_store_ps(x[j], _mm256_fmadd_ps(qa, cc, _mm256_mul_ps(qb, sc)));
    }
    _mm256_store_ps(d, _mm256_mul_ps(v, _mm256_set1_ps(scale)));
    _mm256_store_si256(reinterpret_cast<__m256i*>(tt), t);
    for (int l = 0; l < 8; ++l) {
      for (int j = 0; j < kQ; ++j) {
        float& sj = s[size_t(j) * lds + size_t(tt[l])];
        sj = std::fma(d[l], x[j][l], sj);
      }
    }
  };
#else
  const auto vec8 = nullptr;
#endif
  ForRunOutliers(r, vec8, add);
}

// A pre-RoPE score pass's rows and outliers: rows(kRows, t0, emit) computes rows
// [t0, t0 + kRows) and calls emit(t, sums) with each row's kQ vectors of partial sums; rows go
// in pairs, 8 at a time through one transpose where kQ <= 2, the rest one by one, then the
// run's outliers correct the scores (sq: the pass's first query's, queries lds apart).
template <int kQ, class Rows>
HWY_INLINE void ScorePassRows(const KvRun& r, const Rows& rows, const float* HWY_RESTRICT qs,
                              const float* HWY_RESTRICT table, float scale, float* HWY_RESTRICT sq, size_t lds) {
  const auto store = [&](int t, const hn::Vec<DF>(&sums)[kQ]) { StoreScores<kQ>(sums, nullptr, scale, sq + t, lds); };
  int t = 0;
  if constexpr (kQ <= 2) {
    ForRowsOf8<kQ>(r.n, scale, sq, lds, &t, [&](int t0, const auto& keep) {
      for (int w = 0; w < 8; w += 2) rows(std::integral_constant<int, 2>(), t0 + w, keep);
    });
    for (; t + 2 <= r.n; t += 2) rows(std::integral_constant<int, 2>(), t, store);
  }
  for (; t < r.n; ++t) rows(std::integral_constant<int, 1>(), t, store);
  // Outliers in a pass of their own, so that the row loop above keeps its registers.
  if (r.out_ptr) KeyOutlierCorrections<kQ>(r, qs, table, scale, sq, lds);
}

// KVQuant keys stored before RoPE (kvquant.md §2), scored without a tile: each row is decoded
// (level * half_c + zero_c), rotated by its offset j in the run with the key table
// (R(j) k = k * C_j + swap_pairs(k) * S_j, kernels/rope.h) and dotted in registers, once for
// all the queries of a pass; each sparse outlier then corrects the score by
// (x - dense) * (R(j)^T q)_c = (x - dense) * (q_c C_jc + q_c' S_jc'), c' = c ^ 1.
// q: the queries already rotated to the run's first position.
// kHd: head_dim when it is one the models use (64, 128), so that a row's steps unroll with
// constant offsets; 0: r.head_dim.
template <int kBits, int kHd>
void CodebookPcRopeScores(const KvRun& r, const float* HWY_RESTRICT q, int n_q, const float* HWY_RESTRICT table,
                          float scale, float* HWY_RESTRICT s, size_t lds) {
  const DF df;
  constexpr size_t N = hn::MaxLanes(DF());
  constexpr size_t kStep = kChains * N;  // values per step: one vector per chain
  static_assert(kStep % kChunk == 0 || kChunk % kStep == 0);
  const size_t hd = kHd > 0 ? size_t(kHd) : size_t(r.head_dim);
  const float* h = r.ch_half;
  const float* z = r.ch_zero;
  const LevelLut<kBits> lut(r.levels);
  const size_t row_bytes = packed_bytes(kBits, hd);
  ForQueryPasses<kScoreQ>(n_q, [&](auto kq, int i0) {
    constexpr int kQ = decltype(kq)::value;
    const float* qs = q + size_t(i0) * hd;
    // kRows rows at a time: independent chains for the out-of-order window, which holds about
    // one row's decode-rotate-dot work (each row's sums are the same as alone); emit(t, sums)
    // takes row t's kQ vectors of partial sums.
    auto rows = [&](auto kr_, int t0, const auto& emit) {
      constexpr int kRows = decltype(kr_)::value;
      hn::Vec<DF> acc[kRows][kQ][kChains];
      for (int w = 0; w < kRows; ++w) {
        for (int j = 0; j < kQ; ++j) {
          for (auto& a : acc[w][j]) a = hn::Zero(df);
        }
      }
      // Vector v of a row goes to chain v % kChains, fixed at compile time within a step, so
      // the accumulators stay in registers.
#pragma GCC unroll 8
      for (size_t i0v = 0; i0v < hd; i0v += kStep) {
        for (size_t ch = 0; ch < kChains; ++ch) {
          const size_t i = i0v + ch * N;
          const auto vh = hn::LoadU(df, h + i), vz = hn::LoadU(df, z + i);
          for (int w = 0; w < kRows; ++w) {
            const uint8_t* row = r.rows + size_t(t0 + w) * r.stride;
            const float* C = table + size_t(t0 + w) * 2 * hd;
            const float* S = C + hd;
            const auto k = hn::MulAdd(lut.at(row, i, row_bytes), vh, vz);
            const auto kr = hn::MulAdd(hn::Reverse2(df, k), hn::LoadU(df, S + i), hn::Mul(k, hn::LoadU(df, C + i)));
            for (int j = 0; j < kQ; ++j) acc[w][j][ch] = hn::MulAdd(hn::LoadU(df, qs + size_t(j) * hd + i), kr, acc[w][j][ch]);
          }
        }
      }
      for (int w = 0; w < kRows; ++w) {
        hn::Vec<DF> sums[kQ];
        for (int j = 0; j < kQ; ++j) sums[j] = SumChains(acc[w][j]);
        emit(t0 + w, sums);
      }
    };
    ScorePassRows<kQ>(r, rows, qs, table, scale, s + size_t(i0) * lds, lds);
  });
}

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
// The same scores for one query per KV head (no GQA group to share a rotated key), AVX-512,
// with the rotation folded into the query. A block of 32 channels is decoded as E (channels
// 2l) and O (2l + 1), lane l holding RoPE pair l, so with k = level * h + z and the offset's
// (cos, sin) by pair (Rope::key_pair_table):
//   q . R(j) k = sum_l cos_l P_l + sin_l Q_l,
//   P = (qE hE) lE + (qO hO) lO + (qE zE + qO zO),  Q = (qO hE) lE - (qE hO) lO + (qO zE - qE zO),
// the six factors per query once per call: 3 multiply-adds per 16 values where rotating the
// key costs 4 and a lane swap (the same work, one query per row, measured 10% faster at 4K
// tokens with head_dim 128). Each query takes this form in every pass, alone or not, so
// prefill and decode agree; with GQA the key is rotated once for the group instead
// (CodebookPcRopeScores).
using V16 = hn::Vec<DF>;

// Codes of channels 32 b + 2l (e) and 32 b + 2l + 1 (o), l < 16, of a packed row, each in the
// low bits of its lane with other bits above (LevelLut::of_unmasked).
template <int kBits>
HWY_INLINE void PairCodes(const uint8_t* HWY_RESTRICT row, size_t b, __m512i* e, __m512i* o) {
  if constexpr (kBits == 4) {  // byte l: channel 2l low, 2l + 1 high
    *e = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 16 * b)));
    *o = _mm512_srli_epi32(*e, 4);
  } else if constexpr (kBits == 2) {  // byte k: channels 4k .. 4k + 3, to lanes 2k (4k, 4k + 1), 2k + 1
    const __m128i x = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + 8 * b));
    *e = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(x, _mm_srli_epi16(x, 4)));
    *o = _mm512_srli_epi32(*e, 2);
  } else {  // channel c at bit 3c of the block's 12 bytes: lane l's two codes lie in 2 bytes
    static_assert(kBits == 3);
    struct Pick {
      uint8_t idx[64];
      uint32_t shift[16];
    };
    alignas(64) static constexpr Pick kPick = [] {
      Pick p{};
      for (int l = 0; l < 16; ++l) {  // lane l's bytes, from its 128-bit lane's copy of the 12
        p.idx[4 * l + 0] = uint8_t(6 * l / 8);
        p.idx[4 * l + 1] = uint8_t(6 * l / 8 + 1);
        p.idx[4 * l + 2] = p.idx[4 * l + 3] = 0x80;  // zero
        p.shift[l] = uint32_t(6 * l % 8);
      }
      return p;
    }();
    const __m128i x = _mm_maskz_loadu_epi8(0x0FFF, row + 12 * b);  // never past the row
    const __m512i w = _mm512_shuffle_epi8(_mm512_broadcast_i32x4(x), _mm512_load_si512(kPick.idx));
    const __m512i sh = _mm512_load_si512(kPick.shift);
    *e = _mm512_srlv_epi32(w, sh);
    *o = _mm512_srlv_epi32(w, _mm512_add_epi32(sh, _mm512_set1_epi32(3)));
  }
}

// Even and odd lanes of x[0, 32), to e[0, 16) and o[0, 16).
HWY_INLINE void SplitPairs(const float* HWY_RESTRICT x, V16* e, V16* o) {
  const DF df;
  const V16 lo = hn::LoadU(df, x), hi = hn::LoadU(df, x + 16);
  *e = hn::ConcatEven(df, hi, lo);
  *o = hn::ConcatOdd(df, hi, lo);
}

// The folded form's per-call constants: each 32-channel block's half-ranges and zeros split
// into even and odd dims, [nb][hE, hO, zE, zO][16].
struct FoldedBlocks {
  HWY_ALIGN float hz[512 / 32][4][16];
};
HWY_INLINE void SplitHalfZero(const KvRun& r, size_t nb, FoldedBlocks* fb) {
  const DF df;
  for (size_t b = 0; b < nb; ++b) {
    V16 x[4];
    SplitPairs(r.ch_half + 32 * b, &x[0], &x[1]);
    SplitPairs(r.ch_zero + 32 * b, &x[2], &x[3]);
    for (int k = 0; k < 4; ++k) hn::Store(x[k], df, fb->hz[b][k]);
  }
}

// Query qj's six factors of each block, f[b][0..5][16]: a1 a2 a3 b1 b2 b3 by pair, so that
// P = a1 lE + a2 lO + a3 and Q = b1 lE + b2 lO + b3 (the comment above).
HWY_INLINE void FoldedFactors(const FoldedBlocks& fb, const float* HWY_RESTRICT qj, size_t nb,
                              float (*HWY_RESTRICT f)[6][16]) {
  const DF df;
  for (size_t b = 0; b < nb; ++b) {
    const V16 he = hn::Load(df, fb.hz[b][0]), ho = hn::Load(df, fb.hz[b][1]);
    const V16 ze = hn::Load(df, fb.hz[b][2]), zo = hn::Load(df, fb.hz[b][3]);
    V16 qe, qo;
    SplitPairs(qj + 32 * b, &qe, &qo);
    float* fj = f[b][0];
    hn::Store(hn::Mul(qe, he), df, fj);
    hn::Store(hn::Mul(qo, ho), df, fj + 16);
    hn::Store(hn::MulAdd(qe, ze, hn::Mul(qo, zo)), df, fj + 32);
    hn::Store(hn::Mul(qo, he), df, fj + 48);
    hn::Store(hn::Neg(hn::Mul(qe, ho)), df, fj + 64);
    hn::Store(hn::NegMulAdd(qe, zo, hn::Mul(qo, ze)), df, fj + 80);
  }
}

template <int kBits, int kHd>
void CodebookPcRopeFoldedScores(const KvRun& r, const float* HWY_RESTRICT q, int n_q, const float* HWY_RESTRICT table,
                                const float* HWY_RESTRICT pairs, float scale, float* HWY_RESTRICT s, size_t lds) {
  const DF df;
  const size_t hd = kHd > 0 ? size_t(kHd) : size_t(r.head_dim), hp = hd / 2, nb = hd / 32;
  const LevelLut<kBits> lut(r.levels);
  FoldedBlocks fb;
  SplitHalfZero(r, nb, &fb);
  ForQueryPasses<kScoreQ>(n_q, [&](auto kq, int i0) {
    constexpr int kQ = decltype(kq)::value;
    const float* qs = q + size_t(i0) * hd;
    // f[j][b][0..5]: query j's a1 a2 a3 b1 b2 b3 of block b (P = a1 lE + a2 lO + a3, Q likewise).
    HWY_ALIGN float f[kQ][512 / 32][6][16];
    for (int j = 0; j < kQ; ++j) FoldedFactors(fb, qs + size_t(j) * hd, nb, f[j]);
    auto rows = [&](auto kr_, int t0, const auto& emit) {
      constexpr int kRows = decltype(kr_)::value;
      V16 ac[kRows][kQ], as[kRows][kQ];  // the cos and sin terms' chains
      for (int w = 0; w < kRows; ++w) {
        for (int j = 0; j < kQ; ++j) ac[w][j] = as[w][j] = hn::Zero(df);
      }
#pragma GCC unroll 16
      for (size_t b = 0; b < nb; ++b) {
        for (int w = 0; w < kRows; ++w) {
          __m512i ce, co;
          PairCodes<kBits>(r.rows + size_t(t0 + w) * r.stride, b, &ce, &co);
          const V16 le = lut.of_unmasked(ce), lo = lut.of_unmasked(co);
          const float* cs = pairs + size_t(t0 + w) * hd + 16 * b;
          const V16 c = hn::LoadU(df, cs), sn = hn::LoadU(df, cs + hp);
          for (int j = 0; j < kQ; ++j) {
            const float* fj = f[j][b][0];
            const V16 P = hn::MulAdd(hn::Load(df, fj), le, hn::MulAdd(hn::Load(df, fj + 16), lo, hn::Load(df, fj + 32)));
            const V16 Q = hn::MulAdd(hn::Load(df, fj + 48), le, hn::MulAdd(hn::Load(df, fj + 64), lo, hn::Load(df, fj + 80)));
            ac[w][j] = hn::MulAdd(c, P, ac[w][j]);
            as[w][j] = hn::MulAdd(sn, Q, as[w][j]);
          }
        }
      }
      for (int w = 0; w < kRows; ++w) {
        V16 sums[kQ];
        for (int j = 0; j < kQ; ++j) sums[j] = hn::Add(ac[w][j], as[w][j]);
        emit(t0 + w, sums);
      }
    };
    ScorePassRows<kQ>(r, rows, qs, table, scale, s + size_t(i0) * lds, lds);
  });
}

// 2-bit keys with one or two queries per KV head, tokens in lanes (kvquant-2 on LLaMA-7B's
// shape, issue 9's million tokens; the testbed). At 2 bits a RoPE pair's two codes are one
// nibble u = cE + 4 cO of the row (bits 4l of pair l), so the folded form's P_l and Q_l take 16
// values per pair and query, tabulated in two registers per pair and run (TP_l[u] = a1 L[u & 3] + (a2 L[u >> 2] +
// a3), the folded kernel's operations), and a score is
//   s_t = sum_l cos_l(t) TP_l[u_lt] + sin_l(t) TQ_l[u_lt],
// with 16 tokens in the lanes: per pair, one shift, two permutes (vpermps reads an index's low
// 4 bits, so the nibble needs no mask) and two multiply-adds for 16 tokens (4 more per pair and
// run for the tables), where the folded kernel takes 3 multiply-adds per 16 values, the codes'
// shuffles and a sum across the lanes per row: the key kernel ~30% faster on LLaMA-7B's shape
// (docs/PERFORMANCE.md). Each query pays for its own tables and permutes, so with two queries
// per KV head it still beats rotating the key once for the pair (~40% on the testbed), and from
// four on it would not. The cos and sin come by offset (Rope::key_pair_lanes()); the run's
// codes are transposed once per call, 16 rows of kW words to kW vectors of 16 tokens
// (LaneTranspose), the rows asked for a run ahead (kernels/kv_run.h prefetch_run).

// The permutes of a 16 x kW transpose of 32-bit words (kW = 4 or 8: a row of 64 or 128 2-bit
// codes): registers p < kW start as rows [16 / kW p, +16 / kW) loaded contiguously (lane i:
// row i / kW, word i % kW) and end as words (register w, lane t: row t's word w); stage s pairs
// registers that differ in bit s and gathers into each the words whose bit s is its own.
template <int kW>
struct LaneTranspose {
  static constexpr int kStages = kW == 8 ? 3 : 2;
  uint32_t idx[kStages][kW][16];  // output register r of stage s: lanes of (r & ~2^s) then (r | 2^s) + 16
  bool ok = false;                 // the stages end in the transpose (checked at compile time)
};

template <int kW>
constexpr LaneTranspose<kW> MakeLaneTranspose() {
  static_assert(kW == 4 || kW == 8);
  LaneTranspose<kW> x{};
  int row[kW][16] = {}, word[kW][16] = {};
  for (int p = 0; p < kW; ++p) {
    for (int i = 0; i < 16; ++i) row[p][i] = p * (16 / kW) + i / kW, word[p][i] = i % kW;
  }
  for (int s = 0; s < LaneTranspose<kW>::kStages; ++s) {
    int nrow[kW][16] = {}, nword[kW][16] = {};
    for (int r = 0; r < kW; ++r) {
      const int a = r & ~(1 << s), b = r | (1 << s), bit = (r >> s) & 1;
      int ct[16] = {}, cw[16] = {}, cj[16] = {}, m = 0;
      for (int j = 0; j < 32; ++j) {
        const int rr = j < 16 ? a : b, ii = j % 16;
        if (((word[rr][ii] >> s) & 1) != bit) continue;
        ct[m] = row[rr][ii], cw[m] = word[rr][ii], cj[m] = j, ++m;
      }
      for (int i = 1; i < 16; ++i) {  // by (row, word): at the end, lane t holds row t
        for (int k = i; k > 0 && (ct[k - 1] > ct[k] || (ct[k - 1] == ct[k] && cw[k - 1] > cw[k])); --k) {
          std::swap(ct[k - 1], ct[k]), std::swap(cw[k - 1], cw[k]), std::swap(cj[k - 1], cj[k]);
        }
      }
      for (int i = 0; i < 16; ++i) x.idx[s][r][i] = uint32_t(cj[i]), nrow[r][i] = ct[i], nword[r][i] = cw[i];
    }
    for (int r = 0; r < kW; ++r) {
      for (int i = 0; i < 16; ++i) row[r][i] = nrow[r][i], word[r][i] = nword[r][i];
    }
  }
  x.ok = true;
  for (int r = 0; r < kW; ++r) {
    for (int i = 0; i < 16; ++i) x.ok = x.ok && row[r][i] == i && word[r][i] == r;
  }
  return x;
}

// codes[w] lane t = word w of row t of rows [0, n), n <= 16, each stride apart and kW words
// long; rows past n read as zeros.
template <int kW>
HWY_INLINE void TransposeRows16(const uint8_t* HWY_RESTRICT rows, size_t stride, int n, __m512i (&codes)[kW]) {
  alignas(64) static constexpr LaneTranspose<kW> kT = MakeLaneTranspose<kW>();
  static_assert(kT.ok);
  constexpr size_t kRowBytes = 4 * kW;
  __m512i v[kW];
  if (stride == kRowBytes && n == 16) {
    for (int p = 0; p < kW; ++p) v[p] = _mm512_loadu_si512(rows + 64 * size_t(p));
  } else {
    alignas(64) uint8_t packed[16 * kRowBytes] = {};
    for (int t = 0; t < n; ++t) std::memcpy(packed + size_t(t) * kRowBytes, rows + size_t(t) * stride, kRowBytes);
    for (int p = 0; p < kW; ++p) v[p] = _mm512_load_si512(packed + 64 * size_t(p));
  }
  for (int s = 0; s < LaneTranspose<kW>::kStages; ++s) {
    __m512i n[kW];
    for (int r = 0; r < kW; ++r) {
      const int a = r & ~(1 << s), b = r | (1 << s);
      n[r] = _mm512_permutex2var_epi32(v[a], _mm512_load_si512(kT.idx[s][r]), v[b]);
    }
    for (int r = 0; r < kW; ++r) v[r] = n[r];
  }
  for (int w = 0; w < kW; ++w) codes[w] = v[w];
}

// kG groups of 16 tokens, the run's codes transposed in tc[g][w]: the scores of one query
// from its factors f (FoldedFactors: [head_dim / 32][6][16]), the levels by nibble le / lo and
// the offsets' cos / sin by pair (cs: [2][head_dim / 2][64]). Each pair's two tables are
// built in registers and serve the kG groups.
template <int kW, int kG>
HWY_INLINE void LaneScores(const __m512i (*HWY_RESTRICT tc)[kW], const float (*HWY_RESTRICT f)[6][16], __m512 le,
                           __m512 lo, const float* HWY_RESTRICT cs, int n, float scale, float* HWY_RESTRICT s) {
  constexpr size_t hp = 8 * kW;  // pairs
  __m512 ac[kG], as[kG];
  for (int g = 0; g < kG; ++g) ac[g] = as[g] = _mm512_setzero_ps();
  for (int w = 0; w < kW; ++w) {
    const float* fb = f[w / 2][0] + 8 * (w % 2);  // pairs 8w .. 8w + 7 are lanes 8 (w % 2) + k of block w / 2
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) {
      const size_t l = size_t(8 * w + k);
      // TP_l[u] = fma(a1, L[u & 3], fma(a2, L[u >> 2], a3)), TQ_l likewise: the folded form's P, Q.
      const __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(fb[k]), le,
                                       _mm512_fmadd_ps(_mm512_set1_ps(fb[16 + k]), lo, _mm512_set1_ps(fb[32 + k])));
      const __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(fb[48 + k]), le,
                                       _mm512_fmadd_ps(_mm512_set1_ps(fb[64 + k]), lo, _mm512_set1_ps(fb[80 + k])));
      const float* c = cs + l * Rope::kKeyOffsets;
      const float* sn = c + hp * Rope::kKeyOffsets;
      for (int g = 0; g < kG; ++g) {
        const __m512i u = _mm512_srli_epi32(tc[g][w], unsigned(4 * k));
        ac[g] = _mm512_fmadd_ps(_mm512_loadu_ps(c + 16 * g), _mm512_permutexvar_ps(u, p), ac[g]);
        as[g] = _mm512_fmadd_ps(_mm512_loadu_ps(sn + 16 * g), _mm512_permutexvar_ps(u, q), as[g]);
      }
    }
  }
  const __m512 vs = _mm512_set1_ps(scale);
  for (int g = 0; g < kG; ++g) {
    const int left = n - 16 * g;
    const __mmask16 m = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u);
    _mm512_mask_storeu_ps(s + 16 * g, m, _mm512_mul_ps(_mm512_add_ps(ac[g], as[g]), vs));
  }
}

template <int kHd>
void CodebookPc2RopeLaneScores(const KvRun& r, const float* HWY_RESTRICT q, int n_q, const RopeKeyTables& rope,
                               float scale, float* HWY_RESTRICT s, size_t lds) {
  static_assert(kHd == 64 || kHd == 128);
  constexpr int kW = kHd / 16;  // 32-bit words of a row of 2-bit codes
  constexpr size_t hd = size_t(kHd), nb = hd / 32;
  const int ng = (r.n + 15) / 16;
  // The run's codes with tokens in lanes; rows past n read as zeros (their scores not stored).
  __m512i tc[4][kW];
  for (int g = 0; g < ng; ++g) {
    TransposeRows16<kW>(r.rows + size_t(16 * g) * r.stride, r.stride, std::min(16, r.n - 16 * g), tc[g]);
  }
  // The levels by nibble: LE[u] = L[u & 3], LO[u] = L[u >> 2].
  const __m512 levels = _mm512_loadu_ps(r.levels);
  const __m512i u = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512 le = _mm512_permutexvar_ps(_mm512_and_si512(u, _mm512_set1_epi32(3)), levels);
  const __m512 lo = _mm512_permutexvar_ps(_mm512_srli_epi32(u, 2), levels);
  FoldedBlocks fb;
  SplitHalfZero(r, nb, &fb);
  ForQueryPasses<kScoreQ>(n_q, [&](auto kq, int i0) {
    constexpr int kQ = decltype(kq)::value;
    const float* qs = q + size_t(i0) * hd;
    float* sq = s + size_t(i0) * lds;
    for (int j = 0; j < kQ; ++j) {
      HWY_ALIGN float f[nb][6][16];
      FoldedFactors(fb, qs + size_t(j) * hd, nb, f);
      float* sj = sq + size_t(j) * lds;
      switch (ng) {
        case 1: LaneScores<kW, 1>(tc, f, le, lo, rope.by_offset, r.n, scale, sj); break;
        case 2: LaneScores<kW, 2>(tc, f, le, lo, rope.by_offset, r.n, scale, sj); break;
        case 3: LaneScores<kW, 3>(tc, f, le, lo, rope.by_offset, r.n, scale, sj); break;
        default: LaneScores<kW, 4>(tc, f, le, lo, rope.by_offset, r.n, scale, sj); break;
      }
    }
    if (r.out_ptr) KeyOutlierCorrections<kQ>(r, qs, rope.by_dim, scale, sq, lds);
  });
}
#endif

bool ScoreRunRopeFused(const KvRun& r, const float* q, int n_q, int group, const RopeKeyTables& rope, float scale,
                       float* s, size_t lds) {
  if (r.format != KvFormat::kCodebookPc || r.bits < 2 || r.bits > 4 || r.head_dim > 512) return false;
  const float* table = rope.by_dim;
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
  if (group <= 2 && r.bits == 2 && (r.head_dim == 64 || r.head_dim == 128)) {
    WithHeadDim(r.head_dim, [&](auto kHd) {
      if constexpr (kHd() != 0) CodebookPc2RopeLaneScores<kHd()>(r, q, n_q, rope, scale, s, lds);
    });
    return true;
  }
  if (group == 1 && r.head_dim % 32 == 0) {
    WithHeadDim(r.head_dim, [&](auto kHd) {
      WithCodeBits(r.bits, [&](auto b) {
        if constexpr (b() <= 4) CodebookPcRopeFoldedScores<b(), kHd()>(r, q, n_q, table, rope.by_pair, scale, s, lds);
      });
    });
    return true;
  }
#endif
  (void)group;
  // One lane holds no pair (Reverse2 would leave it alone): the caller's tile path.
  if (hn::MaxLanes(DF()) < 2 || r.head_dim % (kChains * hn::MaxLanes(DF())) != 0 || r.head_dim % kChunk != 0) {
    return false;
  }
  WithHeadDim(r.head_dim, [&](auto kHd) {
    WithCodeBits(r.bits, [&](auto b) {
      if constexpr (b() <= 4) CodebookPcRopeScores<b(), kHd()>(r, q, n_q, table, scale, s, lds);
    });
  });
  return true;
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq::cpu {
HWY_EXPORT(ScoreRunRopeFused);
bool score_run_rope_fused(const KvRun& run, const float* q, int n_q, int group, const RopeKeyTables& rope,
                          float scale, float* scores, size_t ld) {
  return HWY_DYNAMIC_DISPATCH(ScoreRunRopeFused)(run, q, n_q, group, rope, scale, scores, ld);
}
}  // namespace kvq::cpu
#endif
