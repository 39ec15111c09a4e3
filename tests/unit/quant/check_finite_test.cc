// SPDX-License-Identifier: MIT
// check_finite (quant/common.h) guards every K/V row an append takes. Its fast pass (the
// magnitudes' bits against the first bad pattern, in vectors) must accept and refuse exactly what
// the plain loop below, its specification, does, and name the same first bad index, on every
// target: random rows of odd sizes and strides, with NaN, Inf and the fp16 limit's neighbours
// put at random places.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "base/rng.h"
#include "quant/common.h"
#include "test_util.h"

namespace kvq {
namespace {

// The specification: the first index whose value is not finite or, with f16_range, whose
// magnitude is above kF16Max; -1 when there is none.
long first_bad_ref(const float* x, size_t n, bool f16_range, size_t stride) {
  for (size_t i = 0; i < n; ++i) {
    const float v = x[i * stride];
    if (!std::isfinite(v) || (f16_range && std::fabs(v) > kF16Max)) return long(i);
  }
  return -1;
}

TEST(CheckFinite, FastPassAcceptsAndRefusesAsTheLoopDoes) {
  test::for_each_target([&] {
    const float kInf = std::numeric_limits<float>::infinity();
    const float special[] = {std::nanf(""), -std::nanf(""), kInf, -kInf, kF16Max, -kF16Max,
                             std::nextafter(kF16Max, kInf), -std::nextafter(kF16Max, kInf),
                             std::numeric_limits<float>::max(), std::numeric_limits<float>::denorm_min(),
                             -0.0f, 1e30f};
    Rng rng(7);
    int refused = 0;
    for (size_t n : {1, 2, 7, 63, 64, 65, 128, 1000, 4097}) {
      for (size_t stride : {1, 3}) {
        for (int trial = 0; trial < 24; ++trial) {
          std::vector<float> x(n * stride);
          for (float& v : x) v = rng.uniform(-70000.0f, 70000.0f) * (trial % 2 ? 1.0f : 1e-3f);
          // Some rows get special values at random places (possibly several, possibly none).
          const int n_special = trial % 4;
          for (int s = 0; s < n_special; ++s) {
            x[size_t(rng.next_u64() % (n * stride))] = special[rng.next_u64() % std::size(special)];
          }
          for (bool f16_range : {false, true}) {
            const long bad = first_bad_ref(x.data(), n, f16_range, stride);
            const Status st = check_finite(x.data(), n, "row", f16_range, stride);
            ASSERT_EQ(st.ok(), bad < 0) << "n " << n << " stride " << stride << " trial " << trial;
            if (bad >= 0) {
              ++refused;
              EXPECT_NE(st.message().find("index " + std::to_string(bad)), std::string::npos) << st.message();
            }
          }
        }
      }
    }
    EXPECT_GT(refused, 100);  // both outcomes were exercised
    // The limits themselves: 65504 passes the fp16 range, the next float does not.
    const float at[] = {kF16Max, -kF16Max};
    EXPECT_TRUE(check_finite(at, 2, "row", true).ok());
    const float above[] = {1.0f, std::nextafter(kF16Max, kInf)};
    EXPECT_FALSE(check_finite(above, 2, "row", true).ok());
    EXPECT_TRUE(check_finite(above, 2, "row", false).ok());
    EXPECT_TRUE(check_finite(nullptr, 0, "row").ok());
    EXPECT_FALSE(check_finite(nullptr, 1, "row").ok());
  });
}

}  // namespace
}  // namespace kvq
