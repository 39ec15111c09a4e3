// SPDX-License-Identifier: MIT
// Helpers shared by the fused attention kernels of each family (kv_fused_ggml.cc,
// kv_fused_uniform_scores.cc, kv_fused_uniform_values.cc, kv_fused_codebook.cc): query passes,
// head sizes, accumulator chains, the score stores and uniform codes' classes. Per-target
// include guard, as Highway requires.
#if defined(KVQ_KERNELS_KV_FUSED_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVQ_KERNELS_KV_FUSED_INL_H_
#undef KVQ_KERNELS_KV_FUSED_INL_H_
#else
#define KVQ_KERNELS_KV_FUSED_INL_H_
#endif

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "hwy/highway.h"
#include "kernels/cpu/kv_run-inl.h"
#include "kernels/cpu/lane_sums-inl.h"
#include "kernels/kv_run.h"

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

// Vectors of at most 8 floats (and their bytes' lanes): the integer kernels' AVX2 layouts.
using DF8 = hn::CappedTag<float, 8>;
using DU8 = hn::RebindToUnsigned<DF8>;
constexpr int kMaxQ = 4;  // queries per pass: their accumulators stay in registers

#if HWY_TARGET == HWY_AVX3_DL
// *acc += in each int32 lane the 4 products of u's unsigned bytes by w's signed bytes (VNNI's
// vpdpbusd, exact: no saturation), the lanes pmaddubsw + pmaddwd would give. EVEX-encoded by
// hand: GCC may give the intrinsic AVX-VNNI's VEX form, which AVX-512 CPUs such as Zen 4 lack
// (SIGILL). Only the files that opt in to Highway's AVX3_DL target (HWY_WANT_AVX3_DL:
// kv_fused_ggml.cc, kv_fused_codebook_values.cc) reach it.
HWY_INLINE void DotBytesAdd(__m256i* acc, __m256i u, __m256i w) { asm("vpdpbusd %2, %1, %0" : "+v"(*acc) : "v"(u), "v"(w)); }
HWY_INLINE void DotBytesAdd(__m512i* acc, __m512i u, __m512i w) { asm("vpdpbusd %2, %1, %0" : "+v"(*acc) : "v"(u), "v"(w)); }
#endif

// Uniform codes (KIVI keys, per-token groups) are read N bytes at a time: PromoteTo gives N
// lanes of whole bytes, and lane b shifted right by k * bits and masked is code
// (8 / bits) * b + k of the block, its "class" k. The per-channel float operands (the weighted
// queries, the accumulators) are permuted once per call into this class order, so N codes cost
// a shift, a mask and a convert instead of a byte shuffle and a variable shift per lane, and the
// codes are unpacked once for every query of a GQA group.

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

// Calls fn(std::integral_constant<int, bits>()) for a uniform run whose codes split into
// whole class blocks (ClassBlocksFit); false, fn not called, for any other width or shape.
template <class Fn>
HWY_INLINE bool WithClassBlocks(const KvRun& r, const Fn& fn) {
  bool fits = false;
  WithCodeBits(r.bits, [&](auto b) {
    if (!ClassBlocksFit<b()>(r)) return;
    fits = true;
    fn(b);
  });
  return fits;
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


// s[i * lds] = (sum of a[i]'s lanes + add[i]) * scale for the kQ sums of a score pass (add
// null: nothing added), bit for bit the same whichever way the lanes are summed: on x86 four
// queries' sums go through one transpose (SumOfLanes4 for 8 lanes, SumOfLanes16x4 for 16), and
// 16-lane vectors are summed in SumOfLanes16's grouping (lane_sums-inl.h) one by one too.
template <int kQ, class V>
HWY_INLINE void StoreScores(const V (&a)[kQ], const float* HWY_RESTRICT add, float scale, float* HWY_RESTRICT s,
                            size_t lds) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
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
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  if constexpr (sizeof(V) == 64) {
    if constexpr (kQ == 4) {
      const hn::Full512<float> d;
      const hn::Vec512<float> all[4] = {a[0], a[1], a[2], a[3]};
      HWY_ALIGN float sums[16];
      hn::Store(SumOfLanes16x4(all), d, sums);  // query i's sum in lane 8 (i % 2) + 4 (i / 2)
      for (int i = 0; i < kQ; ++i) {
        float x = sums[i % 2 * 8 + i / 2 * 4];
        if (add) x += add[i];
        s[size_t(i) * lds] = x * scale;
      }
    } else {
      for (int i = 0; i < kQ; ++i) {
        float x = SumOfLanes16(a[i]);
        if (add) x += add[i];
        s[size_t(i) * lds] = x * scale;
      }
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
// keep(t, sums) with the kQ vectors (of descriptor D: 8 or 16 lanes) of partial sums of each
// row t in [t0, t0 + 8), and their scores are stored 8 at a time, (sum of sums[i]'s lanes) *
// scale for row t at s[i * lds + t]: bit for bit what StoreScores stores, the lanes of 8 rows
// summed in one transpose (SumOfLanes8, of 8- or 16-lane vectors), ~13 instructions a row with
// its stores instead of ~25 (measured, AVX2). With kAdd, keep(t, sums, add) also takes kQ
// terms, and (sum + add[i]) * scale is stored, as StoreScores with add. x86 only; elsewhere rows
// are left to the caller's StoreScores. *t: the first row not stored.
template <int kQ, class D = DF, bool kAdd = false, class Block>
HWY_INLINE void ForRowsOf8(int n, float scale, float* HWY_RESTRICT s, size_t lds, int* t, const Block& block) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
  const D d;
  using V = hn::Vec<D>;
  constexpr size_t N = hn::MaxLanes(D());
  static_assert(N == 8 || N == 16);
  const hn::Full256<float> d8;
  HWY_ALIGN float buf[kQ][8][N];
  HWY_ALIGN float added[kQ][8];
  for (; *t + 8 <= n; *t += 8) {
    const int t0 = *t;
    block(t0, [&](int tw, const V(&sums)[kQ], const float* add = nullptr) {
      for (int i = 0; i < kQ; ++i) {
        hn::Store(sums[i], d, buf[i][tw - t0]);
        if constexpr (kAdd) added[i][tw - t0] = add[i];
      }
    });
    for (int i = 0; i < kQ; ++i) {
      V rows8[8];
      for (int w = 0; w < 8; ++w) rows8[w] = hn::Load(d, buf[i][w]);
      auto sums8 = SumOfLanes8(rows8);
      if constexpr (kAdd) sums8 = hn::Add(sums8, hn::Load(d8, added[i]));
      hn::StoreU(hn::Mul(sums8, hn::Set(d8, scale)), d8, s + size_t(i) * lds + size_t(t0));
    }
  }
#else
  (void)n, (void)scale, (void)s, (void)lds, (void)t, (void)block;
#endif
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#endif  // KVQ_KERNELS_KV_FUSED_INL_H_
