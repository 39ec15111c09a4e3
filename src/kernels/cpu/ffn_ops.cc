// SPDX-License-Identifier: MIT
// Highway SwiGLU gate of the FFN: g[i] = silu(g[i]) * u[i], silu(x) = x / (1 + exp(-x)), with
// Highway's Exp (within a few ulp of expf; spec: ref::silu).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/ffn_ops.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"
#include "kernels/cpu/vector_loads-inl.h"
#include "kernels/cpu/ops.h"

HWY_BEFORE_NAMESPACE();
namespace kvq::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void SwiGlu(float* g, const float* u, size_t n) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  const auto one = hn::Set(d, 1.0f);
  // hn::Exp is specified up to +104; beyond 88.7 expf is +inf already and x / (1 + big) is
  // -0 or a denormal either way, so clamp the argument.
  const auto cap = hn::Set(d, 88.0f);
  const auto gate = [&](hn::Vec<decltype(d)> x, hn::Vec<decltype(d)> up) HWY_ATTR {
    const auto e = hn::Exp(d, hn::Min(hn::Neg(x), cap));
    return hn::Mul(hn::Div(x, hn::Add(one, e)), up);
  };
  size_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(gate(hn::LoadU(d, g + i), hn::LoadU(d, u + i)), d, g + i);
  if (i < n) {
    const auto x = kvq::HWY_NAMESPACE::LoadPartial(d, g + i, n - i);
    const auto up = kvq::HWY_NAMESPACE::LoadPartial(d, u + i, n - i);
    HWY_ALIGN float buf[hn::MaxLanes(d)];
    hn::Store(gate(x, up), d, buf);
    for (size_t k = 0; k < n - i; ++k) g[i + k] = buf[k];
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq::cpu {
HWY_EXPORT(SwiGlu);
void swiglu(float* g, const float* u, size_t n) { HWY_DYNAMIC_DISPATCH(SwiGlu)(g, u, n); }
}  // namespace kvq::cpu
#endif
