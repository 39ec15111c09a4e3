// SPDX-License-Identifier: MIT
// Highway helpers over a KvRun shared by the run decoders (kv_decode.cc) and the fused kernels
// (kv_fused.cc). Per-target include guard, as Highway requires.
#if defined(KVQ_KERNELS_KV_RUN_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVQ_KERNELS_KV_RUN_INL_H_
#undef KVQ_KERNELS_KV_RUN_INL_H_
#else
#define KVQ_KERNELS_KV_RUN_INL_H_
#endif

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "hwy/highway.h"
#include "kernels/kv_run.h"
#include "quant/bitpack-inl.h"
#include "quant/normalize.h"

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

// A stored f16 as float (F16ToF32 by value), for the outlier walks of kernels/kv_run.h.
// Not HWY_INLINE: the outlier walks that take it are templates compiled outside the target.
inline float F16At(f16_t h) { return F16ToF32(&h); }

// f16 [n] -> f32 [n].
HWY_INLINE void F16Row(const f16_t* HWY_RESTRICT x, size_t n, float* HWY_RESTRICT y) {
  const DF df;
  const hn::Rebind<hwy::float16_t, DF> dh;
  const size_t N = hn::Lanes(df);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    hn::StoreU(hn::PromoteTo(df, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(x) + i)), df, y + i);
  }
  for (; i < n; ++i) y[i] = F16ToF32(x + i);
}

// Zero and half-range of token t of a codebook-row run (KvRun::norm_off), converted with the
// target's f16 instruction and without norm_float's reciprocal, which no decoder uses.
HWY_INLINE NormF RunNorm(const KvRun& r, int t) {
  const uint8_t* np = r.rows + r.norm_off + size_t(t) * r.meta_stride;
  if (r.norm8) {  // one store's constant: the same way for every token
    // norm8_float's values, exactly (products by powers of two), without its ldexp calls and
    // reciprocal, which cost a decode step ~2x in time (measured).
    NormParams8 p8;
    std::memcpy(&p8, np, sizeof p8);
    const int e = int(p8.log_half >> 4) + kNorm8MinExp;
    NormF f{};
    f.half = kNorm8Mantissa[p8.log_half & 15] * std::bit_cast<float>(uint32_t(e + 127) << 23);
    f.zero = float(p8.zero) * std::bit_cast<float>(uint32_t(e - 5 + 127) << 23);
    return f;
  }
  NormF f{};
  f.zero = F16ToF32(np + offsetof(NormParams, zero));
  f.half = F16ToF32(np + offsetof(NormParams, half_range));
  return f;
}

// This head's sparse outliers of token t of run r are entries [*start, *stop): what
// for_each_run_outlier's walk finds (kernels/kv_run.h), by counting instead of walking. The
// token's entries are sorted by channel, so the head's range starts after those below
// out_ch0 and stops before those at or above out_ch0 + head_dim: N entries at a time from
// the token's end, the entries at or above each bound are counted, without a branch per
// entry (the walk's exits were mispredicted once per token and head). The windows may start
// before the token's first entry (those lanes are masked) but never before the page's values,
// which precede the indices in the block (quant/outlier_layout.h); where a window would, the
// token is walked. Specification: the walk (tests/unit/kernels/outlier_walk_test.cc).
template <class P, class I>
HWY_INLINE void RunOutlierRange(const KvRun& r, int t, uint32_t* HWY_RESTRICT start, uint32_t* HWY_RESTRICT stop) {
#if HWY_TARGET != HWY_SCALAR
  const P* ptr = reinterpret_cast<const P*>(r.out_ptr);
  const I* idx = reinterpret_cast<const I*>(r.out_idx);
  const uint32_t e = ptr[t], end = ptr[t + 1];
  const int lo = r.out_ch0, hi = r.out_ch0 + r.head_dim;
  const hn::ScalableTag<I> d;
  const int64_t n = int64_t(hn::Lanes(d));
  // The first entry the windows read, relative to idx, and the first readable one.
  const int64_t first = int64_t(end) - (int64_t(end - e) + n - 1) / n * n;
  const int64_t floor = -int64_t((r.out_idx - reinterpret_cast<const uint8_t*>(r.out_val)) / ptrdiff_t(sizeof(I)));
  if (first >= floor) {
    // Every channel is below 2^(8 sizeof(I)); a head ending past the largest index keeps the
    // whole tail.
    constexpr int kMaxIdx = int((1u << (8 * sizeof(I))) - 1u);
    const auto vlo = hn::Set(d, I(lo));
    const auto vhi = hn::Set(d, I(std::min(hi, kMaxIdx)));
    size_t ge_lo = 0, ge_hi = 0;
    for (int64_t a = first; a < int64_t(end); a += n) {
      const auto v = hn::LoadU(d, idx + a);
      const auto before = hn::FirstN(d, size_t(std::max<int64_t>(0, int64_t(e) - a)));
      ge_lo += hn::CountTrue(d, hn::AndNot(before, hn::Eq(hn::Max(v, vlo), v)));
      ge_hi += hn::CountTrue(d, hn::AndNot(before, hn::Eq(hn::Max(v, vhi), v)));
    }
    *start = end - uint32_t(ge_lo);
    *stop = hi > kMaxIdx ? end : end - uint32_t(ge_hi);
    return;
  }
#endif
  run_outlier_range_as<P, I>(r, t, start, stop);
}

// Calls fn(channel within the head, exact value) for this head's outliers of token t of run
// r, as for_each_run_outlier does, with pointer type P and index type I
// (kernels/kv_run.h: with_outlier_types).
template <class P, class I, class Fn>
HWY_INLINE void ForEachRunOutlier(const KvRun& r, int t, const Fn& fn) {
  uint32_t b, u;
  RunOutlierRange<P, I>(r, t, &b, &u);
  const I* idx = reinterpret_cast<const I*>(r.out_idx);
  for (uint32_t k = b; k < u; ++k) fn(size_t(int(idx[k]) - r.out_ch0), F16ToF32(r.out_val + k));
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#endif  // KVQ_KERNELS_KV_RUN_INL_H_
