// SPDX-License-Identifier: MIT
// Highway kernels for attention over dense f32/f16 K/V rows: batched q.k scores and the
// p-weighted sum of V rows. head_dim smaller than a full vector (stories260K has 8) uses a
// vector capped at 8 lanes, so AVX-512 does not waste half of every load.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/attention_ops.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"
#include "kernels/cpu/ops.h"

HWY_BEFORE_NAMESPACE();
namespace kvq::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

template <class D>
HWY_INLINE hn::Vec<D> LoadRow(D d, const float* p, size_t i, size_t n) {
  if (i + hn::Lanes(d) <= n) return hn::LoadU(d, p + i);
  return hn::MaskedLoad(hn::FirstN(d, n - i), d, p + i);
}

template <class D>
HWY_INLINE hn::Vec<D> LoadRow(D d, const f16_t* p, size_t i, size_t n) {
  const hn::Rebind<hwy::float16_t, D> dh;
  const auto* ph = reinterpret_cast<const hwy::float16_t*>(p + i);
  if (i + hn::Lanes(d) <= n) return hn::PromoteTo(d, hn::LoadU(dh, ph));
  // Tail: copy into a zero-padded buffer (f16 has no masked load on every target).
  HWY_ALIGN hwy::float16_t buf[hn::MaxLanes(dh)] = {};
  for (size_t k = 0; k < n - i; ++k) buf[k] = ph[k];
  return hn::PromoteTo(d, hn::Load(dh, buf));
}

template <class D, typename T>
HWY_INLINE void ScoresImpl(D d, const float* q, const T* k, int n_rows, int head_dim, float scale,
                           float* scores) {
  const size_t n = size_t(head_dim);
  const size_t N = hn::Lanes(d);
  for (int j = 0; j < n_rows; ++j) {
    const T* kr = k + size_t(j) * n;
    auto acc = hn::Zero(d);
    for (size_t i = 0; i < n; i += N) acc = hn::MulAdd(LoadRow(d, q, i, n), LoadRow(d, kr, i, n), acc);
    scores[j] = hn::GetLane(hn::SumOfLanes(d, acc)) * scale;
  }
}

template <class D, typename T>
HWY_INLINE void AccumulateImpl(D d, const float* p, const T* v, int n_rows, int head_dim,
                               float* out) {
  const size_t n = size_t(head_dim);
  const size_t N = hn::Lanes(d);
  for (size_t i = 0; i < n; i += N) {
    auto acc = LoadRow(d, out, i, n);
    for (int j = 0; j < n_rows; ++j) {
      acc = hn::MulAdd(hn::Set(d, p[j]), LoadRow(d, v + size_t(j) * n, i, n), acc);
    }
    if (i + N <= n) {
      hn::StoreU(acc, d, out + i);
    } else {
      HWY_ALIGN float buf[hn::MaxLanes(d)];
      hn::Store(acc, d, buf);
      for (size_t k = 0; k < n - i; ++k) out[i + k] = buf[k];
    }
  }
}

template <typename T>
void Scores(const float* q, const T* k, int n_rows, int head_dim, float scale, float* scores) {
  const hn::ScalableTag<float> d;
  if (size_t(head_dim) >= hn::Lanes(d)) return ScoresImpl(d, q, k, n_rows, head_dim, scale, scores);
  ScoresImpl(hn::CappedTag<float, 8>(), q, k, n_rows, head_dim, scale, scores);
}

template <typename T>
void Accumulate(const float* p, const T* v, int n_rows, int head_dim, float* out) {
  const hn::ScalableTag<float> d;
  if (size_t(head_dim) >= hn::Lanes(d)) return AccumulateImpl(d, p, v, n_rows, head_dim, out);
  AccumulateImpl(hn::CappedTag<float, 8>(), p, v, n_rows, head_dim, out);
}

void ScoresF32(const float* q, const float* k, int n, int hd, float s, float* o) { Scores(q, k, n, hd, s, o); }
void ScoresF16(const float* q, const f16_t* k, int n, int hd, float s, float* o) { Scores(q, k, n, hd, s, o); }
void AccumulateF32(const float* p, const float* v, int n, int hd, float* o) { Accumulate(p, v, n, hd, o); }
void AccumulateF16(const float* p, const f16_t* v, int n, int hd, float* o) { Accumulate(p, v, n, hd, o); }

void ConvertF32ToF16(const float* x, f16_t* y, size_t n) {
  const hn::ScalableTag<float> d;
  const hn::Rebind<hwy::float16_t, decltype(d)> dh;
  const size_t N = hn::Lanes(d);
  auto* yh = reinterpret_cast<hwy::float16_t*>(y);
  size_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::DemoteTo(dh, hn::LoadU(d, x + i)), dh, yh + i);
  for (; i < n; ++i) y[i] = f32_to_f16(x[i]);
}

void ConvertF16ToF32(const f16_t* x, float* y, size_t n) {
  const hn::ScalableTag<float> d;
  const hn::Rebind<hwy::float16_t, decltype(d)> dh;
  const size_t N = hn::Lanes(d);
  const auto* xh = reinterpret_cast<const hwy::float16_t*>(x);
  size_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::PromoteTo(d, hn::LoadU(dh, xh + i)), d, y + i);
  for (; i < n; ++i) y[i] = f16_to_f32(x[i]);
}

// Softmax over x[0, n): vector max, Highway Exp (within a few ulp of expf), float lane sums.
// Tail elements go through the same vector code via a padded buffer, so every element is
// computed the same way wherever it sits.
void Softmax(float* x, int n_int, bool round_f16) {
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
  for (size_t i = 0; i < n_full; i += N) vmax = hn::Max(vmax, hn::LoadU(d, x + i));
  if (n_full < n) vmax = hn::Max(vmax, load_tail(-HUGE_VALF));
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
  const auto inv = hn::Set(d, 1.0f / hn::GetLane(hn::SumOfLanes(d, vsum)));
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

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace HWY_NAMESPACE
}  // namespace kvq::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq::cpu {
HWY_EXPORT(ScoresF32);
HWY_EXPORT(ScoresF16);
HWY_EXPORT(AccumulateF32);
HWY_EXPORT(AccumulateF16);
HWY_EXPORT(ConvertF32ToF16);
HWY_EXPORT(ConvertF16ToF32);
HWY_EXPORT(TargetName);
HWY_EXPORT(Softmax);
void softmax(float* x, int n, bool round_f16) { HWY_DYNAMIC_DISPATCH(Softmax)(x, n, round_f16); }

void attn_scores_f32(const float* q, const float* k, int n, int hd, float s, float* o) {
  HWY_DYNAMIC_DISPATCH(ScoresF32)(q, k, n, hd, s, o);
}
void attn_scores_f16(const float* q, const f16_t* k, int n, int hd, float s, float* o) {
  HWY_DYNAMIC_DISPATCH(ScoresF16)(q, k, n, hd, s, o);
}
void attn_accumulate_f32(const float* p, const float* v, int n, int hd, float* o) {
  HWY_DYNAMIC_DISPATCH(AccumulateF32)(p, v, n, hd, o);
}
void attn_accumulate_f16(const float* p, const f16_t* v, int n, int hd, float* o) {
  HWY_DYNAMIC_DISPATCH(AccumulateF16)(p, v, n, hd, o);
}
void convert_f32_to_f16(const float* x, f16_t* y, size_t n) {
  HWY_DYNAMIC_DISPATCH(ConvertF32ToF16)(x, y, n);
}
void convert_f16_to_f32(const f16_t* x, float* y, size_t n) {
  HWY_DYNAMIC_DISPATCH(ConvertF16ToF32)(x, y, n);
}
const char* simd_target_name() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }
}  // namespace kvq::cpu
#endif
