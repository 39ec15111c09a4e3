// SPDX-License-Identifier: MIT
// Activations rounded through q8_0 / q8_K blocks: scalar references and Highway versions that
// quantize and dequantize in registers (no block is written). Bit-identical: the same float
// products, roundf for q8_0 and round-half-even (nearbyint) for q8_K, and a zero code
// normalized to +0 before the scale as the int8 round trip of the references does.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/activation_round.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/ggml_blocks-inl.h"
#include "quant/weight/q8_k.h"

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

// True when the kBlock values at x are all finite; also their largest magnitude in *amax.
template <size_t kBlock>
HWY_INLINE bool FiniteAbsMax(const float* HWY_RESTRICT x, float* amax) {
  const DF df;
  const size_t N = hn::Lanes(df);
  auto m = hn::Zero(df);
  auto finite = hn::Eq(m, m);
  for (size_t j = 0; j < kBlock; j += N) {
    const auto v = hn::LoadU(df, x + j);
    finite = hn::And(finite, hn::IsFinite(v));
    m = hn::Max(m, hn::Abs(v));
  }
  *amax = hn::GetLane(hn::MaxOfLanes(df, m));
  return hn::AllTrue(df, finite);
}

// The first value of the q8_K block at x whose magnitude is amax (block_signed_absmax).
HWY_INLINE float SignedAbsMax(const float* HWY_RESTRICT x, float amax) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const auto va = hn::Set(df, amax);
  for (size_t j = 0; j < size_t(kQK_K); j += N) {
    const intptr_t at = hn::FindFirstTrue(df, hn::Eq(hn::Abs(hn::LoadU(df, x + j)), va));
    if (at >= 0) return x[j + size_t(at)];
  }
  return 0;
}

void RoundRowQ8_0Simd(const float* HWY_RESTRICT x, float* HWY_RESTRICT y, int64_t n) {
  const DF df;
  const size_t N = hn::Lanes(df);
  for (int64_t i = 0; i < n; i += kQK8_0) {
    float amax;
    if (!FiniteAbsMax<kQK8_0>(x + i, &amax)) {
      for (int j = 0; j < kQK8_0; ++j) y[i + j] = x[i + j];
      continue;
    }
    const float d = amax / ((1 << 7) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    const auto vid = hn::Set(df, id), vd = hn::Set(df, f16_to_f32(f32_to_f16(d)));
    for (size_t j = 0; j < size_t(kQK8_0); j += N) {
      // + 0 turns a -0 code into +0, as int8_t(roundf(...)) does.
      const auto q = hn::Add(RoundHalfAway(hn::Mul(hn::LoadU(df, x + i + j), vid)), hn::Zero(df));
      hn::StoreU(hn::Mul(q, vd), df, y + i + j);
    }
  }
}

void RoundRowQ8_KSimd(const float* HWY_RESTRICT x, float* HWY_RESTRICT y, int64_t n) {
  const DF df;
  const size_t N = hn::Lanes(df);
  constexpr int kBlock = kQK_K;
  for (int64_t i = 0; i < n; i += kBlock) {
    const float* xb = x + i;
    float amax;
    if (!FiniteAbsMax<kBlock>(xb, &amax)) {
      for (int j = 0; j < kBlock; ++j) y[i + j] = xb[j];
      continue;
    }
    if (amax == 0) {
      for (size_t j = 0; j < size_t(kBlock); j += N) hn::StoreU(hn::Zero(df), df, y + i + j);
      continue;
    }
    const float iscale = -127.0f / SignedAbsMax(xb, amax);
    const auto vis = hn::Set(df, iscale), vd = hn::Set(df, 1 / iscale), k127 = hn::Set(df, 127.0f);
    for (size_t j = 0; j < size_t(kBlock); j += N) {
      const auto q = hn::Add(hn::Min(hn::Round(hn::Mul(vis, hn::LoadU(df, xb + j))), k127), hn::Zero(df));
      hn::StoreU(hn::Mul(vd, q), df, y + i + j);
    }
  }
}

// quantize_row_q8_k_ref in registers: the same codes, bsums and d.
void QuantizeRowQ8_KSimd(const float* HWY_RESTRICT x, BlockQ8_K* HWY_RESTRICT y, int64_t n) {
  const DF df;
  const DI di;
  const hn::Rebind<int8_t, DI> di8;
  const size_t N = hn::Lanes(df);
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    float amax;
    FiniteAbsMax<kQK_K>(x, &amax);  // the caller checked finiteness
    if (amax == 0) {
      y[i] = {};
      continue;
    }
    const float iscale = -127.0f / SignedAbsMax(x, amax);
    const auto vis = hn::Set(df, iscale), k127 = hn::Set(df, 127.0f);
    for (size_t j = 0; j < size_t(kQK_K); j += N) {
      const auto q = hn::ConvertTo(di, hn::Min(hn::Round(hn::Mul(vis, hn::LoadU(df, x + j))), k127));
      hn::StoreU(hn::DemoteTo(di8, q), di8, y[i].qs + j);
    }
    for (int g = 0; g < kQK_K / 16; ++g) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += y[i].qs[16 * g + j];
      y[i].bsums[g] = int16_t(sum);
    }
    y[i].d = 1 / iscale;
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <cmath>
#include <cstring>

#include "base/check.h"
#include "quant/activation_round.h"

namespace kvq {

HWY_EXPORT(RoundRowQ8_0Simd);
HWY_EXPORT(RoundRowQ8_KSimd);
HWY_EXPORT(QuantizeRowQ8_KSimd);

namespace {
template <typename Block, int kN, void (*kQuantize)(const float*, Block*, int64_t),
          void (*kDequantize)(const Block*, float*, int64_t)>
void round_through_ref(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i += kN) {
    bool finite = true;
    for (int j = 0; j < kN; ++j) finite &= std::isfinite(x[i + j]);
    if (!finite) {
      std::memcpy(y + i, x + i, sizeof(float) * kN);
      continue;
    }
    Block b;
    kQuantize(x + i, &b, kN);
    kDequantize(&b, y + i, kN);
  }
}
}  // namespace

void round_row_q8_0_ref(const float* x, float* y, int64_t n) {
  round_through_ref<BlockQ8_0, kQK8_0, quantize_row_q8_0_ref, dequantize_row_q8_0_ref>(x, y, n);
}

void round_row_q8_k_ref(const float* x, float* y, int64_t n) {
  round_through_ref<BlockQ8_K, kQK_K, quantize_row_q8_k_ref, dequantize_row_q8_k_ref>(x, y, n);
}

void round_row_q8_0(const float* x, float* y, int64_t n, KernelPath path) {
  KVQ_CHECK(n % kQK8_0 == 0, "round_row_q8_0: n %lld", (long long)n);
  if (path == KernelPath::kRef) return round_row_q8_0_ref(x, y, n);
  HWY_DYNAMIC_DISPATCH(RoundRowQ8_0Simd)(x, y, n);
}

void round_row_q8_k(const float* x, float* y, int64_t n, KernelPath path) {
  KVQ_CHECK(n % kQK_K == 0, "round_row_q8_k: n %lld", (long long)n);
  if (path == KernelPath::kRef) return round_row_q8_k_ref(x, y, n);
  HWY_DYNAMIC_DISPATCH(RoundRowQ8_KSimd)(x, y, n);
}

void quantize_row_q8_k(const float* x, BlockQ8_K* y, int64_t n, KernelPath path) {
  KVQ_CHECK(n % kQK_K == 0, "quantize_row_q8_k: n %lld", (long long)n);
  if (path == KernelPath::kRef) return quantize_row_q8_k_ref(x, y, n);
  HWY_DYNAMIC_DISPATCH(QuantizeRowQ8_KSimd)(x, y, n);
}

}  // namespace kvq
#endif
