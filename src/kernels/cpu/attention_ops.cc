// SPDX-License-Identifier: MIT
// Highway kernels for attention over dense f32/f16 K/V rows: batched q.k scores and the
// p-weighted sum of V rows. head_dim smaller than a full vector (stories260K has 8) uses a
// vector capped at 8 lanes, so AVX-512 does not waste half of every load.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/attention_ops.cc"
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"
#include "kernels/cpu/lane_sums-inl.h"
#include "kernels/cpu/vector_loads-inl.h"
#include "kernels/cpu/ops.h"

HWY_BEFORE_NAMESPACE();
namespace kvq::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Whole and partial vectors of f32, f16 or bf16 rows as f32 (vector_loads-inl.h).
using kvq::HWY_NAMESPACE::Bf16;
using kvq::HWY_NAMESPACE::LoadPartial;
using kvq::HWY_NAMESPACE::LoadWhole;

// The sum of a score accumulator's lanes: SumOfLanes's, or on AVX3 for 16 lanes SumOfLanes16
// (the grouping of the transposed sums below, lane_sums-inl.h).
template <class D>
HWY_INLINE float RowSum(D d, hn::Vec<D> v) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  if constexpr (hn::MaxLanes(D()) == 16) return kvq::HWY_NAMESPACE::SumOfLanes16(v);
#endif
  return hn::GetLane(hn::SumOfLanes(d, v));
}

// Scores of kQ queries (ldq apart) against n_rows keys, into s (queries lds apart). Each
// (query, key) pair is one accumulator summed over head_dim in increasing order and reduced in
// RowSum's grouping, whatever kQ is and however the rows are blocked: a query's scores do not depend on
// the other queries of its pass (prefill and decode agree bit for bit). Blocking only shares
// loads: a key row is converted once for kQ queries, and two rows share each query load. Whole
// vectors first, then one masked step for a head_dim that is not a multiple of the vector; on
// x86 a pass's 2 rows are reduced by one transpose (SumOfLanes8 of 4 queries' 8- or 16-lane
// sums, SumOfLanes16x4 of 1 or 2 queries' 16-lane ones).
template <size_t kQ, class D, typename T>
HWY_INLINE void ScoresImpl(D d, const float* HWY_RESTRICT q, size_t ldq, const T* HWY_RESTRICT k, size_t ldk,
                           int n_rows, int head_dim, float scale, float* HWY_RESTRICT s, size_t lds) {
  using V = hn::Vec<D>;
  const size_t n = size_t(head_dim);
  const size_t N = hn::Lanes(d);
  const size_t whole = n / N * N;
  int j = 0;
  for (; j + 2 <= n_rows; j += 2) {
    const T* k0 = k + size_t(j) * ldk;
    const T* k1 = k0 + ldk;
    V a0[kQ], a1[kQ];
    for (size_t u = 0; u < kQ; ++u) a0[u] = a1[u] = hn::Zero(d);
    for (size_t i = 0; i < whole; i += N) {
      const V r0 = LoadWhole(d, k0 + i), r1 = LoadWhole(d, k1 + i);
      for (size_t u = 0; u < kQ; ++u) {
        const V qi = hn::LoadU(d, q + u * ldq + i);
        a0[u] = hn::MulAdd(qi, r0, a0[u]);
        a1[u] = hn::MulAdd(qi, r1, a1[u]);
      }
    }
    if (whole < n) {
      const V r0 = LoadPartial(d, k0 + whole, n - whole), r1 = LoadPartial(d, k1 + whole, n - whole);
      for (size_t u = 0; u < kQ; ++u) {
        const V qi = LoadPartial(d, q + u * ldq + whole, n - whole);
        a0[u] = hn::MulAdd(qi, r0, a0[u]);
        a1[u] = hn::MulAdd(qi, r1, a1[u]);
      }
    }
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
    if constexpr (kQ == 4 && hn::MaxLanes(D()) >= 8) {  // 8 or 16 lanes: SumOfLanes8 takes both
      const V all[8] = {a0[0], a1[0], a0[1], a1[1], a0[2], a1[2], a0[3], a1[3]};
      const hn::Full256<float> d8;
      HWY_ALIGN float sums[8];
      hn::Store(hn::Mul(kvq::HWY_NAMESPACE::SumOfLanes8(all), hn::Set(d8, scale)), d8, sums);
      for (size_t u = 0; u < kQ; ++u) {
        s[u * lds + size_t(j)] = sums[2 * u];
        s[u * lds + size_t(j) + 1] = sums[2 * u + 1];
      }
      continue;
    }
#endif
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
    if constexpr (hn::MaxLanes(D()) == 16 && kQ <= 2) {  // 1 or 2 queries: their rows' four sums
      const V all[4] = {a0[0], a1[0], a0[kQ - 1], a1[kQ - 1]};
      HWY_ALIGN float sums[16];
      hn::Store(hn::Mul(kvq::HWY_NAMESPACE::SumOfLanes16x4(all), hn::Set(d, scale)), d, sums);
      for (size_t u = 0; u < kQ; ++u) {  // lanes 0, 8 (query 0), 4, 12 (query 1)
        s[u * lds + size_t(j)] = sums[4 * u];
        s[u * lds + size_t(j) + 1] = sums[4 * u + 8];
      }
      continue;
    }
#endif
    for (size_t u = 0; u < kQ; ++u) {
      s[u * lds + size_t(j)] = RowSum(d, a0[u]) * scale;
      s[u * lds + size_t(j) + 1] = RowSum(d, a1[u]) * scale;
    }
  }
  for (; j < n_rows; ++j) {
    const T* kr = k + size_t(j) * ldk;
    V a[kQ];
    for (size_t u = 0; u < kQ; ++u) a[u] = hn::Zero(d);
    for (size_t i = 0; i < whole; i += N) {
      const V r = LoadWhole(d, kr + i);
      for (size_t u = 0; u < kQ; ++u) a[u] = hn::MulAdd(hn::LoadU(d, q + u * ldq + i), r, a[u]);
    }
    if (whole < n) {
      const V r = LoadPartial(d, kr + whole, n - whole);
      for (size_t u = 0; u < kQ; ++u) a[u] = hn::MulAdd(LoadPartial(d, q + u * ldq + whole, n - whole), r, a[u]);
    }
    for (size_t u = 0; u < kQ; ++u) s[u * lds + size_t(j)] = RowSum(d, a[u]) * scale;
  }
}

// Stores lanes [0, n - i) of v at out + i (the partial vector LoadPartial read).
template <class D>
HWY_INLINE void StoreTail(D d, hn::Vec<D> v, float* out, size_t i, size_t n) {
  HWY_ALIGN float buf[hn::MaxLanes(d)];
  hn::Store(v, d, buf);
  for (size_t k = 0; k < n - i; ++k) out[i + k] = buf[k];
}

// out[u] += sum_j p[u][j] v_j for kQ queries (p ldp apart, out ldo apart): each output lane sums
// its rows in increasing j with one MulAdd per row, whatever kQ is. Blocking shares loads: a
// value row is converted once for kQ queries, kV vectors of head_dim at a time (4 for one or two
// queries, 2 for four: the sums stay in registers), then a masked step for a head_dim that is not a multiple
// of the vector. Rows go in blocks of kRowBlock: a block's weights are gathered first (one
// pointer in the loop), and its first pass over the channels asks for the rest of each row, so
// the later passes read it from L1 instead of walking memory a cache line per row at a time
// (rows are ldv apart). A lane's accumulator is only stored between blocks (exact f32), so the
// results do not depend on the blocking.
template <size_t kQ, class D, typename T>
HWY_INLINE void AccumulateImpl(D d, const float* HWY_RESTRICT p, size_t ldp, const T* HWY_RESTRICT v, size_t ldv,
                               int n_rows, int head_dim, float* HWY_RESTRICT out, size_t ldo) {
  using V = hn::Vec<D>;
  constexpr int kRowBlock = 64;
  // Vectors of head_dim per pass: 4, or 2 for 4 queries where 16 vector registers must hold
  // their sums (AVX2); AVX-512's 32 hold 4 x 4 (Llama-3's groups: ~4% faster per step, BM_AttendDecode;
  // 8 vectors for one query were slower).
  constexpr size_t kV = kQ <= 2 || hn::MaxLanes(D()) == 16 ? 4 : 2;
  const size_t n = size_t(head_dim);
  const size_t N = hn::Lanes(d);
  HWY_ALIGN float w[kRowBlock][kQ];
  // Channels [i, i + kN * N) of the block's nb rows at vb; whole vectors, or one masked (kTail).
  auto pass = [&](auto kn_, auto tail_, const T* vb, int nb, size_t i) {
    constexpr size_t kN = decltype(kn_)::value;
    constexpr bool kTail = decltype(tail_)::value;
    V a[kQ][kN];
    for (size_t u = 0; u < kQ; ++u) {
      for (size_t x = 0; x < kN; ++x) {
        a[u][x] = kTail ? LoadPartial(d, out + u * ldo + i, n - i) : hn::LoadU(d, out + u * ldo + i + x * N);
      }
    }
    for (int j = 0; j < nb; ++j) {
      const T* vr = vb + size_t(j) * ldv;
      if (i == 0) {
        const char* b = reinterpret_cast<const char*>(vr);
        for (size_t o = 64; o < n * sizeof(T); o += 64) __builtin_prefetch(b + o);
      }
      V r[kN];
      for (size_t x = 0; x < kN; ++x) r[x] = kTail ? LoadPartial(d, vr + i, n - i) : LoadWhole(d, vr + i + x * N);
      for (size_t u = 0; u < kQ; ++u) {
        const V pj = hn::Set(d, w[j][u]);
        for (size_t x = 0; x < kN; ++x) a[u][x] = hn::MulAdd(pj, r[x], a[u][x]);
      }
    }
    for (size_t u = 0; u < kQ; ++u) {
      for (size_t x = 0; x < kN; ++x) {
        if constexpr (kTail) {
          StoreTail(d, a[u][x], out + u * ldo, i, n);
        } else {
          hn::StoreU(a[u][x], d, out + u * ldo + i + x * N);
        }
      }
    }
  };
  for (int j0 = 0; j0 < n_rows; j0 += kRowBlock) {
    const int nb = std::min(kRowBlock, n_rows - j0);
    for (int j = 0; j < nb; ++j) {
      for (size_t u = 0; u < kQ; ++u) w[j][u] = p[u * ldp + size_t(j0 + j)];
    }
    const T* vb = v + size_t(j0) * ldv;
    size_t i = 0;
    for (; i + kV * N <= n; i += kV * N) pass(std::integral_constant<size_t, kV>(), std::false_type(), vb, nb, i);
    if constexpr (kV > 2) {
      for (; i + 2 * N <= n; i += 2 * N) pass(std::integral_constant<size_t, 2>(), std::false_type(), vb, nb, i);
    }
    for (; i + N <= n; i += N) pass(std::integral_constant<size_t, 1>(), std::false_type(), vb, nb, i);
    if (i < n) pass(std::integral_constant<size_t, 1>(), std::true_type(), vb, nb, i);
  }
}

// Queries in passes of 4, then 2, then 1 (a GQA group of 2: one pass), so a key or value row is
// read once per pass.
constexpr int kQueryPass = 4;

template <class D, typename T>
HWY_INLINE void ScoresPasses(D d, const float* q, size_t ldq, int n_q, const T* k, size_t ldk, int n_rows,
                             int head_dim, float scale, float* scores, size_t lds) {
  int i = 0;
  for (; i + kQueryPass <= n_q; i += kQueryPass) {
    ScoresImpl<kQueryPass>(d, q + size_t(i) * ldq, ldq, k, ldk, n_rows, head_dim, scale, scores + size_t(i) * lds, lds);
  }
  for (; i + 2 <= n_q; i += 2) {
    ScoresImpl<2>(d, q + size_t(i) * ldq, ldq, k, ldk, n_rows, head_dim, scale, scores + size_t(i) * lds, lds);
  }
  for (; i < n_q; ++i) {
    ScoresImpl<1>(d, q + size_t(i) * ldq, ldq, k, ldk, n_rows, head_dim, scale, scores + size_t(i) * lds, lds);
  }
}

template <class D, typename T>
HWY_INLINE void AccumulatePasses(D d, const float* p, size_t ldp, int n_q, const T* v, size_t ldv, int n_rows,
                                 int head_dim, float* out, size_t ldo) {
  int i = 0;
  for (; i + kQueryPass <= n_q; i += kQueryPass) {
    AccumulateImpl<kQueryPass>(d, p + size_t(i) * ldp, ldp, v, ldv, n_rows, head_dim, out + size_t(i) * ldo, ldo);
  }
  for (; i + 2 <= n_q; i += 2) {
    AccumulateImpl<2>(d, p + size_t(i) * ldp, ldp, v, ldv, n_rows, head_dim, out + size_t(i) * ldo, ldo);
  }
  for (; i < n_q; ++i) AccumulateImpl<1>(d, p + size_t(i) * ldp, ldp, v, ldv, n_rows, head_dim, out + size_t(i) * ldo, ldo);
}

template <typename T>
void ScoresT(const float* q, size_t ldq, int n_q, const T* k, size_t ldk, int n_rows, int head_dim,
             float scale, float* scores, size_t lds) {
  const hn::ScalableTag<float> d;
  if (size_t(head_dim) >= hn::Lanes(d)) {
    ScoresPasses(d, q, ldq, n_q, k, ldk, n_rows, head_dim, scale, scores, lds);
  } else {
    ScoresPasses(hn::CappedTag<float, 8>(), q, ldq, n_q, k, ldk, n_rows, head_dim, scale, scores, lds);
  }
}

template <typename T>
void AccumulateT(const float* p, size_t ldp, int n_q, const T* v, size_t ldv, int n_rows,
                 int head_dim, float* out, size_t ldo) {
  const hn::ScalableTag<float> d;
  if (size_t(head_dim) >= hn::Lanes(d)) {
    AccumulatePasses(d, p, ldp, n_q, v, ldv, n_rows, head_dim, out, ldo);
  } else {
    AccumulatePasses(hn::CappedTag<float, 8>(), p, ldp, n_q, v, ldv, n_rows, head_dim, out, ldo);
  }
}

void ScoresF32(const float* q, size_t ldq, int n_q, const float* k, size_t ldk, int n, int hd, float s,
               float* o, size_t lds) {
  ScoresT(q, ldq, n_q, k, ldk, n, hd, s, o, lds);
}
void ScoresF16(const float* q, size_t ldq, int n_q, const f16_t* k, size_t ldk, int n, int hd, float s,
               float* o, size_t lds) {
  ScoresT(q, ldq, n_q, k, ldk, n, hd, s, o, lds);
}
void AccumulateF32(const float* p, size_t ldp, int n_q, const float* v, size_t ldv, int n, int hd,
                   float* o, size_t ldo) {
  AccumulateT(p, ldp, n_q, v, ldv, n, hd, o, ldo);
}
void AccumulateF16(const float* p, size_t ldp, int n_q, const f16_t* v, size_t ldv, int n, int hd,
                   float* o, size_t ldo) {
  AccumulateT(p, ldp, n_q, v, ldv, n, hd, o, ldo);
}

template <class D>
HWY_INLINE void RopeRowsImpl(D d, float* x, int n_rows, size_t hd, const float* table) {
  const size_t N = hn::Lanes(d);
  for (int j = 0; j < n_rows; ++j) {
    float* r = x + size_t(j) * hd;
    const float* c = table + size_t(j) * 2 * hd;
    const float* s = c + hd;
    for (size_t i = 0; i < hd; i += N) {
      const auto v = hn::LoadU(d, r + i);
      hn::StoreU(hn::MulAdd(hn::Reverse2(d, v), hn::LoadU(d, s + i), hn::Mul(v, hn::LoadU(d, c + i))), d, r + i);
    }
  }
}

// Neox pairs (i, i + half): both halves are loaded once and rotated into each other.
template <class D>
HWY_INLINE void RopeRowsNeoxImpl(D d, float* x, int n_rows, size_t hd, size_t half, const float* table) {
  const size_t N = hn::Lanes(d);
  for (int j = 0; j < n_rows; ++j) {
    float* r = x + size_t(j) * hd;
    const float* c = table + size_t(j) * 2 * hd;
    const float* s = c + hd;
    for (size_t i = 0; i < half; i += N) {
      const auto a = hn::LoadU(d, r + i), b = hn::LoadU(d, r + i + half);
      hn::StoreU(hn::MulAdd(b, hn::LoadU(d, s + i), hn::Mul(a, hn::LoadU(d, c + i))), d, r + i);
      hn::StoreU(hn::MulAdd(a, hn::LoadU(d, s + i + half), hn::Mul(b, hn::LoadU(d, c + i + half))), d, r + i + half);
    }
  }
}

// Rows rotated by one angle set, cs = (c0, s0, c1, s1, ...) as Rope::angles gives it, adjacent
// pairs: (x0, x1) -> (x0 c - x1 s, x1 c + x0 s), or with the transpose s -> -s; one product
// and one FMA per dim (Rope::rotate, the spec, rounds both products: within a rounding).
#if HWY_TARGET != HWY_SCALAR
template <class D>
HWY_INLINE void RopeSameImpl(D d, float* x, int n_rows, size_t hd, size_t rope_dim, const float* cs, bool transpose) {
  const size_t N = hn::Lanes(d);
  const auto plus = hn::Set(d, 1.0f);
  const auto minus = hn::Neg(plus);
  // Lanes (even, odd): (-1, 1) for R, (1, -1) for R^T.
  const auto sign = transpose ? hn::OddEven(minus, plus) : hn::OddEven(plus, minus);
  for (int j = 0; j < n_rows; ++j) {
    float* r = x + size_t(j) * hd;
    for (size_t i = 0; i < rope_dim; i += N) {
      const auto v = hn::LoadU(d, r + i), a = hn::LoadU(d, cs + i);
      const auto partner = hn::Mul(hn::Reverse2(d, v), hn::Mul(hn::DupOdd(a), sign));
      hn::StoreU(hn::MulAdd(v, hn::DupEven(a), partner), d, r + i);
    }
  }
}
#endif

bool RopeRotateRows(float* x, int n_rows, int head_dim, int rope_dim, const float* cs, bool transpose) {
#if HWY_TARGET == HWY_SCALAR
  return false;  // one lane holds no pair (and the target has no DupOdd)
#else
  const hn::ScalableTag<float> d;
  const size_t rd = size_t(rope_dim);
  if (rd % hn::Lanes(d) == 0) return RopeSameImpl(d, x, n_rows, size_t(head_dim), rd, cs, transpose), true;
  if (rd % 4 == 0) return RopeSameImpl(hn::CappedTag<float, 4>(), x, n_rows, size_t(head_dim), rd, cs, transpose), true;
  return false;
#endif
}

void RopeRowsTable(float* x, int n_rows, int head_dim, const float* table, int pair_stride) {
  const hn::ScalableTag<float> d;
  const size_t hd = size_t(head_dim);
  if (pair_stride > 1) {
    const size_t half = size_t(pair_stride);
    if (half % hn::Lanes(d) == 0) return RopeRowsNeoxImpl(d, x, n_rows, hd, half, table);
    if (half % 4 == 0) return RopeRowsNeoxImpl(hn::CappedTag<float, 4>(), x, n_rows, hd, half, table);
  } else if (hn::MaxLanes(d) >= 2) {  // one lane holds no pair: the loop below
    if (hd % hn::Lanes(d) == 0) return RopeRowsImpl(d, x, n_rows, hd, table);
    if (hd % 8 == 0) return RopeRowsImpl(hn::CappedTag<float, 8>(), x, n_rows, hd, table);
    if (hd % 4 == 0) return RopeRowsImpl(hn::CappedTag<float, 4>(), x, n_rows, hd, table);
  }
  // Odd sizes: pair p is (a, a + stride), a = 2p for adjacent pairs, p for neox halves.
  const size_t stride = size_t(pair_stride), n_pairs = stride == 1 ? hd / 2 : stride;
  for (int j = 0; j < n_rows; ++j) {
    float* r = x + size_t(j) * hd;
    const float* c = table + size_t(j) * 2 * hd;
    for (size_t p = 0; p < n_pairs; ++p) {
      const size_t a = stride == 1 ? 2 * p : p, b = a + stride;
      const float x0 = r[a], x1 = r[b];
      r[a] = x1 * c[hd + a] + x0 * c[a];
      r[b] = x0 * c[hd + b] + x1 * c[b];
    }
  }
}

void ConvertF32ToF16(const float* x, f16_t* y, size_t n) {
  const hn::ScalableTag<float> d;
  const hn::Rebind<hwy::float16_t, decltype(d)> dh;
  const size_t N = hn::Lanes(d);
  auto* yh = reinterpret_cast<hwy::float16_t*>(y);
  size_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::DemoteTo(dh, hn::LoadU(d, x + i)), dh, yh + i);
  for (; i < n; ++i) y[i] = f32_to_f16(x[i]);
}

// 16-bit floats to f32, exactly: f16 (T = f16_t) or bf16 (T = Bf16) vectors as vector_loads-inl.h
// loads them, the last few values by the scalar conversion. One prefetch per 64-byte line of the
// source; the address as an integer, since it may point past x's end.
template <typename T, float (*kScalar)(uint16_t)>
HWY_INLINE void HalfToF32(const uint16_t* x, float* y, size_t n, size_t prefetch_bytes) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  const uintptr_t ahead = reinterpret_cast<uintptr_t>(x) + prefetch_bytes;
  size_t i = 0;
  for (; i + N <= n; i += N) {
    if (prefetch_bytes > 0 && i % 32 == 0) __builtin_prefetch(reinterpret_cast<const void*>(ahead + 2 * i), 0, 2);
    hn::StoreU(LoadWhole(d, reinterpret_cast<const T*>(x + i)), d, y + i);
  }
  for (; i < n; ++i) y[i] = kScalar(x[i]);
}

void ConvertF16ToF32(const f16_t* x, float* y, size_t n, size_t prefetch_bytes) {
  HalfToF32<f16_t, f16_to_f32>(x, y, n, prefetch_bytes);
}
void ConvertBf16ToF32(const bf16_t* x, float* y, size_t n, size_t prefetch_bytes) {
  HalfToF32<Bf16, bf16_to_f32>(x, y, n, prefetch_bytes);
}

// Softmax over x[0, n): vector max, Highway Exp (within a few ulp of expf), float lane sums.
// Tail elements go through the same vector code via a padded buffer, so every element is
// computed the same way wherever it sits.
void Softmax(float* x, int n_int, bool round_f16, float* max_out, float* sum_out) {
  const hn::ScalableTag<float> d;
  const hn::Rebind<hwy::float16_t, decltype(d)> dh;
  const size_t N = hn::Lanes(d), n = size_t(n_int);
  const size_t n_full = n / N * N;
  HWY_ALIGN float tail[hn::MaxLanes(d)];
  auto load_tail = [&](float pad) {
    for (size_t k = 0; k < N; ++k) tail[k] = n_full + k < n ? x[n_full + k] : pad;
    return hn::Load(d, tail);
  };
  auto vmax = hn::Set(d, -HUGE_VALF);
  // A NaN score makes every probability NaN, as in the reference: Max would drop it or make the
  // maximum NaN, and Exp clamps NaN to ~0, which left an "empty" row (sum 0) that attention
  // skips, a silent zero instead of a NaN.
  auto nan = hn::Zero(d);
  for (size_t i = 0; i < n_full; i += N) {
    const auto v = hn::LoadU(d, x + i);
    vmax = hn::Max(vmax, v);
    nan = hn::Or(nan, hn::VecFromMask(d, hn::IsNaN(v)));
  }
  if (n_full < n) {
    const auto v = load_tail(-HUGE_VALF);
    vmax = hn::Max(vmax, v);
    nan = hn::Or(nan, hn::VecFromMask(d, hn::IsNaN(v)));
  }
  if (!hn::AllFalse(d, hn::MaskFromVec(nan))) {
    std::fill(x, x + n, NAN);
    if (max_out) *max_out = NAN;
    if (sum_out) *sum_out = NAN;
    return;
  }
  const auto mx = hn::Set(d, hn::GetLane(hn::MaxOfLanes(d, vmax)));
  auto vsum = hn::Zero(d);
  for (size_t i = 0; i < n_full; i += N) {
    const auto e = hn::Exp(d, hn::Sub(hn::LoadU(d, x + i), mx));
    hn::StoreU(e, d, x + i);
    vsum = hn::Add(vsum, e);
  }
  if (n_full < n) {
    const auto e = hn::Exp(d, hn::Sub(load_tail(-HUGE_VALF), mx));
    hn::Store(e, d, tail);
    vsum = hn::Add(vsum, e);
    for (size_t k = 0; n_full + k < n; ++k) x[n_full + k] = tail[k];
  }
  const float total = hn::GetLane(hn::SumOfLanes(d, vsum));
  if (max_out) *max_out = hn::GetLane(mx);
  if (sum_out) *sum_out = total;
  const auto inv = hn::Set(d, 1.0f / total);
  auto finish = [&](auto v) {
    v = hn::Mul(v, inv);
    return round_f16 ? hn::PromoteTo(d, hn::DemoteTo(dh, v)) : v;
  };
  for (size_t i = 0; i < n_full; i += N) hn::StoreU(finish(hn::LoadU(d, x + i)), d, x + i);
  if (n_full < n) {
    hn::Store(finish(load_tail(0.0f)), d, tail);
    for (size_t k = 0; n_full + k < n; ++k) x[n_full + k] = tail[k];
  }
}


}  // namespace HWY_NAMESPACE
}  // namespace kvq::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq::cpu {
HWY_EXPORT(ScoresF32);
HWY_EXPORT(ScoresF16);
HWY_EXPORT(AccumulateF32);
HWY_EXPORT(AccumulateF16);
HWY_EXPORT(RopeRowsTable);
HWY_EXPORT(RopeRotateRows);
HWY_EXPORT(ConvertF32ToF16);
HWY_EXPORT(ConvertF16ToF32);
HWY_EXPORT(ConvertBf16ToF32);
HWY_EXPORT(Softmax);
void softmax(float* x, int n, bool round_f16, float* max, float* sum) {
  HWY_DYNAMIC_DISPATCH(Softmax)(x, n, round_f16, max, sum);
}
void attn_scores(const float* q, size_t ldq, int n_q, const float* k, size_t ldk, int n, int hd, float s,
                 float* o, size_t lds) {
  HWY_DYNAMIC_DISPATCH(ScoresF32)(q, ldq, n_q, k, ldk, n, hd, s, o, lds);
}
void attn_scores(const float* q, size_t ldq, int n_q, const f16_t* k, size_t ldk, int n, int hd, float s,
                 float* o, size_t lds) {
  HWY_DYNAMIC_DISPATCH(ScoresF16)(q, ldq, n_q, k, ldk, n, hd, s, o, lds);
}
void attn_accumulate(const float* p, size_t ldp, int n_q, const float* v, size_t ldv, int n, int hd,
                     float* o, size_t ldo) {
  HWY_DYNAMIC_DISPATCH(AccumulateF32)(p, ldp, n_q, v, ldv, n, hd, o, ldo);
}
void attn_accumulate(const float* p, size_t ldp, int n_q, const f16_t* v, size_t ldv, int n, int hd,
                     float* o, size_t ldo) {
  HWY_DYNAMIC_DISPATCH(AccumulateF16)(p, ldp, n_q, v, ldv, n, hd, o, ldo);
}
void rope_rows_table(float* x, int n_rows, int head_dim, const float* table, int pair_stride) {
  HWY_DYNAMIC_DISPATCH(RopeRowsTable)(x, n_rows, head_dim, table, pair_stride);
}
bool rope_rotate_rows(float* x, int n_rows, int head_dim, int rope_dim, const float* cs, bool transpose) {
  return HWY_DYNAMIC_DISPATCH(RopeRotateRows)(x, n_rows, head_dim, rope_dim, cs, transpose);
}
void convert_f32_to_f16(const float* x, f16_t* y, size_t n) {
  HWY_DYNAMIC_DISPATCH(ConvertF32ToF16)(x, y, n);
}
void convert_f16_to_f32(const f16_t* x, float* y, size_t n, size_t prefetch_bytes) {
  HWY_DYNAMIC_DISPATCH(ConvertF16ToF32)(x, y, n, prefetch_bytes);
}
void convert_bf16_to_f32(const bf16_t* x, float* y, size_t n, size_t prefetch_bytes) {
  HWY_DYNAMIC_DISPATCH(ConvertBf16ToF32)(x, y, n, prefetch_bytes);
}
}  // namespace kvq::cpu
#endif
