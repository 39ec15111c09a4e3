// SPDX-License-Identifier: MIT
#include "quant/ggml_blocks.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "test_util.h"
#include "tolerances.h"

namespace kvq {
namespace {

// A hand-checked q4_0 block (ggml semantics): max by magnitude is -8 -> d = 1, x = (q - 8) d.
TEST(GgmlBlocks, KnownQ4_0Block) {
  std::vector<float> x(32, 0.0f);
  x[0] = -8.0f, x[1] = 3.0f, x[16] = 7.0f, x[17] = 2.5f;
  BlockQ4_0 b;
  ASSERT_TRUE(quantize_row_q4_0(x.data(), &b, 32, KernelPath::kRef).ok());
  EXPECT_EQ(f16_to_f32(b.d), 1.0f);
  EXPECT_EQ(b.qs[0], (15 << 4) | 0);  // 7 -> min(15, 15), -8 -> 0
  EXPECT_EQ(b.qs[1], (11 << 4) | 11);  // 3 -> (int8)(11.5) = 11, 2.5 -> 11
}

TEST(GgmlBlocks, SimdBitIdenticalAllTargets) {
  test::for_each_target([] {
    uint64_t seed = 1;
    for (int64_t k : {32, 64, 4096}) {
      for (auto dist : test::kAllDists) {
        auto x = test::make_data(dist, size_t(k), seed++, 3.0f);
        if (seed % 4 == 0) std::fill(x.begin(), x.begin() + 32, 0.0f);  // an all-zero block
        if (seed % 4 == 1) x[5] = 10.0f, x[9] = -10.0f;  // a magnitude tie: first one wins
        std::vector<BlockQ8_0> a8(k / 32), b8(k / 32);
        std::vector<BlockQ4_0> a4(k / 32), b4(k / 32);
        ASSERT_TRUE(quantize_row_q8_0(x.data(), a8.data(), k, KernelPath::kRef).ok());
        ASSERT_TRUE(quantize_row_q8_0(x.data(), b8.data(), k, KernelPath::kSimd).ok());
        ASSERT_EQ(0, std::memcmp(a8.data(), b8.data(), a8.size() * sizeof(BlockQ8_0)));
        ASSERT_TRUE(quantize_row_q4_0(x.data(), a4.data(), k, KernelPath::kRef).ok());
        ASSERT_TRUE(quantize_row_q4_0(x.data(), b4.data(), k, KernelPath::kSimd).ok());
        ASSERT_EQ(0, std::memcmp(a4.data(), b4.data(), a4.size() * sizeof(BlockQ4_0)));
        std::vector<float> ya(k), yb(k);
        for (int fmt = 0; fmt < 2; ++fmt) {
          if (fmt == 0) {
            dequantize_row_q8_0(a8.data(), ya.data(), k, KernelPath::kRef);
            dequantize_row_q8_0(a8.data(), yb.data(), k, KernelPath::kSimd);
          } else {
            dequantize_row_q4_0(a4.data(), ya.data(), k, KernelPath::kRef);
            dequantize_row_q4_0(a4.data(), yb.data(), k, KernelPath::kSimd);
          }
          for (int64_t i = 0; i < k; ++i) ASSERT_TRUE(test::same_bits(ya[i], yb[i]));
          // Round-trip bound per block.
          for (int64_t b = 0; b < k / 32; ++b) {
            float amax = 0;
            for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
            const double bound = fmt == 0 ? tol::q8_0_bound(amax) : tol::q4_0_bound(amax);
            for (int j = 0; j < 32; ++j) ASSERT_LE(std::fabs(double(x[b * 32 + j]) - ya[b * 32 + j]), bound);
          }
          const auto q = test::make_data(test::Dist::kGaussian, size_t(k), seed + 7);
          double mag = 0;
          for (int64_t i = 0; i < k; ++i) mag += std::fabs(q[i] * ya[i]);
          const float r = fmt == 0 ? dot_q8_0(q.data(), a8.data(), k, KernelPath::kRef)
                                   : dot_q4_0(q.data(), a4.data(), k, KernelPath::kRef);
          const float s = fmt == 0 ? dot_q8_0(q.data(), a8.data(), k, KernelPath::kSimd)
                                   : dot_q4_0(q.data(), a4.data(), k, KernelPath::kSimd);
          EXPECT_NEAR(r, s, tol::dot_rel(size_t(k)) * mag);
        }
      }
    }
  });
}

TEST(GgmlBlocks, CheckedApi) {
  std::vector<float> x(64, 1.0f);
  std::vector<BlockQ8_0> b(2);
  EXPECT_FALSE(quantize_row_q8_0(x.data(), b.data(), 48).ok());
  x[40] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(quantize_row_q8_0(x.data(), b.data(), 64).ok());
}

}  // namespace
}  // namespace kvq
