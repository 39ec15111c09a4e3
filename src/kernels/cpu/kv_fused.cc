// SPDX-License-Identifier: MIT
// Fused attention kernels over packed runs for one or two queries (decode without GQA sharing):
// scores and value accumulation straight from the codes, no f32 tile. Scores use
//   q . x' = sum_blocks d_qb d_b (q8_b . codes_b)  (ggml blocks; q8: the query in q8_0)
//   q . x' = d sum_c w8_c code_c + q . z           (KIVI keys; w8, d: w = q * s in int8 per block)
//   q . x' = sum_g s_g (q_g . codes_g) + z_g sum(q_g) (per-token groups)
// and accumulation out += (p s) code + p z (2-bit: d w8 code, w8 = p s in uint8 per run); KVQuant
// values (codebook rows) accumulate
//   out += (p half) level[code] + p zero,  then  out[i] += p c_i per outlier (c_i = x_i - dense_i, stored).
// q4_0 / q8_0 keys are scored against the query rounded to q8_0 (as llama.cpp does), KIVI keys
// against each block's weighted query rounded to int8 (ref::uniform_cols_scores_ref), in integers.
// Specification: decode_run_ref, then dot / axpy (with the rounded query; KIVI keys:
// uniform_cols_scores_ref);
// results agree within float reassociation (tested against attention over read()).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/kv_fused.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/cpu/kv_fused.h"
#include "kernels/cpu/kv_run-inl.h"
#include "kernels/cpu/lane_sums-inl.h"
#include "quant/bitpack-inl.h"
#include "quant/codebook-inl.h"
#include "quant/ggml_blocks.h"

#ifndef KVQ_KERNELS_KV_FUSED_ONCE
#define KVQ_KERNELS_KV_FUSED_ONCE
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <utility>

#include "quant/normalize.h"
#endif

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

// q4_0 / q8_0: (nibble - 8) or int8 codes j, j + 1, ... of one 32-value block, as int32 lanes
// of di.
template <bool kQ4, class D>
HWY_INLINE hn::Vec<D> BlockCodesI(D di, const uint8_t* HWY_RESTRICT blk, size_t j) {
  if constexpr (kQ4) {
    const auto* qs = reinterpret_cast<const BlockQ4_0*>(blk)->qs;
    const auto b = hn::PromoteTo(di, hn::LoadU(hn::Rebind<uint8_t, D>(), qs + (j & 15)));
    const auto nib = j < 16 ? hn::And(b, hn::Set(di, 15)) : hn::ShiftRight<4>(b);
    return hn::Sub(nib, hn::Set(di, 8));
  } else {
    return hn::PromoteTo(di, hn::LoadU(hn::Rebind<int8_t, D>(), reinterpret_cast<const BlockQ8_0*>(blk)->qs + j));
  }
}

// The same codes as N-lane float vectors.
template <bool kQ4>
HWY_INLINE hn::Vec<DF> BlockCodes(const uint8_t* HWY_RESTRICT blk, size_t j) {
  return hn::ConvertTo(DF(), BlockCodesI<kQ4>(DI(), blk, j));
}

// Uniform codes (KIVI keys, per-token groups) are read N bytes at a time: PromoteTo gives N
// lanes of whole bytes, and lane b shifted right by k * bits and masked is code
// (8 / bits) * b + k of the block, its "class" k. The per-channel float operands (the weighted
// queries, the accumulators) are permuted once per call into this class order, so N codes cost
// a shift, a mask and a convert instead of a byte shuffle and a variable shift per lane, and the
// codes are unpacked once for every query of a GQA group.
using DF8 = hn::CappedTag<float, 8>;
using DU8 = hn::RebindToUnsigned<DF8>;
constexpr int kMaxQ = 4;  // queries per pass: their accumulators stay in registers

// Channels [c0, c0 + kPer * N) in class order: x holds them in natural order (kPer vectors of
// N), out[k * N + b] = channel b * kPer + k (what ClassCodes<kBits, k> multiplies). Even and odd
// lanes split log2(kPer) times: a few shuffles per block instead of a scalar scatter.
template <int kBits>
HWY_INLINE void StoreClassOrder(const hn::Vec<DF8> (&x)[8 / kBits], float* HWY_RESTRICT out) {
  const DF8 df;
  const size_t N = hn::Lanes(df);
#if HWY_TARGET == HWY_SCALAR
  constexpr bool kOneLane = true;  // one lane: class order is natural order
#else
  constexpr bool kOneLane = false;
#endif
  if constexpr (kBits == 8 || kOneLane) {
    for (size_t k = 0; k < 8 / kBits; ++k) hn::Store(x[k], df, out + k * N);
  }
#if HWY_TARGET != HWY_SCALAR
  else if constexpr (kBits == 4) {
    hn::Store(hn::ConcatEven(df, x[1], x[0]), df, out);
    hn::Store(hn::ConcatOdd(df, x[1], x[0]), df, out + N);
  } else if constexpr (kBits == 2) {  // (3 bits never reach here: ClassBlocksFit)
    const auto e0 = hn::ConcatEven(df, x[1], x[0]), e1 = hn::ConcatEven(df, x[3], x[2]);
    const auto o0 = hn::ConcatOdd(df, x[1], x[0]), o1 = hn::ConcatOdd(df, x[3], x[2]);
    hn::Store(hn::ConcatEven(df, e1, e0), df, out);
    hn::Store(hn::ConcatEven(df, o1, o0), df, out + N);
    hn::Store(hn::ConcatOdd(df, e1, e0), df, out + 2 * N);
    hn::Store(hn::ConcatOdd(df, o1, o0), df, out + 3 * N);
  }
#endif
}

// Class k of the N bytes at `bytes`, as float codes.
template <int kBits, int kK>
HWY_INLINE hn::Vec<DF8> ClassCodes(hn::Vec<DU8> b) {
  const DF8 df;
  const DU8 du;
  auto x = b;
  if constexpr (kK > 0) x = hn::ShiftRight<kK * kBits>(x);
  if constexpr (kK + 1 < 8 / kBits) x = hn::And(x, hn::Set(du, (1u << kBits) - 1u));
  return hn::ConvertTo(df, hn::BitCast(hn::RebindToSigned<DF8>(), x));
}

// Calls fn(k, codes of class k) for classes [kLo, kLo + kN) of the N bytes at `bytes`.
template <int kBits, size_t kLo, size_t kN, class Fn>
HWY_INLINE void ForClasses(const uint8_t* HWY_RESTRICT bytes, const Fn& fn) {
  const DU8 du;
  const auto b = hn::PromoteTo(du, hn::LoadU(hn::Rebind<uint8_t, DU8>(), bytes));
  [&]<size_t... I>(std::index_sequence<I...>) {
    (fn(kLo + I, ClassCodes<kBits, int(kLo + I)>(b)), ...);
  }(std::make_index_sequence<kN>());
}

// Calls fn(k, codes of class k) for each class of the N bytes at `bytes`.
template <int kBits, class Fn>
HWY_INLINE void ForEachClass(const uint8_t* HWY_RESTRICT bytes, const Fn& fn) {
  ForClasses<kBits, 0, (kBits <= 2 ? 4 : kBits <= 4 ? 2 : 1)>(bytes, fn);
}

// Whether a uniform run's codes split into whole N-byte blocks, each inside one group.
template <int kBits>
bool ClassBlocksFit(const KvRun& r) {
  const size_t N = hn::Lanes(DF8()), hd = size_t(r.head_dim);
  if (kBits == 3 || hd > 512 || hd * kBits % (8 * N) != 0) return false;
  if (r.format != KvFormat::kUniformRow) return true;
  const size_t g = std::min(size_t(r.group), hd);
  return hd % g == 0 && g * kBits % (8 * N) == 0 && hd / g <= 64;
}

// Calls run_q(std::integral_constant<int, kQ>(), i0) over queries [0, n_q) in passes of at
// most kMax (a power of two). Each query's arithmetic is the same in every pass size.
template <size_t kMax = kMaxQ, class Fn>
HWY_INLINE void ForQueryPasses(int n_q, const Fn& run_q) {
  int i = 0;
  if constexpr (kMax >= 4) {
    for (; i + 4 <= n_q; i += 4) run_q(std::integral_constant<int, 4>(), i);
  }
  if constexpr (kMax >= 2) {
    for (; i + 2 <= n_q; i += 2) run_q(std::integral_constant<int, 2>(), i);
  }
  for (; i < n_q; ++i) run_q(std::integral_constant<int, 1>(), i);
}

// Calls fn(std::integral_constant<int, head_dim>()) for the head sizes the models use (64,
// 128) on targets of 8 lanes or more, else fn(std::integral_constant<int, 0>()): kernels whose
// rows unroll fully at a compile-time size.
template <class Fn>
HWY_INLINE void WithHeadDim(int head_dim, const Fn& fn) {
  if constexpr (hn::MaxLanes(DF()) >= 8) {
    if (head_dim == 64) return fn(std::integral_constant<int, 64>());
    if (head_dim == 128) return fn(std::integral_constant<int, 128>());
  }
  fn(std::integral_constant<int, 0>());
}

// Independent accumulator chains per query, so that a row's FMAs do not wait on each other's
// latency (a single chain bounds a 128-value row to ~64 cycles). The count is the same for
// every pass size, so a query's sums do not depend on how many queries share its pass (prefill
// and decode agree); score passes take at most kScoreQ queries so that kScoreQ * kChains
// accumulators fit the registers.
inline constexpr size_t kChains = 2;
inline constexpr size_t kScoreQ = 4;

template <class V, size_t kN>
HWY_INLINE V SumChains(const V (&a)[kN]) {
  V sum = a[0];
  for (size_t i = 1; i < kN; ++i) sum = hn::Add(sum, a[i]);
  return sum;
}


// s[i * lds] = (GetLane(SumOfLanes(a[i])) + add[i]) * scale for the kQ sums of a score pass
// (add null: nothing added), bit for bit the same whichever way the lanes are summed; on AVX2
// four queries' sums go through one transpose (SumOfLanes4).
template <int kQ, class V>
HWY_INLINE void StoreScores(const V (&a)[kQ], const float* HWY_RESTRICT add, float scale, float* HWY_RESTRICT s,
                            size_t lds) {
#if HWY_TARGET == HWY_AVX2
  if constexpr (kQ == 4 && sizeof(V) == 32) {
    const hn::Full256<float> d;
    const hn::Vec256<float> all[4] = {a[0], a[1], a[2], a[3]};
    HWY_ALIGN float sums[8];
    if (add) {
      hn::Store(SumOfLanes4(all), d, sums);
      for (int i = 0; i < kQ; ++i) s[size_t(i) * lds] = (sums[i % 2 * 4 + i / 2] + add[i]) * scale;
    } else {
      hn::Store(hn::Mul(SumOfLanes4(all), hn::Set(d, scale)), d, sums);
      for (int i = 0; i < kQ; ++i) s[size_t(i) * lds] = sums[i % 2 * 4 + i / 2];
    }
    return;
  }
#endif
  const hn::DFromV<V> d;
  for (int i = 0; i < kQ; ++i) {
    float x = hn::GetLane(hn::SumOfLanes(d, a[i]));
    if (add) x += add[i];
    s[size_t(i) * lds] = x * scale;
  }
}

// Rows of a score pass 8 at a time, from *t on while 8 are left: block(t0, keep) calls
// keep(t, sums) with the kQ vectors of partial sums of each row t in [t0, t0 + 8), and their
// scores are stored 8 at a time, GetLane(SumOfLanes(sums[i])) * scale for row t at
// s[i * lds + t]: bit for bit what StoreScores stores, the lanes of 8 rows summed in one
// transpose (SumOfLanes8), ~13 instructions a row with its stores instead of ~25 (measured;
// AVX2, elsewhere rows are left to the caller's StoreScores). *t: the first row not stored.
template <int kQ, class Block>
HWY_INLINE void ForRowsOf8(int n, float scale, float* HWY_RESTRICT s, size_t lds, int* t, const Block& block) {
#if HWY_TARGET == HWY_AVX2
  const hn::Full256<float> d;
  HWY_ALIGN float buf[kQ][8][8];
  for (; *t + 8 <= n; *t += 8) {
    const int t0 = *t;
    block(t0, [&](int tw, const hn::Vec256<float>(&sums)[kQ]) {
      for (int i = 0; i < kQ; ++i) hn::Store(sums[i], d, buf[i][tw - t0]);
    });
    for (int i = 0; i < kQ; ++i) {
      hn::Vec256<float> rows8[8];
      for (int w = 0; w < 8; ++w) rows8[w] = hn::Load(d, buf[i][w]);
      hn::StoreU(hn::Mul(SumOfLanes8(rows8), hn::Set(d, scale)), d, s + size_t(i) * lds + size_t(t0));
    }
  }
#else
  (void)n, (void)scale, (void)s, (void)lds, (void)t, (void)block;
#endif
}

// q4_0 / q8_0 keys against queries rounded to q8_0 blocks, as llama.cpp scores them (q8_0 is
// ggml's vec_dot_type for both): q . x' = sum_b d_qb d_kb sum_j q_bj c_bj, the inner sums in
// integers (exact), c = nibble - 8 or the int8 code. Lanes of int32 partial sums of a block,
// converted to float, times d_qb, times d_kb into the query's row sum. On AVX2 a block is one
// pmaddubsw + pmaddwd per query (unsigned nibbles times the signed query; the -8 as
// 8 * sum(q) per lane, once per query block); elsewhere the same sums, widened to int32.
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
// Block b of a query: its 32 int8 values, and 8 * (the sums of each 4 of them) for q4_0 keys.
struct QueryBlockI8 {
  __m256i q, q4_offset;
};
HWY_INLINE QueryBlockI8 LoadQueryBlock(const BlockQ8_0& b) {
  const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
  const __m256i off = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(8), q), _mm256_set1_epi16(1));
  return {q, off};
}
// The block's 32 codes as bytes in value order: nibbles 0..15 (q4_0: the low nibbles, then
// the high ones), or the int8 codes.
template <bool kQ4>
HWY_INLINE __m256i KeyBlockBytes(const uint8_t* HWY_RESTRICT blk) {
  if constexpr (kQ4) {  // the 16 bytes in both halves, the upper half shifted down a nibble
    const __m256i b = _mm256_broadcastsi128_si256(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(reinterpret_cast<const BlockQ4_0*>(blk)->qs)));
    return _mm256_and_si256(_mm256_srlv_epi64(b, _mm256_set_epi64x(4, 4, 0, 0)), _mm256_set1_epi8(15));
  } else {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(reinterpret_cast<const BlockQ8_0*>(blk)->qs));
  }
}
// The block's scale d in every lane (a word broadcast and one conversion).
HWY_INLINE hn::Vec<DF8> BlockScale(const uint8_t* HWY_RESTRICT blk) {
  int16_t d;
  std::memcpy(&d, blk, 2);
  return hn::Vec<DF8>{_mm256_cvtph_ps(_mm_set1_epi16(d))};
}
// Lane k: sum_{j in [4k, 4k + 4)} c_j q_j, as float (exact: |sum| < 2^24).
template <bool kQ4>
HWY_INLINE hn::Vec<DF8> BlockDot(__m256i codes, const QueryBlockI8& qb) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i p;
  if constexpr (kQ4) {
    p = _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(codes, qb.q), ones), qb.q4_offset);
  } else {  // |c| times q with c's sign: pmaddubsw takes its first operand unsigned
    p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(codes, codes), _mm256_sign_epi8(qb.q, codes)), ones);
  }
  return hn::Vec<DF8>{_mm256_cvtepi32_ps(p)};
}
#else
struct QueryBlockI8 {
  const int8_t* q;
};
HWY_INLINE QueryBlockI8 LoadQueryBlock(const BlockQ8_0& b) { return {b.qs}; }
template <bool kQ4>
HWY_INLINE const uint8_t* KeyBlockBytes(const uint8_t* HWY_RESTRICT blk) { return blk; }
HWY_INLINE hn::Vec<DF8> BlockScale(const uint8_t* HWY_RESTRICT blk) { return hn::Set(DF8(), F16ToF32(blk)); }
// Lane k of N: sum_{j = k mod N} c_j q_j, as float.
template <bool kQ4>
HWY_INLINE hn::Vec<DF8> BlockDot(const uint8_t* HWY_RESTRICT blk, const QueryBlockI8& qb) {
  const hn::RebindToSigned<DF8> di;
  const size_t N = hn::Lanes(di);
  auto acc = hn::Zero(di);
  for (size_t j = 0; j < 32; j += N) {
    const auto q = hn::PromoteTo(di, hn::LoadU(hn::Rebind<int8_t, decltype(di)>(), qb.q + j));
    acc = hn::Add(acc, hn::Mul(BlockCodesI<kQ4>(di, blk, j), q));
  }
  return hn::ConvertTo(DF8(), acc);
}
#endif

// A row's blocks are read once for up to kScoreQ queries (a GQA group); with one query, rows go
// four at a time, independent chains whose four sums reduce in one transpose (StoreScores with
// the rows as its sums). Each (query, row) sum is the same operations in every case, so results
// do not depend on how many queries share a pass. kNb: blocks per row when a constant (the
// common head sizes, whose loops then unroll), else 0 and nb.
template <bool kQ4, size_t kNb>
void GgmlScoresQ8(const KvRun& r, const BlockQ8_0* HWY_RESTRICT q8, int n_q, float scale, float* HWY_RESTRICT s,
                  size_t lds) {
  const DF8 df;
  const size_t nb = kNb != 0 ? kNb : size_t(r.head_dim) / 32;
  const size_t blk = kQ4 ? sizeof(BlockQ4_0) : sizeof(BlockQ8_0);
  ForQueryPasses<kScoreQ>(n_q, [&](auto kq, int i0) {
    constexpr int kQ = decltype(kq)::value;
    QueryBlockI8 qb[kQ][16];  // head_dim <= 512
    hn::Vec<DF8> dq[kQ][16];
    for (int i = 0; i < kQ; ++i) {
      for (size_t b = 0; b < nb; ++b) {
        const BlockQ8_0& x = q8[size_t(i0 + i) * nb + b];
        qb[i][b] = LoadQueryBlock(x);
        dq[i][b] = BlockScale(reinterpret_cast<const uint8_t*>(&x));
      }
    }
    auto rows = [&](auto kr_, int t0) {
      constexpr int kRows = decltype(kr_)::value;
      hn::Vec<DF8> acc[kQ][kRows];
      for (auto& a : acc) {
        for (auto& x : a) x = hn::Zero(df);
      }
      const uint8_t* row0 = r.rows + size_t(t0) * r.stride;
      for (size_t b = 0; b < nb; ++b) {
        for (int w = 0; w < kRows; ++w) {
          const uint8_t* kb = row0 + size_t(w) * r.stride + b * blk;
          const auto dk = BlockScale(kb);
          const auto codes = KeyBlockBytes<kQ4>(kb);
          for (int i = 0; i < kQ; ++i) {
            acc[i][w] = hn::MulAdd(hn::Mul(BlockDot<kQ4>(codes, qb[i][b]), dq[i][b]), dk, acc[i][w]);
          }
        }
      }
      if constexpr (kQ == 1) {
        StoreScores<kRows>(acc[0], nullptr, scale, s + size_t(i0) * lds + size_t(t0), 1);
      } else {
        static_assert(kRows == 1);
        hn::Vec<DF8> sums[kQ];
        for (int i = 0; i < kQ; ++i) sums[i] = acc[i][0];
        StoreScores<kQ>(sums, nullptr, scale, s + size_t(i0) * lds + size_t(t0), lds);
      }
    };
    int t = 0;
    if constexpr (kQ == 1) {
      for (; t + 4 <= r.n; t += 4) rows(std::integral_constant<int, 4>(), t);
    }
    for (; t < r.n; ++t) rows(std::integral_constant<int, 1>(), t);
  });
}

bool ScoreRunQ8(const KvRun& r, const BlockQ8_0* q8, int n_q, float scale, float* s, size_t lds) {
  if (r.head_dim % 32 != 0 || r.head_dim > 512 || (r.format != KvFormat::kQ4_0 && r.format != KvFormat::kQ8_0)) {
    return false;
  }
  const bool q4 = r.format == KvFormat::kQ4_0;
  auto run = [&](auto nb) {
    if (q4) {
      GgmlScoresQ8<true, nb()>(r, q8, n_q, scale, s, lds);
    } else {
      GgmlScoresQ8<false, nb()>(r, q8, n_q, scale, s, lds);
    }
  };
  switch (r.head_dim) {
    case 64: run(std::integral_constant<size_t, 2>()); break;
    case 128: run(std::integral_constant<size_t, 4>()); break;
    default: run(std::integral_constant<size_t, 0>()); break;
  }
  return true;
}

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

// Scores of kQ queries from their class-ordered w (ColsScores), rounded here to w8 = w * id.
// kNv: 32-byte vectors per row when a constant (-1: a 16-byte half, rows in pairs; 0: rb / 32).
template <int kBits, int kQ, int kNv>
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
  auto store8 = [&](int t0, const __m256i (&sums)[kQ]) {
    for (int i = 0; i < kQ; ++i) {
      const __m256 x = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sums[i]), _mm256_set1_ps(d[i])),
                                     _mm256_set1_ps(bias[i]));
      _mm256_storeu_ps(s + size_t(i) * lds + size_t(t0), _mm256_mul_ps(x, _mm256_set1_ps(scale)));
    }
  };
  auto store1 = [&](int t, const __m256i (&acc)[kQ], int lane0) {  // one row's lanes [lane0, lane0 + 8 / (1 + half))
    for (int i = 0; i < kQ; ++i) {
      HWY_ALIGN int32_t l[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(l), acc[i]);
      int32_t sum = 0;
      for (int k = lane0; k < lane0 + (half ? 4 : 8); ++k) sum += l[k];
      s[size_t(i) * lds + size_t(t)] = (d[i] * float(sum) + bias[i]) * scale;
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

// Per-token groups (int-b, KIVI values): scale s_g and zero z_g per group of g values:
// q . x'_t = sum_g s_g (q_g . codes_g) + z_g sum(q_g).
template <int kBits>
void RowScores(const KvRun& r, const float* HWY_RESTRICT q, int n_q, float scale, float* HWY_RESTRICT s,
               size_t lds) {
  const DF8 df;
  const size_t N = hn::Lanes(df), hd = size_t(r.head_dim), g = std::min(size_t(r.group), hd);
  const size_t n_groups = hd / g, group_blocks = g * kBits / (8 * N);
  constexpr size_t kPer = 8 / kBits;
  HWY_ALIGN float qp[kMaxQ][512];
  float qsum[kMaxQ][64];
  ForQueryPasses<kScoreQ>(n_q, [&](auto kq, int i0) {
    constexpr int kQ = decltype(kq)::value;
    for (int i = 0; i < kQ; ++i) {
      const float* qi = q + size_t(i0 + i) * hd;
      for (size_t c0 = 0; c0 < hd; c0 += kPer * N) {
        hn::Vec<DF8> x[kPer];
        for (size_t k = 0; k < kPer; ++k) x[k] = hn::LoadU(df, qi + c0 + k * N);
        StoreClassOrder<kBits>(x, qp[i] + c0);
      }
      for (size_t k = 0; k < n_groups; ++k) {
        float sum = 0.0f;
        for (size_t c = k * g; c < (k + 1) * g; ++c) sum += qi[c];
        qsum[i][k] = sum;
      }
    }
    for (int t = 0; t < r.n; ++t) {
      const uint8_t* row = r.rows + size_t(t) * r.stride;
      const auto* sc = reinterpret_cast<const f16_t*>(r.rows + r.scales_off + size_t(t) * r.meta_stride);
      const auto* zc = reinterpret_cast<const f16_t*>(r.rows + r.zeros_off + size_t(t) * r.meta_stride);
      hn::Vec<DF8> acc[kQ];
      float zpart[kQ] = {};
      for (int i = 0; i < kQ; ++i) acc[i] = hn::Zero(df);
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
          acc[i] = hn::MulAdd(sk, SumChains(ga[i]), acc[i]);
          zpart[i] += zk * qsum[i][k];
        }
      }
      StoreScores<kQ>(acc, zpart, scale, s + size_t(i0) * lds + size_t(t), lds);
    }
  });
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
      if (one_vector) {
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

// 2-bit per-token groups (KIVI-2 values, int2) accumulated in integers (specification:
// ref::uniform_row_accumulate_ref): a run's weights w_tg = p_t s_tg rounded to uint8 with one
// scale d per run and query, then out_c += d sum_t w8_t,g(c) code_tc + sum_t p_t z_t,g(c). On
// AVX2 the code bytes of two tokens are interleaved (punpcklbw), so one pmaddubsw per class
// multiplies 16 channels of both by their two weights (w8 unsigned, codes signed) into int16
// sums: ~18 instructions per 128-value token against ~125 for float FMAs. The int16 sums
// (at most 2 * 255 * 3 per pair) are widened to int32 every 16 pairs.
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
// Whether the kernel takes a run: 2-bit rows of whole 32-byte vectors (kNv of them) or of 16
// bytes (kNv -1: rows t, t + 2 and t + 1, t + 3 share vectors), up to 4 groups of a multiple of
// 32 values whose scales and zero points are one vector (RowAccumulate's one_vector), at most
// kAttentionChunk tokens.
inline int RowI8Vectors(const KvRun& r) {
  const size_t hd = size_t(r.head_dim), g = std::min(size_t(r.group), hd), n_groups = hd / g, rb = hd / 4;
  if (r.bits != 2 || hd % g != 0 || g % 32 != 0 || n_groups == 3 || n_groups > 4 || r.n > 1024 ||
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

template <int kNv, int kG>
void RowAccumulateI8(const KvRun& r, const float* HWY_RESTRICT p, float* HWY_RESTRICT out) {
  constexpr bool kHalf = kNv < 0;
  constexpr int nv = kHalf ? 1 : kNv;
  const size_t g = size_t(r.head_dim) / kG;
  // A token's kG scales and kG zero points (contiguous, quant/kv_layout.h), as one vector.
  auto token_sz = [&](int t) {
    const uint8_t* m = r.rows + size_t(t) * r.meta_stride + r.scales_off;
    __m128i h;
    if constexpr (kG == 1) h = _mm_cvtsi32_si128(Load32(m));
    if constexpr (kG == 2) h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(m));
    if constexpr (kG == 4) h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(m));
    return _mm256_cvtph_ps(h);
  };
  // Pass 1: each token's weights p_t s_tg (lanes [0, kG), 0 where p_t is 0, and past r.n up to
  // a whole number of row quads), the largest, and the zero terms' sums (lanes [kG, 2 kG)).
  HWY_ALIGN float wt[1024 + 4][4];
  __m256 wmax = _mm256_setzero_ps(), bad = wmax, zv = wmax;
  for (int t = 0; t < r.n; ++t) {
    if (p[t] == 0.0f) {
      _mm_store_ps(wt[t], _mm_setzero_ps());
      continue;
    }
    const __m256 pv = _mm256_set1_ps(p[t]), sz = token_sz(t), w = _mm256_mul_ps(pv, sz);
    _mm_store_ps(wt[t], _mm256_castps256_ps128(w));
    wmax = _mm256_max_ps(wmax, w);
    bad = _mm256_add_ps(bad, w);
    zv = _mm256_fmadd_ps(pv, sz, zv);
  }
  for (int t = r.n; t < ((r.n + 3) & ~3); ++t) _mm_store_ps(wt[t], _mm_setzero_ps());
  HWY_ALIGN float wl[8], bl[8], zl[8];
  _mm256_store_ps(wl, wmax);
  _mm256_store_ps(bl, bad);
  _mm256_store_ps(zl, zv);
  float wm = 0.0f;
  bool finite = true;
  for (int k = 0; k < kG; ++k) {
    wm = std::max(wm, wl[k]);
    finite = finite && std::isfinite(wl[k]) && !std::isnan(bl[k]);
  }
  const bool kept = finite && wm >= kRoundedMaxFloor;  // else every w8 zero
  const float d = !finite ? NAN : kept ? wm / 255.0f : 0.0f;
  HWY_ALIGN int32_t isum[nv * 2 * 4 * 16];  // class-position order, below
  for (size_t j = 0; j < sizeof(isum) / 32; ++j) _mm256_store_si256(reinterpret_cast<__m256i*>(isum) + j, _mm256_setzero_si256());
  if (kept) {
    // Pass 2: w8 of tokens 2P, 2P + 1 interleaved by group, 16 bytes per pair (zero past r.n).
    const int n_pairs = (r.n + 1) / 2, n_pairs_pad = kHalf ? (n_pairs + 1) & ~1 : n_pairs;
    HWY_ALIGN uint8_t wb[(1024 / 2 + 2) * 16];
    const __m128 id = _mm_set1_ps(255.0f / wm);
    for (int P = 0; P < n_pairs_pad; ++P) {
      const __m128i a = _mm_cvtps_epi32(_mm_mul_ps(_mm_load_ps(wt[2 * P]), id));
      const __m128i b = _mm_cvtps_epi32(_mm_mul_ps(_mm_load_ps(wt[2 * P + 1]), id));
      const __m128i w16 = _mm_packs_epi32(_mm_unpacklo_epi32(a, b), _mm_unpackhi_epi32(a, b));
      _mm_store_si128(reinterpret_cast<__m128i*>(wb + 16 * size_t(P)), _mm_packus_epi16(w16, w16));
    }
    __m256i ctl[nv][2];
    for (int jv = 0; jv < nv; ++jv) {
      for (int h = 0; h < 2; ++h) ctl[jv][h] = _mm256_load_si256(reinterpret_cast<const __m256i*>(RowI8Ctl<kNv, kG>::kBytes[jv][h].data()));
    }
    const __m256i m3 = _mm256_set1_epi8(3);
    __m256i acc[nv][2][4];
    auto zero_acc = [&] {
      for (auto& a : acc) for (auto& b : a) for (auto& x : b) x = _mm256_setzero_si256();
    };
    auto flush = [&] {  // int16 sums into isum[((jv * 2 + h) * 4 + k) * 16 + lane]
      for (int jv = 0; jv < nv; ++jv) {
        for (int h = 0; h < 2; ++h) {
          for (int k = 0; k < 4; ++k) {
            int32_t* dst = isum + ((jv * 2 + h) * 4 + k) * 16;
            const __m256i x = acc[jv][h][k];
            auto* d0 = reinterpret_cast<__m256i*>(dst);
            _mm256_store_si256(d0, _mm256_add_epi32(_mm256_load_si256(d0), _mm256_cvtepi16_epi32(_mm256_castsi256_si128(x))));
            _mm256_store_si256(d0 + 1, _mm256_add_epi32(_mm256_load_si256(d0 + 1),
                                                        _mm256_cvtepi16_epi32(_mm256_extracti128_si256(x, 1))));
          }
        }
      }
      zero_acc();
    };
    // acc[jv][.] += the products of the interleaved code bytes of two rows (or pairs) xa, xb.
    auto step = [&](int jv, __m256i xa, __m256i xb, __m256i wbv) {
      const __m256i il[2] = {_mm256_unpacklo_epi8(xa, xb), _mm256_unpackhi_epi8(xa, xb)};
      for (int h = 0; h < 2; ++h) {
        const __m256i w = _mm256_shuffle_epi8(wbv, ctl[jv][h]);
        acc[jv][h][0] = _mm256_add_epi16(acc[jv][h][0], _mm256_maddubs_epi16(w, _mm256_and_si256(il[h], m3)));
        acc[jv][h][1] = _mm256_add_epi16(acc[jv][h][1], _mm256_maddubs_epi16(w, _mm256_and_si256(_mm256_srli_epi16(il[h], 2), m3)));
        acc[jv][h][2] = _mm256_add_epi16(acc[jv][h][2], _mm256_maddubs_epi16(w, _mm256_and_si256(_mm256_srli_epi16(il[h], 4), m3)));
        acc[jv][h][3] = _mm256_add_epi16(acc[jv][h][3], _mm256_maddubs_epi16(w, _mm256_and_si256(_mm256_srli_epi16(il[h], 6), m3)));
      }
    };
    zero_acc();
    const uint8_t* rows = r.rows;
    auto row128 = [&](int t) {
      return t < r.n ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows + size_t(t) * r.stride)) : _mm_setzero_si128();
    };
    int since = 0;
    if constexpr (kHalf) {
      for (int P = 0; P < n_pairs; P += 2) {  // rows 2P..2P+3
        const int t = 2 * P;
        const __m256i xa = _mm256_inserti128_si256(_mm256_castsi128_si256(row128(t)), row128(t + 2), 1);
        const __m256i xb = _mm256_inserti128_si256(_mm256_castsi128_si256(row128(t + 1)), row128(t + 3), 1);
        step(0, xa, xb, _mm256_load_si256(reinterpret_cast<const __m256i*>(wb + 16 * size_t(P))));
        if (++since == 16) flush(), since = 0;
      }
    } else {
      for (int P = 0; P < n_pairs; ++P) {
        const int t = 2 * P;
        const __m256i wbv = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(wb + 16 * size_t(P))));
        const uint8_t* ra = rows + size_t(t) * r.stride;
        const uint8_t* rb = rows + size_t(t + 1) * r.stride;
        for (int jv = 0; jv < nv; ++jv) {
          const __m256i xa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ra + 32 * jv));
          const __m256i xb = t + 1 < r.n ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rb + 32 * jv))
                                         : _mm256_setzero_si256();
          step(jv, xa, xb, wbv);
        }
        if (++since == 16) flush(), since = 0;
      }
    }
    flush();
  }
  // Channel c = 4 b + k of code byte b: isum position ((jv * 2 + h) * 4 + k) * 16 + 8 L + j with
  // b = 32 jv + 16 L + 8 h + j (kHalf: b = 8 h + j, both lanes L summed). The four classes of 8
  // bytes, 32 channels in one group (g % 32 == 0), are interleaved back in one 4 x 8 transpose.
  const __m256 dv = _mm256_set1_ps(d);
  for (int jv = 0; jv < nv; ++jv) {
    for (int L = 0; L < (kHalf ? 1 : 2); ++L) {
      for (int h = 0; h < 2; ++h) {
        const size_t b0 = kHalf ? size_t(8 * h) : size_t(32 * jv + 16 * L + 8 * h);
        __m256 v[4];
        for (int k = 0; k < 4; ++k) {
          const int32_t* q = isum + ((jv * 2 + h) * 4 + k) * 16;
          __m256i x = _mm256_load_si256(reinterpret_cast<const __m256i*>(q + 8 * L));
          if (kHalf) x = _mm256_add_epi32(x, _mm256_load_si256(reinterpret_cast<const __m256i*>(q + 8)));
          v[k] = _mm256_cvtepi32_ps(x);
        }
        const __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]), t1 = _mm256_unpackhi_ps(v[0], v[1]);
        const __m256 t2 = _mm256_unpacklo_ps(v[2], v[3]), t3 = _mm256_unpackhi_ps(v[2], v[3]);
        const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        const __m256 nat[4] = {_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u2, u3, 0x20),
                               _mm256_permute2f128_ps(u0, u1, 0x31), _mm256_permute2f128_ps(u2, u3, 0x31)};
        const __m256 z = _mm256_set1_ps(zl[size_t(kG) + 4 * b0 / g]);
        float* o = out + 4 * b0;
        for (int m = 0; m < 4; ++m) {
          _mm256_storeu_ps(o + 8 * m, _mm256_add_ps(_mm256_loadu_ps(o + 8 * m), _mm256_add_ps(_mm256_mul_ps(dv, nat[m]), z)));
        }
      }
    }
  }
}
#endif

// The sparse outliers of a KVQuant run (§3.4), the run's list of its head (kernels/kv_run.h),
// each stored as its correction x - dense to what its code decodes to (KvquantStore), so that
// it moves what the dense pass computed without the code being decoded again. Functions of
// their own, not inlined, so that the walk gets registers of its own: inlined in the row
// kernels it spilled and reloaded its operands for every entry (~70 instructions per outlier,
// measured).
// Calls add(t, c, v) for each of the run's outliers (its token within the run, channel within
// the head, stored correction) in order; except that on AVX2 a sealed list (kernels/kv_run.h)
// goes 8 entries at a time to vec8(t, c, v) with them as lanes, decoded in vectors, and
// vec8 must do what add does, lane by lane in order; the last entries go to add. A run that
// reaches its list's end takes it without scanning (sealed_outlier_range).
template <class Vec8, class Add>
HWY_INLINE void ForRunOutliers(const KvRun& r, const Vec8& vec8, const Add& add) {
#if HWY_TARGET == HWY_AVX2
  if (r.out_sealed) {
    uint32_t e, stop;
    sealed_outlier_range(r, &e, &stop);
    const auto* cell = reinterpret_cast<const uint16_t*>(r.out_idx);
    const int sh = r.out_layout.ch_bits;
    const __m256i mask = _mm256_set1_epi32((1 << sh) - 1), slot0 = _mm256_set1_epi32(r.out_slot0);
    for (; e + 8 <= stop; e += 8) {
      const __m256i x = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(cell + e)));
      vec8(_mm256_sub_epi32(_mm256_srl_epi32(x, _mm_cvtsi32_si128(sh)), slot0), _mm256_and_si256(x, mask),
           _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r.out_val + e))));
    }
    for (; e != stop; ++e) add(int(cell[e] >> sh) - r.out_slot0, size_t(cell[e] & ((1u << sh) - 1u)), F16At(r.out_val[e]));
    return;
  }
#else
  (void)vec8;
#endif
  for_each_run_outlier(r, add, F16At);
}

// Keys: the score of token t moves by (x - dense) * (R(t)^T q)_c, where
// (R(t)^T q)_c = q_c C_tc + q_c' S_tc', c' = c ^ 1 (kernels/rope.h's key table); s: the
// scores of the pass's first query, queries lds apart. Each entry's arithmetic is spelled out
// (fma(d, fma(q_c, C_tc, q_c' S_tc'), s)) so that the vector path and the one-by-one path
// agree bit for bit whichever entries a run's length puts in each.
template <int kQ>
HWY_NOINLINE void KeyOutlierCorrections(const KvRun& r, const float* HWY_RESTRICT qs, const float* HWY_RESTRICT table,
                                        float scale, float* HWY_RESTRICT s, size_t lds) {
  const size_t hd = size_t(r.head_dim);
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

// Values: out_i[c] += p_it (x - dense) for queries [0, kQ) (p and out ldp and head_dim apart),
// as fma(p_it, x - dense, out_i[c]) on every path.
template <int kQ>
HWY_NOINLINE void ValueOutlierCorrections(const KvRun& r, const float* HWY_RESTRICT p, size_t ldp,
                                          float* HWY_RESTRICT out) {
  const size_t hd = size_t(r.head_dim);
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
          // The step's first chunk of codes, whose offset the compiler does not reuse across
          // the chains by itself (kStep is a whole number of chunks, or part of one).
          const size_t c0 = i0v / kChunk * 2 * kBits + (kStep >= kChunk ? ch * N / kChunk * 2 * kBits : 0);
          const auto vh = hn::LoadU(df, h + i), vz = hn::LoadU(df, z + i);
          for (int w = 0; w < kRows; ++w) {
            const uint8_t* row = r.rows + size_t(t0 + w) * r.stride;
            const float* C = table + size_t(t0 + w) * 2 * hd;
            const float* S = C + hd;
            const auto k = hn::MulAdd(lut(row + c0, i % kChunk), vh, vz);
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
    float* sq = s + size_t(i0) * lds;
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
    if (r.out_ptr) KeyOutlierCorrections<kQ>(r, qs, table, scale, s + size_t(i0) * lds, lds);
  });
}

bool ScoreRunRopeFused(const KvRun& r, const float* q, int n_q, const float* table, float scale, float* s,
                       size_t lds) {
  if (r.format != KvFormat::kCodebookPc || r.head_dim % (kChains * hn::MaxLanes(DF())) != 0 ||
      r.head_dim % kChunk != 0 || r.head_dim > 512) {
    return false;
  }
  if (r.bits < 2 || r.bits > 4) return false;
  WithHeadDim(r.head_dim, [&](auto kHd) {
    WithCodeBits(r.bits, [&](auto b) {
      if constexpr (b() <= 4) CodebookPcRopeScores<b(), kHd()>(r, q, n_q, table, scale, s, lds);
    });
  });
  return true;
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

// KVQuant values: out_i += sum_t (p_it half_t) level[code_t] + sum_t p_it zero_t; sparse
// outliers then correct their dense value. A row's codes are looked up in the levels once
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
  // Then the zero points' sum, after the outliers.
  auto add_zero = [&](float* oi, float zsum) {
    const auto z = hn::Set(df, zsum);
    size_t i = 0;
    for (; i + N <= hd; i += N) hn::StoreU(hn::Add(hn::LoadU(df, oi + i), z), df, oi + i);
    if constexpr (kHd == 0) {  // a whole number of vectors otherwise
      for (; i < hd; ++i) oi[i] += zsum;
    }
  };
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
      add_zero(oi, zsum);
    }
    return;
  }
  const LevelLut<kBits> lut(r.levels);
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
          const auto lv = lut(row + c / kChunk * 2 * kBits, c % kChunk);
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
    for (int i = 0; i < kQ; ++i) add_zero(out + size_t(i0 + i) * hd, zsum[i]);
  });
}

bool ScoreRunFused(const KvRun& r, const float* q, int n_q, float scale, float* s, size_t lds) {
  if (r.head_dim % 16 != 0 || r.head_dim > 512) return false;
  switch (r.format) {
    case KvFormat::kUniformCols:
    case KvFormat::kUniformRow: {
      bool fused = false;
      WithCodeBits(r.bits, [&](auto b) {
        if (!ClassBlocksFit<b()>(r)) return;
        fused = true;
        if (r.format == KvFormat::kUniformCols) return ColsScores<b()>(r, q, n_q, scale, s, lds);
        RowScores<b()>(r, q, n_q, scale, s, lds);
      });
      return fused;
    }
    default:
      return false;
  }
}

// q4_0 / q8_0 values for kQ queries at a time (a GQA group): a block's codes are converted once
// for all of them, and the channels go in passes of kVecs vectors per query whose sums stay in
// registers while up to 64 tokens stream by. A token's weight for a block is p_it * d_tb (0
// where p is 0, whatever the scale): with one or two queries a pass holds whole blocks and
// takes it as it goes; with more a pass holds part of a block and the weights of the 64 tokens
// are taken first. Each channel's sum is the same FMAs in token order whatever kQ is, so a
// query's output does not depend on the queries it shares a pass with.
template <bool kQ4, int kQ>
void GgmlAccumulateQ(const KvRun& r, const float* HWY_RESTRICT p, size_t ldp, float* HWY_RESTRICT out) {
  const DF df;
  constexpr size_t N = hn::MaxLanes(DF());
  constexpr size_t kBlockVecs = 32 / N < 1 ? 1 : 32 / N;  // vectors per block
  constexpr size_t kVecs = kQ == 1 ? 2 * kBlockVecs : kQ == 2 ? kBlockVecs : (kBlockVecs / 2 < 1 ? 1 : kBlockVecs / 2);
  constexpr bool kWhole = kVecs >= kBlockVecs;  // a pass holds whole blocks
  constexpr int kTokens = 64;
  const size_t hd = size_t(r.head_dim), n_blocks = hd / 32;
  const size_t blk = kQ4 ? sizeof(BlockQ4_0) : sizeof(BlockQ8_0);
  HWY_ALIGN float w[kWhole ? 1 : kQ][kWhole ? 1 : kTokens * 16];  // [t][block], head_dim <= 512
  auto weight = [&](int i, int t, float d) {
    const float pt = p[size_t(i) * ldp + size_t(t)];
    return pt == 0.0f ? 0.0f : pt * d;
  };
  // Channels [c0, c0 + kV * N) of tokens [t0, t0 + nt).
  auto pass = [&](auto kv_, int t0, int nt, size_t c0) {
    constexpr size_t kV = decltype(kv_)::value;
    constexpr bool kW = kV >= kBlockVecs;  // whole blocks (c0 % 32 == 0), or part of one
    hn::Vec<DF> acc[kQ][kV];
    for (auto& q : acc) {
      for (auto& a : q) a = hn::Zero(df);
    }
    const size_t b0 = c0 / 32, o = c0 % 32;
    const uint8_t* bp = r.rows + size_t(t0) * r.stride + b0 * blk;
    for (int t = 0; t < nt; ++t, bp += r.stride) {
      hn::Vec<DF> codes[kV];
      for (size_t v = 0; v < kV; ++v) {
        codes[v] = kW ? BlockCodes<kQ4>(bp + v * N / 32 * blk, v * N % 32) : BlockCodes<kQ4>(bp, o + v * N);
      }
      for (int i = 0; i < kQ; ++i) {
        if constexpr (kW) {
          for (size_t b = 0; b < kV / kBlockVecs; ++b) {
            const auto a = hn::Set(df, weight(i, t0 + t, F16ToF32(bp + b * blk)));
            for (size_t v = b * kBlockVecs; v < (b + 1) * kBlockVecs; ++v) acc[i][v] = hn::MulAdd(a, codes[v], acc[i][v]);
          }
        } else {
          const auto a = hn::Set(df, w[i][size_t(t) * n_blocks + b0]);
          for (size_t v = 0; v < kV; ++v) acc[i][v] = hn::MulAdd(a, codes[v], acc[i][v]);
        }
      }
    }
    for (int i = 0; i < kQ; ++i) {
      for (size_t v = 0; v < kV; ++v) {
        float* dst = out + size_t(i) * hd + c0 + v * N;
        hn::StoreU(hn::Add(hn::LoadU(df, dst), acc[i][v]), df, dst);
      }
    }
  };
  for (int t0 = 0; t0 < r.n; t0 += kTokens) {
    const int nt = std::min(kTokens, r.n - t0);
    if constexpr (!kWhole) {
      for (int t = 0; t < nt; ++t) {
        const uint8_t* row = r.rows + size_t(t0 + t) * r.stride;
        for (size_t b = 0; b < n_blocks; ++b) {
          const float d = F16ToF32(row + b * blk);
          for (int i = 0; i < kQ; ++i) w[i][size_t(t) * n_blocks + b] = weight(i, t0 + t, d);
        }
      }
    }
    size_t c0 = 0;
    for (; c0 + kVecs * N <= hd; c0 += kVecs * N) pass(std::integral_constant<size_t, kVecs>(), t0, nt, c0);
    // head_dim is a multiple of 32: what is left is whole blocks.
    for (; c0 < hd; c0 += 32) pass(std::integral_constant<size_t, kBlockVecs>(), t0, nt, c0);
  }
}

bool AccumulateRunFused(const KvRun& r, const float* p, int n_q, size_t ldp, float* out) {
  if (r.head_dim % 32 != 0 || r.head_dim > 512) return false;
  const size_t hd = size_t(r.head_dim);
  switch (r.format) {
    case KvFormat::kQ8_0:
      ForQueryPasses<4>(n_q, [&](auto kq, int i0) {
        GgmlAccumulateQ<false, decltype(kq)::value>(r, p + size_t(i0) * ldp, ldp, out + size_t(i0) * hd);
      });
      return true;
    case KvFormat::kQ4_0:
      ForQueryPasses<4>(n_q, [&](auto kq, int i0) {
        GgmlAccumulateQ<true, decltype(kq)::value>(r, p + size_t(i0) * ldp, ldp, out + size_t(i0) * hd);
      });
      return true;
    case KvFormat::kUniformRow: {
      if (r.bits == 2) {  // in integers (RowAccumulateI8); other targets and shapes: the reference
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
        const int nv = RowI8Vectors(r);
        if (nv == 0) return false;
        const int n_groups = r.head_dim / std::min(r.group, r.head_dim);
        auto run = [&](auto kv, auto kg) {
          for (int i = 0; i < n_q; ++i) RowAccumulateI8<kv(), kg()>(r, p + size_t(i) * ldp, out + size_t(i) * hd);
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
      bool fused = false;
      WithCodeBits(r.bits, [&](auto b) {
        if (!ClassBlocksFit<b()>(r)) return;
        fused = true;
        RowAccumulate<b()>(r, p, n_q, ldp, out);
      });
      return fused;
    }
    case KvFormat::kCodebookRow:
      if (r.bits < 2 || r.bits > 4) return false;
      WithHeadDim(r.head_dim, [&](auto kHd) {
        WithCodeBits(r.bits, [&](auto b) {
          if constexpr (b() <= 4) CodebookRowAccumulate<b(), kHd()>(r, p, n_q, ldp, out);
        });
      });
      return true;
    default:
      return false;
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq::cpu {
HWY_EXPORT(ScoreRunFused);
HWY_EXPORT(AccumulateRunFused);
HWY_EXPORT(ScoreRunRopeFused);
HWY_EXPORT(ScoreRunQ8);
bool score_run_q8(const KvRun& run, const BlockQ8_0* q8, int n_q, float scale, float* scores, size_t ld) {
  return HWY_DYNAMIC_DISPATCH(ScoreRunQ8)(run, q8, n_q, scale, scores, ld);
}
bool score_run_rope_fused(const KvRun& run, const float* q, int n_q, const float* key_table, float scale,
                          float* scores, size_t ld) {
  return HWY_DYNAMIC_DISPATCH(ScoreRunRopeFused)(run, q, n_q, key_table, scale, scores, ld);
}
bool score_run_fused(const KvRun& run, const float* q, int n_q, float scale, float* scores, size_t ld) {
  return HWY_DYNAMIC_DISPATCH(ScoreRunFused)(run, q, n_q, scale, scores, ld);
}
bool accumulate_run_fused(const KvRun& run, const float* p, int n_q, size_t ld, float* out) {
  return HWY_DYNAMIC_DISPATCH(AccumulateRunFused)(run, p, n_q, ld, out);
}
}  // namespace kvq::cpu
#endif
