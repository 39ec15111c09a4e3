// SPDX-License-Identifier: MIT
// Highway matmul over f32 weights, or f16 / bf16 weights converted in registers as they are
// loaded: register-blocked 4 tokens x 4 rows, one vector accumulator per output, fused
// multiply-add along n_in, a zero-padded tail, then the block's sums in one transpose. A few
// tokens (a decode step) go rows outermost with the next rows prefetched, as their weights come
// from memory; more tokens (prefill) go tokens outermost.
#include <algorithm>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/matmul.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/highway.h"
#include "kernels/cpu/lane_sums-inl.h"
#include "kernels/cpu/vector_loads-inl.h"
#include "kernels/cpu/ops.h"

HWY_BEFORE_NAMESPACE();
namespace kvq::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Rows of f32, f16 words or bf16 (Bf16) loaded as f32 (vector_loads-inl.h).
using kvq::HWY_NAMESPACE::Bf16;
using kvq::HWY_NAMESPACE::LoadPartial;
using kvq::HWY_NAMESPACE::LoadWhole;

// Computes the kT x kR block of outputs starting at token t0, row r0. Each output's accumulator
// sees the same sequence of MulAdds regardless of kT/kR, which keeps results tiling-independent.
// kPrefetch: also prefetches kR rows from pf (ldw apart) into L2, a line of each per 64 bytes
// of weights read, as the block reads its own; W: the weights' type (float, f16 words or Bf16).
template <size_t kT, size_t kR, bool kPrefetch = false, typename W>
HWY_INLINE void MatmulBlock(const MatmulParamsT<W>& p, int t0, int r0, const W* pf = nullptr) {
  const hn::ScalableTag<float> d;
  using V = hn::Vec<decltype(d)>;
  const size_t N = hn::Lanes(d);
  const size_t n_in = size_t(p.n_in);
  V acc[kT][kR];
  for (size_t t = 0; t < kT; ++t)
    for (size_t r = 0; r < kR; ++r) acc[t][r] = hn::Zero(d);
  const float* xr[kT];
  const W* wr[kR];
  for (size_t t = 0; t < kT; ++t) xr[t] = p.x + (t0 + t) * p.ldx;
  for (size_t r = 0; r < kR; ++r) wr[r] = p.w + (r0 + r) * p.ldw;
  size_t i = 0;
  for (; i + N <= n_in; i += N) {
    V xv[kT];
    for (size_t t = 0; t < kT; ++t) xv[t] = hn::LoadU(d, xr[t] + i);
    if constexpr (kPrefetch) {
      if ((i * sizeof(W)) % 64 == 0) {
        for (size_t r = 0; r < kR; ++r) __builtin_prefetch(pf + r * p.ldw + i, 0, 2);
      }
    }
    for (size_t r = 0; r < kR; ++r) {
      const V wv = LoadWhole(d, wr[r] + i);
      for (size_t t = 0; t < kT; ++t) acc[t][r] = hn::MulAdd(xv[t], wv, acc[t][r]);
    }
  }
  if (i < n_in) {
    V xv[kT];
    for (size_t t = 0; t < kT; ++t) xv[t] = LoadPartial(d, xr[t] + i, n_in - i);
    for (size_t r = 0; r < kR; ++r) {
      const V wv = LoadPartial(d, wr[r] + i, n_in - i);
      for (size_t t = 0; t < kT; ++t) acc[t][r] = hn::MulAdd(xv[t], wv, acc[t][r]);
    }
  }
  for (size_t t = 0; t < kT; ++t) {
    float* y = p.y + (t0 + t) * p.ldy + r0;
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
    // Four rows' sums in one transpose, bit for bit SumOfLanes of each (lane_sums-inl.h): at
    // n_in 256 the sums one by one cost half as much as the block's multiply-adds.
    if constexpr (kR == 4) {
#if HWY_TARGET <= HWY_AVX3
      const __m512i order = _mm512_setr_epi32(0, 8, 4, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
      _mm_storeu_ps(y, _mm512_castps512_ps128(_mm512_permutexvar_ps(order, kvq::HWY_NAMESPACE::SumOfLanes16x4(acc[t]).raw)));
#else
      const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 0, 0, 0, 0);
      _mm_storeu_ps(y, _mm256_castps256_ps128(_mm256_permutevar8x32_ps(kvq::HWY_NAMESPACE::SumOfLanes4(acc[t]).raw, order)));
#endif
      continue;
    }
#endif
    for (size_t r = 0; r < kR; ++r) y[r] = hn::GetLane(hn::SumOfLanes(d, acc[t][r]));
  }
}

template <size_t kT, typename W>
HWY_INLINE void MatmulTokens(const MatmulParamsT<W>& p, int t0) {
  int r = 0;
  for (; r + 4 <= p.n_rows; r += 4) MatmulBlock<kT, 4>(p, t0, r);
  for (; r < p.n_rows; ++r) MatmulBlock<kT, 1>(p, t0, r);
}

// Up to this many tokens (a decode step of up to 16 sequences) the weights are what a matmul
// reads from memory, and the register blocks run rows outermost: each 4 rows are read once,
// their next 4 prefetched into L2 by the first 4 tokens' pass, and the other tokens' passes
// find them in L1 (kernels_bench BM_MatmulFromMemory, one thread on the project's Zen 4 VM: 8
// tokens read the weights at 5.4-5.7 GB/s tokens outermost, 10.2-11.0 so).
constexpr int kFewTokens = 16;

// Rows [r, r + kR) for every token, 4 at a time; the first pass prefetches the kR rows at pf
// unless pf is null.
template <size_t kR, typename W>
HWY_INLINE void RowsForAllTokens(const MatmulParamsT<W>& p, int r, const W* pf) {
  int t = 0;
  if (pf) {
    t = std::min(p.n_tokens, 4);
    switch (t) {
      case 4: MatmulBlock<4, kR, true>(p, 0, r, pf); break;
      case 3: MatmulBlock<3, kR, true>(p, 0, r, pf); break;
      case 2: MatmulBlock<2, kR, true>(p, 0, r, pf); break;
      case 1: MatmulBlock<1, kR, true>(p, 0, r, pf); break;
      default: break;
    }
  }
  for (; t + 4 <= p.n_tokens; t += 4) MatmulBlock<4, kR>(p, t, r);
  switch (p.n_tokens - t) {
    case 3: MatmulBlock<3, kR>(p, t, r); break;
    case 2: MatmulBlock<2, kR>(p, t, r); break;
    case 1: MatmulBlock<1, kR>(p, t, r); break;
    default: break;
  }
}

template <typename W>
HWY_INLINE void MatmulFewTokens(const MatmulParamsT<W>& p) {
  int r = 0;
  for (; r + 4 <= p.n_rows; r += 4) {
    RowsForAllTokens<4>(p, r, r + 8 <= p.n_rows ? p.w + size_t(r + 4) * p.ldw : static_cast<const W*>(nullptr));
  }
  for (; r < p.n_rows; ++r) RowsForAllTokens<1>(p, r, static_cast<const W*>(nullptr));
}

template <typename W>
HWY_INLINE void MatmulT(const MatmulParamsT<W>& p) {
  if (p.n_tokens <= kFewTokens) return MatmulFewTokens(p);
  int t = 0;
  for (; t + 4 <= p.n_tokens; t += 4) MatmulTokens<4>(p, t);
  switch (p.n_tokens - t) {
    case 3: MatmulTokens<3>(p, t); break;
    case 2: MatmulTokens<2>(p, t); break;
    case 1: MatmulTokens<1>(p, t); break;
    default: break;
  }
}

void Matmul(const MatmulParams& p) { MatmulT(p); }
void MatmulHalf(const MatmulHalfParams& p) {
  const MatmulParamsT<uint16_t>& h = p.m;
  if (p.type == HalfType::kF16) return MatmulT(h);
  MatmulT(MatmulParamsT<Bf16>{h.x, reinterpret_cast<const Bf16*>(h.w), h.y, h.ldx, h.ldw, h.ldy, h.n_tokens, h.n_rows,
                              h.n_in});
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq::cpu {
HWY_EXPORT(Matmul);
HWY_EXPORT(MatmulHalf);
void matmul(const MatmulParams& p) { HWY_DYNAMIC_DISPATCH(Matmul)(p); }
void matmul(const MatmulHalfParams& p) { HWY_DYNAMIC_DISPATCH(MatmulHalf)(p); }
}  // namespace kvq::cpu
#endif
