// SPDX-License-Identifier: MIT
// Several vectors' horizontal sums at once, bit for bit GetLane(SumOfLanes(v)) of each: the same
// additions in the same grouping as SumOfLanes (the two halves, then lanes two apart, then
// neighbours; IEEE addition commutes), as one transpose instead of ~8 instructions per vector.
// For the score passes of the dense kernels (attention_ops.cc) and the fused ones
// (kv_fused_*.cc). AVX2 only; other targets sum each vector. Per-target include guard, as
// Highway requires.
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

#if HWY_TARGET == HWY_AVX2
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

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#endif  // KVQ_KERNELS_LANE_SUMS_INL_H_
