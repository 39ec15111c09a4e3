// SPDX-License-Identifier: MIT
// Highway randomized Hadamard transform of head vectors (spec: ref::hadamard_rows_ref). Stages
// whose butterfly stride is at least a vector run on whole vectors; the first log2(lanes)
// stages, whose pairs sit inside one vector, stay scalar (a few adds per value). Every element
// sees the same operations as in the reference, so the results are identical.
#include <cmath>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/hadamard.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/cpu/ops.h"
#include "kernels/ref/hadamard_ref.h"

HWY_BEFORE_NAMESPACE();
namespace kvq::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void HadamardRows(float* x, int n_rows, int head_dim, const float* signs, bool inverse) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  const size_t n = size_t(head_dim);
  if (n < N) return ref::hadamard_rows_ref(x, n_rows, head_dim, signs, inverse);
  const auto scale = hn::Set(d, 1.0f / std::sqrt(float(head_dim)));
  for (int r = 0; r < n_rows; ++r) {
    float* v = x + size_t(r) * n;
    if (!inverse) {
      for (size_t i = 0; i < n; i += N) hn::StoreU(hn::Mul(hn::LoadU(d, v + i), hn::LoadU(d, signs + i)), d, v + i);
    }
    size_t h = 1;
    for (; h < N; h *= 2) {
      for (size_t j = 0; j < n; j += 2 * h) {
        for (size_t i = j; i < j + h; ++i) {
          const float a = v[i], b = v[i + h];
          v[i] = a + b;
          v[i + h] = a - b;
        }
      }
    }
    for (; h < n; h *= 2) {
      for (size_t j = 0; j < n; j += 2 * h) {
        for (size_t i = j; i < j + h; i += N) {
          const auto a = hn::LoadU(d, v + i), b = hn::LoadU(d, v + i + h);
          hn::StoreU(hn::Add(a, b), d, v + i);
          hn::StoreU(hn::Sub(a, b), d, v + i + h);
        }
      }
    }
    for (size_t i = 0; i < n; i += N) {
      const auto m = inverse ? hn::Mul(scale, hn::LoadU(d, signs + i)) : scale;
      hn::StoreU(hn::Mul(hn::LoadU(d, v + i), m), d, v + i);
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq::cpu {
HWY_EXPORT(HadamardRows);
void hadamard_rows(float* x, int n_rows, int head_dim, const float* signs, bool inverse) {
  HWY_DYNAMIC_DISPATCH(HadamardRows)(x, n_rows, head_dim, signs, inverse);
}
}  // namespace kvq::cpu
#endif
