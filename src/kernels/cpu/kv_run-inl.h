// SPDX-License-Identifier: MIT
// Highway helpers over a KvRun shared by the run decoders (kv_decode.cc) and the fused kernels
// (kv_fused_*.cc). Per-target include guard, as Highway requires.
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

// A stored f16 as float (F16ToF32 by value), for the outlier walk of kernels/kv_run.h, which
// inlines it into the target's kernels.
HWY_INLINE float F16At(f16_t h) { return F16ToF32(&h); }

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

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#endif  // KVQ_KERNELS_KV_RUN_INL_H_
