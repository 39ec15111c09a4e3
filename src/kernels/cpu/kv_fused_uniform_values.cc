// SPDX-License-Identifier: MIT
// Fused value kernels for uniform per-token groups (KIVI values, int-b): accumulation
//   out += (p s) code + p z,
// 2-bit codes in integers (d w8 code, w8 = p s in uint8 per run) as
// ref::uniform_row_accumulate_ref specifies (the rounding is part of the format's
// specification); other widths ref::decode_run_ref then axpy, within float reassociation
// (tested against attention over read()).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/kv_fused_uniform_values.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/cpu/kv_fused-inl.h"
#include "kernels/cpu/kv_fused_parts.h"
#include "quant/bitpack-inl.h"
#ifndef KVQ_KERNELS_KV_FUSED_UNIFORM_VALUES_ONCE
#define KVQ_KERNELS_KV_FUSED_UNIFORM_VALUES_ONCE
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <utility>
#endif

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

// a * b + c as a lane of MulAdd computes it: fused where the target has FMA (one instruction),
// a product and a sum elsewhere (std::fma would call libm's software FMA there).
HWY_INLINE float ScalarMulAdd(float a, float b, float c) {
#if HWY_NATIVE_FMA
  return std::fma(a, b, c);
#else
  const float ab = a * b;  // its own statement: never contracted
  return ab + c;
#endif
}

// out_i += sum_t p_it (s_tg code_t + z_tg). Per block of N code bytes, the run's tokens stream
// by while the block's class sums (kPer per query) stay in registers; they are added to a
// class-ordered accumulator and permuted back once per run. Zero terms are summed per group.
template <int kBits>
void RowAccumulate(const KvRun& r, const float* HWY_RESTRICT p, int n_q, size_t ldp, float* HWY_RESTRICT out) {
  const DF8 df;
  constexpr size_t kPer = 8 / kBits;
  const size_t N = hn::Lanes(df), hd = size_t(r.head_dim), g = std::min(size_t(r.group), hd);
  const size_t n_groups = hd / g, group_blocks = g * kBits / (8 * N), row_blocks = hd * kBits / (8 * N);
  const int tc = int(std::max<size_t>(1, 1024 / n_groups));  // tokens per sub-run: w fits below
  HWY_ALIGN float acc[kMaxQ][512];
  float zacc[kMaxQ][64];
  // p_it * s_tg of a sub-run's tokens, [t][g], and room for a vector's store past the last.
  float w[kMaxQ][1024 + hn::MaxLanes(DF8())];
  // A token's scales and zero points (contiguous, quant/kv_layout.h) in one vector when they
  // fit: lanes [0, n_groups) the scales, [n_groups, 2 n_groups) the zero points.
  const bool one_vector = 2 * n_groups <= N && n_groups <= 4 && r.zeros_off == r.scales_off + ptrdiff_t(2 * n_groups);
  // At most 8 class sums in registers (classes in slices below).
  ForQueryPasses<kMaxQ>(n_q, [&](auto kq, int i0) {
    constexpr int kQ = decltype(kq)::value;
    hn::Vec<DF8> zv[kQ];  // one_vector: the zero terms' sums in lanes [n_groups, 2 n_groups)
    for (int i = 0; i < kQ; ++i) {
      std::fill(acc[i], acc[i] + hd, 0.0f);
      std::fill(zacc[i], zacc[i] + n_groups, 0.0f);
      zv[i] = hn::Zero(df);
    }
    for (int t0 = 0; t0 < r.n; t0 += tc) {
      const int t1 = std::min(r.n, t0 + tc);
      for (int t = t0; t < t1; ++t) {
        const uint8_t* meta = r.rows + size_t(t) * r.meta_stride;
        if (n_groups == 1) {
          // One scale and zero point: in scalars, the same products and FMAs as the lanes below.
          const float sk = F16ToF32(meta + r.scales_off), zk = F16ToF32(meta + r.zeros_off);
          for (int i = 0; i < kQ; ++i) {
            const float pt = p[size_t(i0 + i) * ldp + size_t(t)];
            w[i][size_t(t - t0)] = pt == 0.0f ? 0.0f : pt * sk;
            if (pt != 0.0f) zacc[i][0] = ScalarMulAdd(pt, zk, zacc[i][0]);
          }
          continue;
        }
        if (one_vector) {
          HWY_ALIGN uint16_t h[8] = {};  // up to 4 scales and 4 zero points
          switch (n_groups) {  // constant sizes: a move or two, not a call
            case 1: std::memcpy(h, meta + r.scales_off, 4); break;
            case 2: std::memcpy(h, meta + r.scales_off, 8); break;
            case 3: std::memcpy(h, meta + r.scales_off, 12); break;
            default: std::memcpy(h, meta + r.scales_off, 16); break;
          }
          const auto sz = hn::PromoteTo(df, hn::Load(hn::Rebind<hwy::float16_t, DF8>(), reinterpret_cast<const hwy::float16_t*>(h)));
          for (int i = 0; i < kQ; ++i) {
            const float pt = p[size_t(i0 + i) * ldp + size_t(t)];
            float* wt = w[i] + size_t(t - t0) * n_groups;
            // A zero weight skips the token whatever its scale (an infinite one included).
            if (pt == 0.0f) {
              hn::StoreU(hn::Zero(df), df, wt);
              continue;
            }
            const auto pv = hn::Set(df, pt);
            hn::StoreU(hn::Mul(pv, sz), df, wt);
            zv[i] = hn::MulAdd(pv, sz, zv[i]);
          }
          continue;
        }
        for (size_t k = 0; k < n_groups; ++k) {
          const float sk = F16ToF32(meta + r.scales_off + 2 * k), zk = F16ToF32(meta + r.zeros_off + 2 * k);
          for (int i = 0; i < kQ; ++i) {
            const float pt = p[size_t(i0 + i) * ldp + size_t(t)];
            w[i][size_t(t - t0) * n_groups + k] = pt == 0.0f ? 0.0f : pt * sk;
            if (pt != 0.0f) zacc[i][k] += pt * zk;
          }
        }
      }
      // A block's classes in slices of kC, so that kQ * kC sums stay in registers (2-bit codes
      // with 4 queries: two slices, each widening the bytes again but sharing them by 4 queries).
      constexpr size_t kC = std::min<size_t>(kPer, 8 / size_t(kQ));
      for (size_t blk = 0; blk < row_blocks; ++blk) {
        const size_t k = blk / group_blocks;
        auto slice = [&](auto lo_) {
          constexpr size_t kLo = decltype(lo_)::value;
          hn::Vec<DF8> a[kQ][kC];
          for (int i = 0; i < kQ; ++i) {
            for (size_t c = 0; c < kC; ++c) a[i][c] = hn::Zero(df);
          }
          for (int t = t0; t < t1; ++t) {
            hn::Vec<DF8> wt[kQ];
            for (int i = 0; i < kQ; ++i) wt[i] = hn::Set(df, w[i][size_t(t - t0) * n_groups + k]);
            ForClasses<kBits, kLo, kC>(r.rows + size_t(t) * r.stride + blk * N, [&](size_t c, hn::Vec<DF8> codes) {
              for (int i = 0; i < kQ; ++i) a[i][c - kLo] = hn::MulAdd(wt[i], codes, a[i][c - kLo]);
            });
          }
          for (int i = 0; i < kQ; ++i) {
            for (size_t c = 0; c < kC; ++c) {
              float* dst = acc[i] + (blk * kPer + kLo + c) * N;
              hn::Store(hn::Add(hn::Load(df, dst), a[i][c]), df, dst);
            }
          }
        };
        static_assert(kPer == kC || kPer == 2 * kC);
        slice(std::integral_constant<size_t, 0>());
        if constexpr (kC < kPer) slice(std::integral_constant<size_t, kC>());
      }
    }
    for (int i = 0; i < kQ; ++i) {
      if (one_vector && n_groups > 1) {
        HWY_ALIGN float z[hn::MaxLanes(DF8())];
        hn::Store(zv[i], df, z);
        std::copy(z + n_groups, z + 2 * n_groups, zacc[i]);
      }
      // Back to natural order; a block of kPer * N channels lies in one group (ClassBlocksFit).
      float* o = out + size_t(i0 + i) * hd;
      for (size_t c0 = 0, ci = 0; c0 < hd; c0 += kPer * N) {
        const float z = zacc[i][c0 / g];
        for (size_t k = 0; k < kPer; ++k) {
          for (size_t b = 0; b < N; ++b) o[c0 + b * kPer + k] += acc[i][ci++] + z;
        }
      }
    }
  });
}

// 2- and 4-bit per-token groups (KIVI values, int2, int4) accumulated in integers
// (specification: ref::uniform_row_accumulate_ref): a run's weights w_tg = p_t s_tg rounded to
// uint8 with one scale d per run and query, then out_c += d sum_t w8_t,g(c) code_tc + sum_t p_t
// z_t,g(c). On AVX2 the code bytes of two tokens are interleaved (punpcklbw), so one pmaddubsw
// per class (8 / bits of them per byte) multiplies 16 channels of both by their two weights (w8
// unsigned, codes signed) into int16 sums: at 2 bits ~18 instructions per 128-value token
// against ~125 for float FMAs. A product pair is at most 2 * 255 * (2^bits - 1) (1,530 or
// 7,650), so the sums, all non-negative, are widened to int32 as unsigned every 16 pairs (2
// bits) or 8 (4 bits: 61,200 < 2^16).
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
// Queries per call of RowAccumulateI8: two where the registers hold both's class sums (up to 16
// vectors; AVX-512 has 32), else one. With grouped-query attention (Llama-3-8B's shape, four
// queries per KV head) two at a time took int4's, kivi-2's and kivi-4's attention at 32K tokens
// 7-14% faster (docs/PERFORMANCE.md).
inline constexpr int kI8Queries = HWY_TARGET <= HWY_AVX3 ? 2 : 1;
// Whether the kernel takes 512-bit steps (AVX-512): pass 1 two tokens per vector (even in the
// low half, odd in the high; the zero terms still summed token after token, as the reference
// does), pass 2 four tokens per vector, the main loop two pairs of rows (four of half rows) side
// by side in the halves of each vector: the same integers summed, so the same results
// (FusedAttention.WideIntegerKernelsEqualAvx2BitForBit). The 256-bit form left half of a
// full-width AVX-512 core (this Zen 5) idle; with the key kernel's wide form (ColsScoresI8)
// kivi-2's attention in cache took 8-17% less time (docs/PERFORMANCE.md, "Integer kernels in
// 512-bit vectors").
inline constexpr bool kI8Wide = HWY_TARGET <= HWY_AVX3;

// Whether the kernel takes a run (one whose weights are rounded, value_weights_in_integers: 2 or
// 4 bits, checked by its caller): rows of whole 32-byte vectors (kNv of them) or of
// 16 bytes (kNv -1: rows t, t + 2 and t + 1, t + 3 share vectors), up to 4 groups of a multiple
// of 32 values whose scales and zero points are one vector (RowAccumulate's one_vector), at most
// kAttentionChunk tokens.
inline int RowI8Vectors(const KvRun& r) {
  const size_t hd = size_t(r.head_dim), g = std::min(size_t(r.group), hd), n_groups = hd / g;
  const size_t rb = hd * size_t(r.bits) / 8;
  if (hd % g != 0 || g % 32 != 0 || n_groups == 3 || n_groups > 4 || r.n > 1024 ||
      r.zeros_off != r.scales_off + ptrdiff_t(2 * n_groups)) {
    return 0;
  }
  if (rb == 16) return -1;
  return rb % 32 == 0 && rb <= 128 ? int(rb / 32) : 0;
}

HWY_INLINE int Load32(const uint8_t* m) {
  int x;
  std::memcpy(&x, m, 4);
  return x;
}

// Shuffle controls of RowAccumulateI8: int16 lane j of half h (punpckl/h) in 128-bit lane L
// reads its pair's two weights of the group of its code byte b = 32 jv + 16 L + 8 h + j (kHalf:
// b = 8 h + j in both lanes), group b * kG / (bytes per row).
template <int kNv, int kG>
struct RowI8Ctl {
  static constexpr int kVecs = kNv < 0 ? 1 : kNv, kRowBytes = kNv < 0 ? 16 : 32 * kVecs;
  alignas(32) static constexpr std::array<std::array<std::array<uint8_t, 32>, 2>, kVecs> kBytes = [] {
    std::array<std::array<std::array<uint8_t, 32>, 2>, kVecs> c{};
    for (int jv = 0; jv < kVecs; ++jv) {
      for (int h = 0; h < 2; ++h) {
        for (int L = 0; L < 2; ++L) {
          for (int j = 0; j < 8; ++j) {
            const int b = kNv < 0 ? 8 * h + j : 32 * jv + 16 * L + 8 * h + j, grp = b * kG / kRowBytes;
            c[size_t(jv)][size_t(h)][size_t(16 * L + 2 * j)] = uint8_t(2 * grp);
            c[size_t(jv)][size_t(h)][size_t(16 * L + 2 * j + 1)] = uint8_t(2 * grp + 1);
          }
        }
      }
    }
    return c;
  }();
};

// kQ queries at once (p: query 0's probabilities, queries ldp apart; out: [kQ][head_dim]): the
// code bytes are loaded, interleaved and split into classes once for all of them, and each
// query's pmaddubsw sums its own weights. Each query's integers and floats are those it gets
// alone, so results do not depend on how the queries are grouped.
template <int kBits, int kNv, int kG, int kQ>
void RowAccumulateI8(const KvRun& r, const float* HWY_RESTRICT p, size_t ldp, float* HWY_RESTRICT out) {
  constexpr int kPer = 8 / kBits, kFlushPairs = kBits == 2 ? 16 : 8;
  constexpr bool kHalf = kNv < 0;
  constexpr int nv = kHalf ? 1 : kNv;
  const size_t hd = size_t(r.head_dim), g = hd / kG;
  // A token's kG scales and kG zero points (contiguous, quant/kv_layout.h), as one vector.
  auto token_sz = [&](int t) {
    const uint8_t* m = r.rows + size_t(t) * r.meta_stride + r.scales_off;
    __m128i h;
    if constexpr (kG == 1) h = _mm_cvtsi32_si128(Load32(m));
    if constexpr (kG == 2) h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(m));
    if constexpr (kG == 4) h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(m));
    return _mm256_cvtph_ps(h);
  };
  // Pairs of rows per step of the main loop: 2 (4 with half rows) in 256-bit vectors, twice
  // that in 512-bit ones; the weights are padded to whole steps (zero past r.n).
  constexpr int kStepPairs = (kHalf ? 2 : 1) * (kI8Wide ? 2 : 1);
  const int n_pairs = (r.n + 1) / 2, n_pairs_pad = (n_pairs + kStepPairs - 1) / kStepPairs * kStepPairs;
  // Per query: pass 1, each token's weights p_t s_tg (lanes [0, kG), 0 where p_t is 0, and past
  // r.n up to whole steps), the largest, and the zero terms' sums (lanes [kG,
  // 2 kG)); pass 2, w8 of tokens 2P, 2P + 1 interleaved by group, 16 bytes per pair (zero past
  // r.n, and everywhere for a query whose weights are all zero or not finite).
  // Pass 1 takes the tokens outermost, so that each token's scales are loaded once and the
  // queries' running maxima and sums are independent chains.
  HWY_ALIGN float wt[kQ][1024 + 8][4];
  __m256 wmax[kQ], bad[kQ], zv[kQ];
  for (int i = 0; i < kQ; ++i) wmax[i] = bad[i] = zv[i] = _mm256_setzero_ps();
#if HWY_TARGET <= HWY_AVX3
  if constexpr (kI8Wide) {  // two tokens at a time, even in the low half, odd in the high (maxima and sums order-free)
    __m512 wmax5[kQ], bad5[kQ];
    for (int i = 0; i < kQ; ++i) wmax5[i] = bad5[i] = _mm512_setzero_ps();
    for (int t = 0; t < r.n; t += 2) {
      const bool two = t + 1 < r.n;
      const __m512 sz = _mm512_insertf32x8(_mm512_castps256_ps512(token_sz(t)), two ? token_sz(t + 1) : _mm256_setzero_ps(), 1);
      for (int i = 0; i < kQ; ++i) {
        const float p0 = p[size_t(i) * ldp + size_t(t)], p1 = two ? p[size_t(i) * ldp + size_t(t) + 1] : 0.0f;
        const __m512 pv = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(p0)), _mm256_set1_ps(p1), 1);
        const __mmask16 m = _mm512_cmp_ps_mask(pv, _mm512_setzero_ps(), _CMP_NEQ_UQ);  // as the 256-bit pass's p_t != 0
        const __m512 w = _mm512_maskz_mul_ps(m, pv, sz);
        _mm_store_ps(wt[i][t], _mm512_castps512_ps128(w));
        _mm_store_ps(wt[i][t + 1], _mm512_extractf32x4_ps(w, 2));  // zero past r.n (wt is padded)
        wmax5[i] = _mm512_mask_max_ps(wmax5[i], m, wmax5[i], w);
        bad5[i] = _mm512_mask_add_ps(bad5[i], m, bad5[i], w);
        // The zero terms' sums token after token, as the 256-bit pass (and the reference) add them.
        if (p0 != 0.0f) zv[i] = _mm256_fmadd_ps(_mm512_castps512_ps256(pv), _mm512_castps512_ps256(sz), zv[i]);
        if (p1 != 0.0f) zv[i] = _mm256_fmadd_ps(_mm256_set1_ps(p1), _mm512_extractf32x8_ps(sz, 1), zv[i]);
      }
    }
    for (int i = 0; i < kQ; ++i) {
      auto lo = [](__m512 x) { return _mm512_castps512_ps256(x); };
      auto hi = [](__m512 x) { return _mm512_extractf32x8_ps(x, 1); };
      wmax[i] = _mm256_max_ps(lo(wmax5[i]), hi(wmax5[i]));
      bad[i] = _mm256_add_ps(lo(bad5[i]), hi(bad5[i]));
    }
  } else
#endif
  {
    for (int t = 0; t < r.n; ++t) {
      const __m256 sz = token_sz(t);
      for (int i = 0; i < kQ; ++i) {
        const float pt = p[size_t(i) * ldp + size_t(t)];
        if (pt == 0.0f) {
          _mm_store_ps(wt[i][t], _mm_setzero_ps());
          continue;
        }
        const __m256 pv = _mm256_set1_ps(pt), w = _mm256_mul_ps(pv, sz);
        _mm_store_ps(wt[i][t], _mm256_castps256_ps128(w));
        wmax[i] = _mm256_max_ps(wmax[i], w);
        bad[i] = _mm256_add_ps(bad[i], w);
        zv[i] = _mm256_fmadd_ps(pv, sz, zv[i]);
      }
    }
  }
  HWY_ALIGN uint8_t wb[kQ][(1024 / 2 + 4) * 16];
  HWY_ALIGN float zl[kQ][8];
  float d[kQ];
  bool any_kept = false;  // else the sums are all zero: the codes are not read
  for (int i = 0; i < kQ; ++i) {
    for (int t = r.n; t < 2 * n_pairs_pad; ++t) _mm_store_ps(wt[i][t], _mm_setzero_ps());
    HWY_ALIGN float wl[8], bl[8];
    _mm256_store_ps(wl, wmax[i]);
    _mm256_store_ps(bl, bad[i]);
    _mm256_store_ps(zl[i], zv[i]);
    float wm = 0.0f;
    bool finite = true;
    for (int k = 0; k < kG; ++k) {
      wm = std::max(wm, wl[k]);
      finite = finite && std::isfinite(wl[k]) && !std::isnan(bl[k]);
    }
    const bool kept = finite && wm >= kRoundedMaxFloor;  // else every w8 zero
    d[i] = !finite ? NAN : kept ? wm / 255.0f : 0.0f;
    uint8_t* wbi = wb[i];
    if (!kept) {
      std::memset(wbi, 0, 16 * size_t(n_pairs_pad));
      continue;
    }
    any_kept = true;
    const __m128 id = _mm_set1_ps(255.0f / wm);
#if HWY_TARGET <= HWY_AVX3
    if constexpr (kI8Wide) {  // two pairs at a time, each pair's 8 bytes as below (no copy in bytes 8-15)
      const __m512 id5 = _mm512_set1_ps(255.0f / wm);
      const __m512i order = _mm512_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15);
      for (int P = 0; P < n_pairs_pad; P += 2) {
        const __m512i a = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(wt[i][2 * P]), id5));
        // clamp to [0, 255] as packs_epi32 then packus_epi16 do
        const __m128i b = _mm512_cvtusepi32_epi8(_mm512_max_epi32(_mm512_permutexvar_epi32(order, a), _mm512_setzero_si512()));
        _mm_storel_epi64(reinterpret_cast<__m128i*>(wbi + 16 * size_t(P)), b);
        _mm_storel_epi64(reinterpret_cast<__m128i*>(wbi + 16 * size_t(P + 1)), _mm_unpackhi_epi64(b, b));
      }
      continue;
    }
#endif
    for (int P = 0; P < n_pairs_pad; ++P) {
      const __m128i a = _mm_cvtps_epi32(_mm_mul_ps(_mm_load_ps(wt[i][2 * P]), id));
      const __m128i b = _mm_cvtps_epi32(_mm_mul_ps(_mm_load_ps(wt[i][2 * P + 1]), id));
      const __m128i w16 = _mm_packs_epi32(_mm_unpacklo_epi32(a, b), _mm_unpackhi_epi32(a, b));
      _mm_store_si128(reinterpret_cast<__m128i*>(wbi + 16 * size_t(P)), _mm_packus_epi16(w16, w16));
    }
  }
  HWY_ALIGN int32_t isum[kQ][nv * 2 * kPer * 16];  // class-position order, below
  for (int i = 0; i < kQ; ++i) {
    for (size_t j = 0; j < sizeof(isum[i]) / 32; ++j) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(isum[i]) + j, _mm256_setzero_si256());
    }
  }
  __m256i ctl[nv][2];
  for (int jv = 0; jv < nv; ++jv) {
    for (int h = 0; h < 2; ++h) ctl[jv][h] = _mm256_load_si256(reinterpret_cast<const __m256i*>(RowI8Ctl<kNv, kG>::kBytes[jv][h].data()));
  }
  const __m256i mask = _mm256_set1_epi8((1 << kBits) - 1);
  __m256i acc[kQ][nv][2][kPer];
  auto zero_acc = [&] {
    for (auto& q : acc) for (auto& a : q) for (auto& b : a) for (auto& x : b) x = _mm256_setzero_si256();
  };
  auto flush = [&] {  // uint16 sums into isum[i][((jv * 2 + h) * kPer + k) * 16 + lane]
    for (int i = 0; i < kQ; ++i) {
      for (int jv = 0; jv < nv; ++jv) {
        for (int h = 0; h < 2; ++h) {
          for (int k = 0; k < kPer; ++k) {
            int32_t* dst = isum[i] + ((jv * 2 + h) * kPer + k) * 16;
            const __m256i x = acc[i][jv][h][k];
            auto* d0 = reinterpret_cast<__m256i*>(dst);
            _mm256_store_si256(d0, _mm256_add_epi32(_mm256_load_si256(d0), _mm256_cvtepu16_epi32(_mm256_castsi256_si128(x))));
            _mm256_store_si256(d0 + 1, _mm256_add_epi32(_mm256_load_si256(d0 + 1),
                                                        _mm256_cvtepu16_epi32(_mm256_extracti128_si256(x, 1))));
          }
        }
      }
    }
    zero_acc();
  };
  // acc[.][jv][.] += the products of the interleaved code bytes of two rows (or pairs) xa, xb,
  // pair P's weights of each query.
  auto step = [&](int jv, __m256i xa, __m256i xb, const auto& weights) {
    const __m256i il[2] = {_mm256_unpacklo_epi8(xa, xb), _mm256_unpackhi_epi8(xa, xb)};
    for (int h = 0; h < 2; ++h) {
      __m256i codes[kPer];
      codes[0] = _mm256_and_si256(il[h], mask);
      for (int k = 1; k < kPer; ++k) codes[k] = _mm256_and_si256(_mm256_srli_epi16(il[h], k * kBits), mask);
      for (int i = 0; i < kQ; ++i) {
        const __m256i w = _mm256_shuffle_epi8(weights(i), ctl[jv][h]);
        for (int k = 0; k < kPer; ++k) acc[i][jv][h][k] = _mm256_add_epi16(acc[i][jv][h][k], _mm256_maddubs_epi16(w, codes[k]));
      }
    }
  };
  const uint8_t* rows = r.rows;
  auto row128 = [&](int t) {
    return t < r.n ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows + size_t(t) * r.stride)) : _mm_setzero_si128();
  };
#if HWY_TARGET <= HWY_AVX3
  if (any_kept && kI8Wide) {
    __m512i ctl5[nv][2];
    for (int jv = 0; jv < nv; ++jv) {
      for (int h = 0; h < 2; ++h) ctl5[jv][h] = _mm512_broadcast_i64x4(ctl[jv][h]);
    }
    const __m512i mask5 = _mm512_set1_epi8((1 << kBits) - 1);
    __m512i acc5[kQ][nv][2][kPer];
    auto zero5 = [&] {
      for (auto& q : acc5) for (auto& a : q) for (auto& b : a) for (auto& x : b) x = _mm512_setzero_si512();
    };
    auto flush5 = [&] {  // both halves' uint16 sums into isum, as flush
      for (int i = 0; i < kQ; ++i) {
        for (int jv = 0; jv < nv; ++jv) {
          for (int h = 0; h < 2; ++h) {
            for (int k = 0; k < kPer; ++k) {
              int32_t* dst = isum[i] + ((jv * 2 + h) * kPer + k) * 16;
              const __m512i x = acc5[i][jv][h][k];
              const __m512i sum = _mm512_add_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(x)),
                                                   _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(x, 1)));
              _mm512_storeu_si512(dst, _mm512_add_epi32(_mm512_loadu_si512(dst), sum));
            }
          }
        }
      }
      zero5();
    };
    auto step5 = [&](int jv, __m512i xa, __m512i xb, const __m512i* wv) {  // step, two 256-bit halves at once
      const __m512i il[2] = {_mm512_unpacklo_epi8(xa, xb), _mm512_unpackhi_epi8(xa, xb)};
      for (int h = 0; h < 2; ++h) {
        __m512i codes[kPer];
        codes[0] = _mm512_and_si512(il[h], mask5);
        for (int k = 1; k < kPer; ++k) codes[k] = _mm512_and_si512(_mm512_srli_epi16(il[h], k * kBits), mask5);
        for (int i = 0; i < kQ; ++i) {
          const __m512i w = _mm512_shuffle_epi8(wv[i], ctl5[jv][h]);
          for (int k = 0; k < kPer; ++k) acc5[i][jv][h][k] = _mm512_add_epi16(acc5[i][jv][h][k], _mm512_maddubs_epi16(w, codes[k]));
        }
      }
    };
    zero5();
    int since = 0;
    __m512i wv[kQ];
    if constexpr (kHalf) {
      for (int P = 0; P < n_pairs; P += 4) {  // rows 2P..2P+7, pair P + L in 128-bit lane L
        const int t = 2 * P;
        __m512i xa = _mm512_castsi128_si512(row128(t)), xb = _mm512_castsi128_si512(row128(t + 1));
        xa = _mm512_inserti32x4(xa, row128(t + 2), 1), xb = _mm512_inserti32x4(xb, row128(t + 3), 1);
        xa = _mm512_inserti32x4(xa, row128(t + 4), 2), xb = _mm512_inserti32x4(xb, row128(t + 5), 2);
        xa = _mm512_inserti32x4(xa, row128(t + 6), 3), xb = _mm512_inserti32x4(xb, row128(t + 7), 3);
        for (int i = 0; i < kQ; ++i) wv[i] = _mm512_loadu_si512(wb[i] + 16 * size_t(P));
        step5(0, xa, xb, wv);
        if (++since == kFlushPairs) flush5(), since = 0;
      }
    } else {
      auto row256 = [&](int t, int jv) {
        return t < r.n ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows + size_t(t) * r.stride + 32 * size_t(jv)))
                       : _mm256_setzero_si256();
      };
      for (int P = 0; P < n_pairs; P += 2) {  // rows 2P..2P+3, pair P in the low half, P + 1 in the high
        const int t = 2 * P;
        for (int i = 0; i < kQ; ++i) {
          const __m512i x = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb[i] + 16 * size_t(P))));
          wv[i] = _mm512_shuffle_i64x2(x, x, 0x50);  // 128-bit lanes 0, 0, 1, 1
        }
        for (int jv = 0; jv < nv; ++jv) {
          const __m512i xa = _mm512_inserti64x4(_mm512_castsi256_si512(row256(t, jv)), row256(t + 2, jv), 1);
          const __m512i xb = _mm512_inserti64x4(_mm512_castsi256_si512(row256(t + 1, jv)), row256(t + 3, jv), 1);
          step5(jv, xa, xb, wv);
        }
        if (++since == kFlushPairs) flush5(), since = 0;
      }
    }
    flush5();
  }
#endif
  if (any_kept && !kI8Wide) {
    zero_acc();
    int since = 0;
    if constexpr (kHalf) {
      for (int P = 0; P < n_pairs; P += 2) {  // rows 2P..2P+3
        const int t = 2 * P;
        const __m256i xa = _mm256_inserti128_si256(_mm256_castsi128_si256(row128(t)), row128(t + 2), 1);
        const __m256i xb = _mm256_inserti128_si256(_mm256_castsi128_si256(row128(t + 1)), row128(t + 3), 1);
        step(0, xa, xb, [&](int i) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(wb[i] + 16 * size_t(P))); });
        if (++since == kFlushPairs) flush(), since = 0;
      }
    } else {
      for (int P = 0; P < n_pairs; ++P) {
        const int t = 2 * P;
        __m256i wbv[kQ];
        for (int i = 0; i < kQ; ++i) {
          wbv[i] = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(wb[i] + 16 * size_t(P))));
        }
        const uint8_t* ra = rows + size_t(t) * r.stride;
        const uint8_t* rb = rows + size_t(t + 1) * r.stride;
        for (int jv = 0; jv < nv; ++jv) {
          const __m256i xa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ra + 32 * jv));
          const __m256i xb = t + 1 < r.n ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rb + 32 * jv))
                                         : _mm256_setzero_si256();
          step(jv, xa, xb, [&](int i) { return wbv[i]; });
        }
        if (++since == kFlushPairs) flush(), since = 0;
      }
    }
    flush();
  }
  // Channel c = kPer b + k of code byte b: isum position ((jv * 2 + h) * kPer + k) * 16 + 8 L + j
  // with b = 32 jv + 16 L + 8 h + j (kHalf: b = 8 h + j, both lanes L summed). The classes of 8
  // bytes, 8 kPer channels in one group (g % 32 == 0), are interleaved back in one kPer x 8
  // transpose.
  for (int i = 0; i < kQ; ++i) {
    const __m256 dv = _mm256_set1_ps(d[i]);
    for (int jv = 0; jv < nv; ++jv) {
      for (int L = 0; L < (kHalf ? 1 : 2); ++L) {
        for (int h = 0; h < 2; ++h) {
          const size_t b0 = kHalf ? size_t(8 * h) : size_t(32 * jv + 16 * L + 8 * h);
          __m256 v[kPer];
          for (int k = 0; k < kPer; ++k) {
            const int32_t* q = isum[i] + ((jv * 2 + h) * kPer + k) * 16;
            __m256i x = _mm256_load_si256(reinterpret_cast<const __m256i*>(q + 8 * L));
            if (kHalf) x = _mm256_add_epi32(x, _mm256_load_si256(reinterpret_cast<const __m256i*>(q + 8)));
            v[k] = _mm256_cvtepi32_ps(x);
          }
          __m256 nat[kPer];
          const __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]), t1 = _mm256_unpackhi_ps(v[0], v[1]);
          if constexpr (kPer == 4) {
            const __m256 t2 = _mm256_unpacklo_ps(v[2], v[3]), t3 = _mm256_unpackhi_ps(v[2], v[3]);
            const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
            const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
            nat[0] = _mm256_permute2f128_ps(u0, u1, 0x20);
            nat[1] = _mm256_permute2f128_ps(u2, u3, 0x20);
            nat[2] = _mm256_permute2f128_ps(u0, u1, 0x31);
            nat[3] = _mm256_permute2f128_ps(u2, u3, 0x31);
          } else {
            nat[0] = _mm256_permute2f128_ps(t0, t1, 0x20);
            nat[1] = _mm256_permute2f128_ps(t0, t1, 0x31);
          }
          const __m256 z = _mm256_set1_ps(zl[i][size_t(kG) + size_t(kPer) * b0 / g]);
          float* o = out + size_t(i) * hd + size_t(kPer) * b0;
          for (int m = 0; m < kPer; ++m) {
            _mm256_storeu_ps(o + 8 * m, _mm256_add_ps(_mm256_loadu_ps(o + 8 * m), _mm256_add_ps(_mm256_mul_ps(dv, nat[m]), z)));
          }
        }
      }
    }
  }
}
#endif

bool AccumulateRunUniform(const KvRun& r, const float* p, int n_q, size_t ldp, float* out) {
  if (value_weights_in_integers(r)) {  // in integers (RowAccumulateI8); other targets and shapes: the reference
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
    const size_t hd = size_t(r.head_dim);
    const int nv = RowI8Vectors(r);
    if (nv == 0) return false;
    const int n_groups = r.head_dim / std::min(r.group, r.head_dim);
    auto run = [&](auto kv, auto kg) {
      ForQueryPasses<kI8Queries>(n_q, [&](auto kq, int i0) {
        constexpr int kQ = decltype(kq)::value;
        const float* pi = p + size_t(i0) * ldp;
        float* oi = out + size_t(i0) * hd;
        if (r.bits == 2) RowAccumulateI8<2, kv(), kg(), kQ>(r, pi, ldp, oi);
        if (r.bits == 4) RowAccumulateI8<4, kv(), kg(), kQ>(r, pi, ldp, oi);
      });
    };
    auto with_groups = [&](auto kv) {
      if (n_groups == 1) return run(kv, std::integral_constant<int, 1>());
      if (n_groups == 2) return run(kv, std::integral_constant<int, 2>());
      run(kv, std::integral_constant<int, 4>());
    };
    switch (nv) {
      case -1: with_groups(std::integral_constant<int, -1>()); break;
      case 1: with_groups(std::integral_constant<int, 1>()); break;
      case 2: with_groups(std::integral_constant<int, 2>()); break;
      case 3: with_groups(std::integral_constant<int, 3>()); break;
      default: with_groups(std::integral_constant<int, 4>()); break;
    }
    return true;
#else
    return false;
#endif
  }
  return WithClassBlocks(r, [&](auto b) { RowAccumulate<b()>(r, p, n_q, ldp, out); });
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq::cpu {
HWY_EXPORT(AccumulateRunUniform);
bool accumulate_run_uniform(const KvRun& run, const float* p, int n_q, size_t ld, float* out) {
  return HWY_DYNAMIC_DISPATCH(AccumulateRunUniform)(run, p, n_q, ld, out);
}
}  // namespace kvq::cpu
#endif
