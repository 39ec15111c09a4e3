// SPDX-License-Identifier: MIT
#include "quant/activation_round.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "quant/ggml_blocks.h"
#include "quant/weight/q8_k.h"
#include "test_util.h"

namespace kvq {
namespace {

using RoundFn = void (*)(const float*, float*, int64_t, KernelPath);

// Every target against the reference, bit for bit, on rows of odd block counts with the cases
// that separate rounding rules: exact half-way products, magnitude ties, all-zero blocks,
// negative values rounding to zero, and blocks holding a NaN or an infinity.
void check_bit_identical(RoundFn fn, int block) {
  test::for_each_target([&] {
    uint64_t seed = 11;
    for (int n_blocks : {1, 3, 7}) {
      const int64_t n = int64_t(n_blocks) * block;
      for (auto dist : test::kAllDists) {
        auto x = test::make_data(dist, size_t(n), seed++, 3.0f);
        const int b = int(seed % uint64_t(n_blocks)) * block;
        switch (seed % 5) {
          case 0: std::fill(x.begin() + b, x.begin() + b + block, 0.0f); break;
          case 1: x[size_t(b) + 3] = 8.0f, x[size_t(b) + 9] = -8.0f; break;  // first one wins
          case 2:  // scale 127 / 127 = 1: k + 0.5 are exact ties
            for (int j = 0; j < block; ++j) x[size_t(b + j)] = float(j % 9) - 4.5f;
            x[size_t(b)] = -127.0f;
            break;
          case 3: x[size_t(b) + 1] = std::numeric_limits<float>::quiet_NaN(); break;
          default: x[size_t(b) + 2] = -std::numeric_limits<float>::infinity(); x[size_t(b) + 5] = -1e-9f; break;
        }
        std::vector<float> want(static_cast<size_t>(n)), got(static_cast<size_t>(n));
        fn(x.data(), want.data(), n, KernelPath::kRef);
        fn(x.data(), got.data(), n, KernelPath::kSimd);
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_TRUE(test::same_bits(want[size_t(i)], got[size_t(i)])) << "n " << n << " i " << i << ": "
                                                                        << want[size_t(i)] << " vs " << got[size_t(i)];
        }
      }
    }
  });
}

TEST(ActivationRound, Q8_0SimdBitIdentical) { check_bit_identical(round_row_q8_0, kQK8_0); }
TEST(ActivationRound, Q8_KSimdBitIdentical) { check_bit_identical(round_row_q8_k, kQK_K); }

TEST(ActivationRound, Q8_KQuantizeSimdBitIdentical) {
  test::for_each_target([] {
    uint64_t seed = 5;
    for (int n_blocks : {1, 3, 5}) {
      const size_t n = size_t(n_blocks) * kQK_K;
      for (auto dist : test::kAllDists) {
        auto x = test::make_data(dist, n, seed++, 3.0f);
        if (seed % 3 == 0) std::fill(x.begin(), x.begin() + kQK_K, 0.0f);
        if (seed % 3 == 1) {
          for (int j = 0; j < kQK_K; ++j) x[size_t(j)] = float(j % 9) - 4.5f;  // ties
          x[7] = 127.0f, x[8] = -127.0f;                                       // the first wins
        }
        std::vector<BlockQ8_K> a(static_cast<size_t>(n_blocks)), b(static_cast<size_t>(n_blocks));
        quantize_row_q8_k(x.data(), a.data(), int64_t(n), KernelPath::kRef);
        quantize_row_q8_k(x.data(), b.data(), int64_t(n), KernelPath::kSimd);
        ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(BlockQ8_K)));
      }
    }
  });
}

TEST(ActivationRound, TiesFollowEachFormat) {
  // q8_0 rounds half away from zero (roundf), q8_K half to even (nearbyint): with a scale of
  // exactly 1, 2.5 becomes 3 and 2 respectively.
  std::vector<float> x(kQK_K, 0.0f), y(kQK_K);
  x[0] = 127.0f, x[1] = 2.5f;
  round_row_q8_0(x.data(), y.data(), kQK_K);
  EXPECT_EQ(y[1], 3.0f);
  x[0] = -127.0f;  // q8_K's iscale = -127 / max = 1
  round_row_q8_k(x.data(), y.data(), kQK_K);
  EXPECT_EQ(y[1], 2.0f);
}

}  // namespace
}  // namespace kvq
