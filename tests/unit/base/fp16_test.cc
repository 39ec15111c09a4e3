// SPDX-License-Identifier: MIT
#include "base/fp16.h"

#include <gtest/gtest.h>
#include <cpuid.h>
#include <immintrin.h>

#include <cmath>

namespace kvq {
namespace {

// Exhaustive round trip: every half bit pattern converts to f32 and back unchanged (NaNs stay NaN).
TEST(Fp16, ExhaustiveRoundTrip) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(f16_t(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    EXPECT_EQ(f32_to_f16(f), h) << h;
  }
}

// f32 -> f16 matches the hardware conversion (F16C, round to nearest even) on a sweep of bit
// patterns that covers every exponent, the subnormal range and ties.
__attribute__((target("f16c"))) uint16_t hw_f32_to_f16(float f) { return _cvtss_sh(f, 0); }

TEST(Fp16, MatchesF16cWhenAvailable) {
  unsigned a = 0, b = 0, c = 0, d = 0;
  // CPUID.1:ECX bit 29 is F16C (clang 14's __builtin_cpu_supports does not know "f16c").
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 29))) GTEST_SKIP() << "no F16C on this CPU";
  for (uint64_t x = 0; x < (1ull << 32); x += 4093) {
    const float f = f32_from_bits(uint32_t(x));
    const uint16_t hw = hw_f32_to_f16(f);
    const uint16_t sw = f32_to_f16(f);
    if (std::isnan(f)) {
      EXPECT_EQ(hw & 0x7c00, sw & 0x7c00);
      continue;
    }
    ASSERT_EQ(sw, hw) << std::hexfloat << f;
  }
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f)), 1.0f);
  EXPECT_EQ(f32_to_bf16(f32_from_bits(0x3f808000u)), 0x3f80);  // tie -> even
  EXPECT_EQ(f32_to_bf16(f32_from_bits(0x3f818000u)), 0x3f82);  // tie -> even (up)
  EXPECT_EQ(f32_to_bf16(f32_from_bits(0x3f808001u)), 0x3f81);
}

}  // namespace
}  // namespace kvq
