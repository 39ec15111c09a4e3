// SPDX-License-Identifier: MIT
// Several vectors' horizontal sums at once, bit for bit GetLane(SumOfLanes(v)) of each: the same
// additions in the same grouping as SumOfLanes (the two halves, then lanes two apart, then
// neighbours; IEEE addition commutes), as one transpose instead of ~8 instructions per vector.
// For the score passes of the dense kernels (attention_ops.cc) and the fused ones
// (kv_fused_*.cc). x86 only (the 8-lane forms on AVX2 and AVX3, the 16-lane forms on AVX3);
// other targets sum each vector. Per-target include guard, as Highway requires.
#if defined(KVQ_KERNELS_LANE_SUMS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVQ_KERNELS_LANE_SUMS_INL_H_
#undef KVQ_KERNELS_LANE_SUMS_INL_H_
#else
#define KVQ_KERNELS_LANE_SUMS_INL_H_
#endif

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
// 8-lane vectors (AVX2, and the AVX3 target's 256-bit kernels: Highway's SumOfLanes for them
// is the same code there).
// Lane k: the sum of a[k]'s lanes, k < 8, in 21 instructions for the 8 sums.
HWY_INLINE hn::Vec256<float> SumOfLanes8(const hn::Vec256<float> (&a)[8]) {
  __m256 h[4];
  for (int k = 0; k < 4; ++k) {  // [a_k: lanes i + (i + 4), i < 4 | a_k+4: the same]
    h[k] = _mm256_add_ps(_mm256_permute2f128_ps(a[k].raw, a[k + 4].raw, 0x20),
                         _mm256_permute2f128_ps(a[k].raw, a[k + 4].raw, 0x31));
  }
  // [a_k: (0 + 2), (1 + 3), a_k+1: (0 + 2), (1 + 3) | the same for a_k+4, a_k+5]
  const __m256 s01 = _mm256_add_ps(_mm256_shuffle_ps(h[0], h[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm256_shuffle_ps(h[0], h[1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m256 s23 = _mm256_add_ps(_mm256_shuffle_ps(h[2], h[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm256_shuffle_ps(h[2], h[3], _MM_SHUFFLE(3, 2, 3, 2)));
  return hn::Vec256<float>{_mm256_add_ps(_mm256_shuffle_ps(s01, s23, _MM_SHUFFLE(2, 0, 2, 0)),
                                         _mm256_shuffle_ps(s01, s23, _MM_SHUFFLE(3, 1, 3, 1)))};
}

// Lanes 0, 4, 1, 5: the sums of a[0], a[1], a[2], a[3]'s lanes, in 9 instructions for the four.
HWY_INLINE hn::Vec256<float> SumOfLanes4(const hn::Vec256<float> (&a)[4]) {
  // [a0: lanes i + (i + 4), i < 4 | a1: the same], and a2, a3
  const __m256 h01 = _mm256_add_ps(_mm256_permute2f128_ps(a[0].raw, a[1].raw, 0x20),
                                   _mm256_permute2f128_ps(a[0].raw, a[1].raw, 0x31));
  const __m256 h23 = _mm256_add_ps(_mm256_permute2f128_ps(a[2].raw, a[3].raw, 0x20),
                                   _mm256_permute2f128_ps(a[2].raw, a[3].raw, 0x31));
  // [a0: (0 + 2), (1 + 3), a2: (0 + 2), (1 + 3) | the same for a1, a3]
  const __m256 s = _mm256_add_ps(_mm256_shuffle_ps(h01, h23, _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm256_shuffle_ps(h01, h23, _MM_SHUFFLE(3, 2, 3, 2)));
  return hn::Vec256<float>{_mm256_add_ps(_mm256_shuffle_ps(s, s, _MM_SHUFFLE(2, 0, 2, 0)),
                                         _mm256_shuffle_ps(s, s, _MM_SHUFFLE(3, 1, 3, 1)))};
}
#endif

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
// 16-lane vectors. One grouping, spelled out here rather than left to _mm512_reduce_add_ps
// (GCC's is this grouping; clang's is whatever its vector reduction lowers to), so that the
// one-vector and the transposed forms agree bit for bit with every compiler: with
// h_i = x_i + x_(i+8) (i < 8), g_j = h_j + h_(j+4) (j < 4), the sum is (g_0 + g_2) + (g_1 + g_3).
HWY_INLINE float SumOfLanes16(hn::Vec512<float> v) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v.raw),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v.raw), 1)));
  const __m128 g = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  const __m128 p = _mm_add_ps(g, _mm_movehl_ps(g, g));          // g_0 + g_2, g_1 + g_3
  return _mm_cvtss_f32(_mm_add_ss(p, _mm_movehdup_ps(p)));      // their sum
}

namespace detail {
// [h(a): 8 lanes | h(b): 8 lanes] of SumOfLanes16's grouping.
HWY_INLINE __m512 HalfSums16(__m512 a, __m512 b) {
  return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                       _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
}
// From x = [h(a) | h(b)], y = [h(c) | h(d)]: quarters g(a), g(b), g(c), g(d).
HWY_INLINE __m512 QuarterSums16(__m512 x, __m512 y) {
  return _mm512_add_ps(_mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(3, 1, 3, 1)));
}
// Per quarter q, from the g of two vectors A_q (of x) and B_q (of y): [g0 + g2, g1 + g3] of
// A_q, then of B_q; then each quarter's lanes 0 and 1 summed: [sum A_q, sum B_q, the same].
HWY_INLINE __m512 LastSums16(__m512 x, __m512 y) {
  const __m512 s = _mm512_add_ps(_mm512_shuffle_ps(x, y, _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm512_shuffle_ps(x, y, _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm512_add_ps(_mm512_shuffle_ps(s, s, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_ps(s, s, _MM_SHUFFLE(3, 1, 3, 1)));
}
}  // namespace detail

// Lane k: SumOfLanes16(a[k]), k < 8, in 27 instructions for the 8 sums (~11 each alone): the
// 16-lane SumOfLanes8, so that callers take 8 sums of either width alike.
HWY_INLINE hn::Vec256<float> SumOfLanes8(const hn::Vec512<float> (&a)[8]) {
  const __m512 z01 = detail::QuarterSums16(detail::HalfSums16(a[0].raw, a[4].raw),   // a0 a4 a1 a5
                                           detail::HalfSums16(a[1].raw, a[5].raw));
  const __m512 z23 = detail::QuarterSums16(detail::HalfSums16(a[2].raw, a[6].raw),   // a2 a6 a3 a7
                                           detail::HalfSums16(a[3].raw, a[7].raw));
  // Quarters [a0 a2 ..], [a4 a6 ..], [a1 a3 ..], [a5 a7 ..]: lanes 0 8 1 9 4 12 5 13.
  const __m512 f = detail::LastSums16(z01, z23);
  const __m512i order = _mm512_setr_epi32(0, 8, 1, 9, 4, 12, 5, 13, 0, 0, 0, 0, 0, 0, 0, 0);
  return hn::Vec256<float>{_mm512_castps512_ps256(_mm512_permutexvar_ps(order, f))};
}

// Lanes 0, 8, 4, 12: SumOfLanes16 of a[0], a[1], a[2], a[3], in 12 instructions for the four.
HWY_INLINE hn::Vec512<float> SumOfLanes16x4(const hn::Vec512<float> (&a)[4]) {
  // Quarters g(a0), g(a2), g(a1), g(a3); then each quarter's own sum in its lanes.
  const __m512 z = detail::QuarterSums16(detail::HalfSums16(a[0].raw, a[2].raw), detail::HalfSums16(a[1].raw, a[3].raw));
  return hn::Vec512<float>{detail::LastSums16(z, z)};
}
#endif

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#endif  // KVQ_KERNELS_LANE_SUMS_INL_H_
