// SPDX-License-Identifier: MIT
// The walk over a KVQuant run's sparse outliers that the key and value kernels
// (kv_fused_codebook.cc, kv_fused_codebook_values.cc) correct their dense sums with. Per-target
// include guard, as Highway requires.
#if defined(KVQ_KERNELS_KV_OUTLIERS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVQ_KERNELS_KV_OUTLIERS_INL_H_
#undef KVQ_KERNELS_KV_OUTLIERS_INL_H_
#else
#define KVQ_KERNELS_KV_OUTLIERS_INL_H_
#endif

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "hwy/highway.h"
#include "kernels/cpu/kv_run-inl.h"
#include "kernels/kv_run.h"
#include "kernels/rope.h"

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

// The sparse outliers of a KVQuant run (§3.4), the run's list of its head (kernels/kv_run.h),
// each stored as its correction x - dense to what its code decodes to (KvquantStore), so that
// it moves what the dense pass computed without the code being decoded again. Functions of
// their own, not inlined, so that the walk gets registers of its own: inlined in the row
// kernels it spilled and reloaded its operands for every entry (~70 instructions per outlier,
// measured).
// Calls add(t, c, v) for each of the run's outliers (its token within the run, channel within
// the head, stored correction) in order; except that on AVX2 a sealed list (kernels/kv_run.h)
// goes 8 entries at a time to vec8(t, c, v) with them as lanes, decoded in vectors, and
// vec8 must do what add does, lane by lane in order; the last entries go to add (vec8 nullptr:
// every entry to add). A run that reaches its list's end takes it without scanning
// (sealed_outlier_range).
template <class Vec8, class Add>
HWY_INLINE void ForRunOutliers(const KvRun& r, const Vec8& vec8, const Add& add) {
#if HWY_TARGET == HWY_AVX2
  if constexpr (!std::is_null_pointer_v<Vec8>) {  // nullptr: every entry to add
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
  }
#else
  (void)vec8;
#endif
  for_each_run_outlier(r, add, F16At);
}

// Where a pass has two or four queries, their corrections go in the lanes of one small vector:
// a run's scores (keys) or a head's outputs (values) are transposed to [position][query] on
// entry and back on exit, so that an outlier costs one vector update instead of one scalar
// update per query. Each lane does what the one-by-one path does for its query, in the same
// order (fma(d, x, s) per entry), so a query's result does not depend on its pass: prefill and
// decode agree bit for bit. Targets with FMA, where MulAdd fuses as std::fma does.
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
inline constexpr bool kOutliersInLanes = true;
#else
inline constexpr bool kOutliersInLanes = false;
#endif
// The most a lane buffer holds: tokens of a run (attention's runs end at the key table's
// offsets) and values of a head.
inline constexpr size_t kLaneTokens = size_t(Rope::kKeyOffsets), kLaneHeadDim = 512;

// kQ (2 or 4) rows of x, ld apart, and their lanes [n][kQ]: rows to lanes (kToLanes:
// lanes[i * kQ + j] = x[j * ld + i] for i < n, X a const float*) or lanes back to rows (X float*).
template <int kQ, bool kToLanes, class X>
HWY_INLINE void MoveLanes(X x, size_t ld, size_t n, float* HWY_RESTRICT lanes) {
  static_assert(kQ == 2 || kQ == 4);
  const hn::ScalableTag<float> df;
  const size_t N = hn::Lanes(df);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    hn::Vec<decltype(df)> v[4];
    if constexpr (kToLanes) {
      for (int j = 0; j < kQ; ++j) v[j] = hn::LoadU(df, x + size_t(j) * ld + i);
      if constexpr (kQ == 4) {
        hn::StoreInterleaved4(v[0], v[1], v[2], v[3], df, lanes + i * kQ);
      } else {
        hn::StoreInterleaved2(v[0], v[1], df, lanes + i * kQ);
      }
    } else {
      if constexpr (kQ == 4) {
        hn::LoadInterleaved4(df, lanes + i * kQ, v[0], v[1], v[2], v[3]);
      } else {
        hn::LoadInterleaved2(df, lanes + i * kQ, v[0], v[1]);
      }
      for (int j = 0; j < kQ; ++j) hn::StoreU(v[j], df, x + size_t(j) * ld + i);
    }
  }
  for (; i < n; ++i) {
    for (int j = 0; j < kQ; ++j) {
      if constexpr (kToLanes) {
        lanes[i * kQ + size_t(j)] = x[size_t(j) * ld + i];
      } else {
        x[size_t(j) * ld + i] = lanes[i * kQ + size_t(j)];
      }
    }
  }
}
template <int kQ>
HWY_INLINE void RowsToLanes(const float* HWY_RESTRICT x, size_t ld, size_t n, float* HWY_RESTRICT lanes) {
  MoveLanes<kQ, true>(x, ld, n, lanes);
}
template <int kQ>
HWY_INLINE void LanesToRows(float* HWY_RESTRICT lanes, size_t n, float* HWY_RESTRICT x, size_t ld) {
  MoveLanes<kQ, false>(x, ld, n, lanes);
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#endif  // KVQ_KERNELS_KV_OUTLIERS_INL_H_
