// SPDX-License-Identifier: MIT
// The randomized Hadamard transform (kernels/ref/hadamard_ref.h): the reference against the
// explicit matrix H_n D / sqrt(n), orthogonality and inverse, and the SIMD kernel against the
// reference on odd numbers of vectors.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "base/rng.h"
#include "kernels/cpu/ops.h"
#include "kernels/ref/hadamard_ref.h"

namespace kvq {
namespace {

std::vector<float> random_rows(uint64_t seed, size_t n) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = float(rng.normal()) * (rng.uniform() < 0.05 ? 20.0f : 1.0f);  // some outliers
  return v;
}

std::vector<float> signs_of(int n) {
  std::vector<float> s(static_cast<size_t>(n));
  hadamard_signs(n, s.data());
  return s;
}

// Sylvester's H_n: entry (i, j) is (-1)^popcount(i & j).
float sylvester(int i, int j) { return __builtin_popcount(unsigned(i & j)) % 2 ? -1.0f : 1.0f; }

TEST(Hadamard, SizesAndSigns) {
  EXPECT_TRUE(hadamard_size_ok(2) && hadamard_size_ok(64) && hadamard_size_ok(256));
  EXPECT_FALSE(hadamard_size_ok(0) || hadamard_size_ok(1) || hadamard_size_ok(48) || hadamard_size_ok(96));
  const auto s = signs_of(64);
  int neg = 0;
  for (float x : s) {
    ASSERT_TRUE(x == 1.0f || x == -1.0f);
    neg += x < 0;
  }
  EXPECT_GT(neg, 16);  // a real mix of signs, not the identity
  EXPECT_LT(neg, 48);
  EXPECT_EQ(signs_of(64), signs_of(64));  // fixed seed
}

TEST(Hadamard, ReferenceIsTheExplicitMatrix) {
  for (int n : {2, 8, 64, 128}) {
    const auto s = signs_of(n);
    auto x = random_rows(uint64_t(n), size_t(n));
    std::vector<float> y = x;
    ref::hadamard_rows_ref(y.data(), 1, n, s.data(), false);
    for (int i = 0; i < n; ++i) {
      double e = 0;
      for (int j = 0; j < n; ++j) e += double(sylvester(i, j)) * s[size_t(j)] * x[size_t(j)];
      ASSERT_NEAR(y[size_t(i)], e / std::sqrt(double(n)), 1e-5 * std::sqrt(double(n))) << n << " row " << i;
    }
  }
}

TEST(Hadamard, OrthogonalAndInverse) {
  for (int n : {2, 8, 16, 64, 256}) {
    const auto s = signs_of(n);
    const int rows = 7;
    const auto a = random_rows(1, size_t(rows) * n), b = random_rows(2, size_t(rows) * n);
    auto ra = a, rb = b;
    ref::hadamard_rows_ref(ra.data(), rows, n, s.data(), false);
    ref::hadamard_rows_ref(rb.data(), rows, n, s.data(), false);
    for (int r = 0; r < rows; ++r) {
      double d0 = 0, d1 = 0, n0 = 0;
      for (int i = 0; i < n; ++i) {
        const size_t k = size_t(r) * n + size_t(i);
        d0 += double(a[k]) * b[k];
        d1 += double(ra[k]) * rb[k];
        n0 += double(a[k]) * a[k];
      }
      EXPECT_NEAR(d1, d0, 1e-5 * (n0 + 1.0)) << "dot products kept, n " << n;
    }
    ref::hadamard_rows_ref(ra.data(), rows, n, s.data(), true);
    for (size_t k = 0; k < a.size(); ++k) ASSERT_NEAR(ra[k], a[k], 1e-5f * (std::fabs(a[k]) + 1.0f)) << n;
  }
}

TEST(Hadamard, SimdMatchesReferenceOnOddCounts) {
  for (int n : {2, 4, 8, 16, 32, 64, 128, 256}) {
    const auto s = signs_of(n);
    for (int rows : {1, 3, 5, 17}) {
      for (bool inverse : {false, true}) {
        const auto x = random_rows(uint64_t(n * 100 + rows), size_t(rows) * n);
        auto y_ref = x, y = x;
        ref::hadamard_rows_ref(y_ref.data(), rows, n, s.data(), inverse);
        cpu::hadamard_rows(y.data(), rows, n, s.data(), inverse);
        ASSERT_EQ(y, y_ref) << "head_dim " << n << ", " << rows << " rows, inverse " << inverse;
      }
    }
  }
}

// What makes rotation help per-token grids: one large channel is spread over all of them.
TEST(Hadamard, SpreadsAnOutlier) {
  const int n = 64;
  const auto s = signs_of(n);
  std::vector<float> x(size_t(n), 0.0f);
  x[5] = 8.0f;
  ref::hadamard_rows_ref(x.data(), 1, n, s.data(), false);
  for (float v : x) ASSERT_FLOAT_EQ(std::fabs(v), 1.0f);
}

}  // namespace
}  // namespace kvq
