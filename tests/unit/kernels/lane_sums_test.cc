// SPDX-License-Identifier: MIT
// The transposed lane sums of kernels/cpu/lane_sums-inl.h against their specification, on
// every target this CPU runs: each lane of the 16-lane SumOfLanes8 and of SumOfLanes16x4 is
// bit for bit SumOfLanes16 of its vector, and SumOfLanes16 is the scalar grouping its comment
// gives (h_i = x_i + x_(i+8), g_j = h_j + h_(j+4), (g_0 + g_2) + (g_1 + g_3)); the 8-lane
// SumOfLanes8 / SumOfLanes4 equal Highway's SumOfLanes of each vector. Inputs spread over
// magnitudes and signs, so that another grouping rounds differently (checked: a sequential sum
// differs).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "lane_sums_test.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/cpu/lane_sums-inl.h"

#ifndef KVQ_LANE_SUMS_TEST_ONCE
#define KVQ_LANE_SUMS_TEST_ONCE
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>

#include "../every_target.h"

namespace kvq {
using testing::TargetChecks;
inline bool same_float(float a, float b) {
  uint32_t x, y;
  std::memcpy(&x, &a, 4);
  std::memcpy(&y, &b, 4);
  return x == y;
}
// Values whose sums round differently by grouping: magnitudes over 2^-8 .. 2^12, both signs.
inline void fill_spread(std::mt19937& g, float* x, int n) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::uniform_int_distribution<int> e(-8, 12);
  for (int i = 0; i < n; ++i) x[i] = std::ldexp(u(g), e(g));
}
inline float grouped_sum16_ref(const float* x) {
  float h[8], g[4];
  for (int i = 0; i < 8; ++i) h[i] = x[i] + x[i + 8];
  for (int j = 0; j < 4; ++j) g[j] = h[j] + h[j + 4];
  return (g[0] + g[2]) + (g[1] + g[3]);
}
}  // namespace kvq
#endif

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

TargetChecks CheckLaneSums(uint32_t seed) {
  TargetChecks c;
  std::mt19937 g(seed);
  auto check = [&](bool ok) {
    ++c.run;
    if (!ok) ++c.failed;
  };
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
  {
    const hn::Full256<float> d;
    HWY_ALIGN float x[8][8];
    hn::Vec256<float> v[8];
    for (int k = 0; k < 8; ++k) {
      fill_spread(g, x[k], 8);
      v[k] = hn::Load(d, x[k]);
    }
    HWY_ALIGN float s8[8], s4[8];
    hn::Store(SumOfLanes8(v), d, s8);
    const hn::Vec256<float> v4[4] = {v[0], v[1], v[2], v[3]};
    hn::Store(SumOfLanes4(v4), d, s4);
    for (int k = 0; k < 8; ++k) check(same_float(s8[k], hn::GetLane(hn::SumOfLanes(d, v[k]))));
    for (int k = 0; k < 4; ++k) check(same_float(s4[k % 2 * 4 + k / 2], hn::GetLane(hn::SumOfLanes(d, v[k]))));
  }
#endif
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  {
    const hn::Full512<float> d;
    HWY_ALIGN float x[8][16];
    hn::Vec512<float> v[8];
    for (int k = 0; k < 8; ++k) {
      fill_spread(g, x[k], 16);
      v[k] = hn::Load(d, x[k]);
    }
    HWY_ALIGN float s8[8], s4[16];
    hn::Store(SumOfLanes8(v), hn::Full256<float>(), s8);
    const hn::Vec512<float> v4[4] = {v[0], v[1], v[2], v[3]};
    hn::Store(SumOfLanes16x4(v4), d, s4);
    for (int k = 0; k < 8; ++k) {
      check(same_float(SumOfLanes16(v[k]), grouped_sum16_ref(x[k])));
      check(same_float(s8[k], SumOfLanes16(v[k])));
    }
    for (int k = 0; k < 4; ++k) check(same_float(s4[k % 2 * 8 + k / 2 * 4], SumOfLanes16(v[k])));
  }
#endif
  (void)check;
  (void)g;
  return c;
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq {
namespace {
HWY_EXPORT(CheckLaneSums);

TEST(LaneSums, TransposedSumsEqualOneVectorsSumOnEveryTarget) {
  const auto totals =
      testing::expect_every_target_passes(200, [](uint32_t seed) { return HWY_DYNAMIC_DISPATCH(CheckLaneSums)(seed); });
  for (const auto& [target, total] : totals) {
    if (target == HWY_AVX2 || target == HWY_AVX3) {
      EXPECT_GT(total.run, 0) << hwy::TargetName(target);  // the sums exist there
    }
  }
}

// The inputs do tell groupings apart: a sequential sum of the same vectors differs from the
// grouped one for many of them (else the test above would pass for any grouping).
TEST(LaneSums, TheInputsSeparateGroupings) {
  std::mt19937 g(7);
  int differ = 0;
  for (int t = 0; t < 200; ++t) {
    float x[16];
    fill_spread(g, x, 16);
    float seq = 0.0f;
    for (float v : x) seq += v;
    differ += !same_float(seq, grouped_sum16_ref(x));
  }
  EXPECT_GT(differ, 50);
}
}  // namespace
}  // namespace kvq
#endif
