// SPDX-License-Identifier: MIT
#include "quant/common.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <string>

#include "hwy/highway.h"

namespace kvq {

Status check_finite(const float* x, size_t n, const char* what, bool f16_range,
                    size_t stride) {
  if (n > 0 && x == nullptr) return invalid_argument(std::string(what) + ": null pointer");
  // A branch-free pass first, which the compiler vectorizes: the largest magnitude's bits (NaN
  // and Inf above every finite value's). Every K/V row of every append is checked, so the
  // search for the first bad value (and its message) runs only when there is one.
  const uint32_t bad_from = f16_range ? std::bit_cast<uint32_t>(kF16Max) + 1 : 0x7f800000u;
  uint32_t worst = 0;
  for (size_t i = 0; i < n; ++i) worst = std::max(worst, std::bit_cast<uint32_t>(x[i * stride]) & 0x7fffffffu);
  if (worst < bad_from) return ok_status();
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
