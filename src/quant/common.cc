// SPDX-License-Identifier: MIT
#include <bit>
#include <cstdint>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/common.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Whether any of x[0, n) has a magnitude whose bits are >= bad_from (NaN and Inf lie above
// every finite value's; bad_from < 2^31, so the test is a signed compare): check_finite's fast
// pass, two vectors a step.
bool AnyMagnitudeAtLeastSimd(const float* HWY_RESTRICT x, size_t n, int32_t bad_from) {
  const hn::ScalableTag<int32_t> di;
  const size_t kN = hn::Lanes(di);
  const auto mag = hn::Set(di, 0x7fffffff);
  const auto lim = hn::Set(di, bad_from - 1);
  const int32_t* xi = reinterpret_cast<const int32_t*>(x);
  auto bad = hn::Zero(di);  // all ones in a lane where some value's magnitude was above lim
  size_t i = 0;
  for (; i + 2 * kN <= n; i += 2 * kN) {
    const auto a = hn::And(hn::LoadU(di, xi + i), mag);
    const auto b = hn::And(hn::LoadU(di, xi + i + kN), mag);
    bad = hn::Or(bad, hn::Or(hn::VecFromMask(di, hn::Gt(a, lim)), hn::VecFromMask(di, hn::Gt(b, lim))));
  }
  bool any = !hn::AllFalse(di, hn::Ne(bad, hn::Zero(di)));
  for (; i < n; ++i) any |= int32_t(std::bit_cast<uint32_t>(x[i]) & 0x7fffffffu) >= bad_from;
  return any;
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <algorithm>
#include <cmath>
#include <string>

#include "quant/common.h"

namespace kvq {

HWY_EXPORT(AnyMagnitudeAtLeastSimd);

Status check_finite(const float* x, size_t n, const char* what, bool f16_range,
                    size_t stride) {
  if (n > 0 && x == nullptr) return invalid_argument(std::string(what) + ": null pointer");
  // A branch-free pass first: is any magnitude's bit pattern at or above the first bad one (NaN
  // and Inf lie above every finite value's). Every K/V row of every append is checked, so the
  // search for the first bad value (and its message) runs only when there is one.
  const int32_t bad_from = int32_t(f16_range ? std::bit_cast<uint32_t>(kF16Max) + 1 : 0x7f800000u);
  bool any = false;
  if (stride == 1) {
    any = HWY_DYNAMIC_DISPATCH(AnyMagnitudeAtLeastSimd)(x, n, bad_from);
  } else {
    for (size_t i = 0; i < n; ++i) {
      any |= int32_t(std::bit_cast<uint32_t>(x[i * stride]) & 0x7fffffffu) >= bad_from;
    }
  }
  if (!any) return ok_status();
  for (size_t i = 0; i < n; ++i) {
    const float v = x[i * stride];
    if (!std::isfinite(v)) {
      return invalid_argument(std::string(what) + ": non-finite value at index " +
                              std::to_string(i));
    }
    if (f16_range && std::fabs(v) > kF16Max) {
      return invalid_argument(std::string(what) + ": value " + std::to_string(v) +
                              " at index " + std::to_string(i) + " exceeds the fp16 range");
    }
  }
  return ok_status();
}

Status check_finite_block(const float* x, size_t n_rows, size_t n_cols, size_t ld,
                          const char* what, bool f16_range) {
  for (size_t r = 0; r < n_rows; ++r) {
    KVQ_RETURN_IF_ERROR(check_finite(x + r * ld, n_cols, what, f16_range));
  }
  return ok_status();
}

const char* simd_target_name() {
  const int64_t targets = hwy::SupportedTargets();
  const int64_t compiled = targets & HWY_TARGETS;
  return hwy::TargetName(compiled & -compiled);  // lowest bit = best target
}

}  // namespace kvq
#endif  // HWY_ONCE
