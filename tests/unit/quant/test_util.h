// SPDX-License-Identifier: MIT
// Shared helpers of the quant tests: random data generators and the Highway target sweep.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/rng.h"
#include "hwy/highway.h"
#include "hwy/targets.h"

namespace kvq::test {

enum class Dist { kGaussian, kLaplace, kOutliers };
inline const char* dist_name(Dist d) {
  return d == Dist::kGaussian ? "gaussian" : d == Dist::kLaplace ? "laplace" : "outliers";
}
inline constexpr Dist kAllDists[] = {Dist::kGaussian, Dist::kLaplace, Dist::kOutliers};

// n values with scale `scale` and offset `offset`; kOutliers is Gaussian with 2% of the values
// multiplied by 40 (the heavy channels/tokens KVQuant and KIVI describe).
inline std::vector<float> make_data(Dist d, size_t n, uint64_t seed, float scale = 1.0f,
                                    float offset = 0.0f) {
  Rng rng(seed);
  std::vector<float> x(n);
  for (auto& v : x) {
    double r = d == Dist::kLaplace ? rng.laplace() : rng.normal();
    if (d == Dist::kOutliers && rng.uniform() < 0.02) r *= 40.0;
    v = float(r) * scale + offset;
  }
  return x;
}

// The odd sizes every format is swept over.
inline constexpr size_t kOddSizes[] = {1, 2, 7, 15, 16, 17, 31, 32, 33, 63, 127, 128, 129, 255, 1000, 4096};

// Runs fn once per Highway target this CPU supports (SSE4, AVX2, AVX3, ... and the scalar
// baseline), so the SIMD path is tested on every target, not just the best one.
inline void for_each_target(const std::function<void()>& fn) {
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    fn();
  }
  hwy::SetSupportedTargetsForTest(0);
}

// Bitwise float equality (distinguishes -0 and +0).
inline bool same_bits(float a, float b) {
  uint32_t x, y;
  std::memcpy(&x, &a, 4);
  std::memcpy(&y, &b, 4);
  return x == y;
}

}  // namespace kvq::test
