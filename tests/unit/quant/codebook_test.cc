// SPDX-License-Identifier: MIT
#include "quant/codebook.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "quant/bitpack.h"
#include "quant/qnorm.h"
#include "test_util.h"
#include "tolerances.h"

namespace kvq {
namespace {

// Python statistics.NormalDist().inv_cdf values.
TEST(NormalQuantile, MatchesReferenceValues) {
  EXPECT_NEAR(normal_quantile(0.975), 1.9599639845400536, tol::kNormQuantileAbs);
  EXPECT_NEAR(normal_quantile(1e-10), -6.361340902404056, 1e-10);
  EXPECT_NEAR(normal_quantile(0.3), -0.5244005127080407, tol::kNormQuantileAbs);
  EXPECT_NEAR(normal_quantile(0.5 * (1.0 / 32 + 1.0 / 30)), -1.8481314207079738, tol::kNormQuantileAbs);
  EXPECT_EQ(normal_quantile(0.5), 0.0);
}

// NF-b per spec §4.4; NF4 equals the QLoRA NF4 table (its offset 0.9677083 = 1 - p0).
TEST(NfCodebook, SignpostsMatchSpec) {
  const double nf2[] = {-1.0, 0.0, 0.33791513671312795, 1.0};
  const double nf3[] = {-1.0, -0.4786290853100967, -0.2171417800011802, 0.0, 0.16093014438029077,
                        0.33791513671312795, 0.562616887969985, 1.0};
  const double nf4[] = {-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                        0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
                        0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                        0.7229568362236023, 1.0};
  const double* want[] = {nf2, nf3, nf4};
  for (int bits = 2; bits <= 4; ++bits) {
    const Codebook cb = make_nf_codebook(bits);
    for (int j = 0; j < cb.size(); ++j) EXPECT_NEAR(cb.values[j], want[bits - 2][j], 1e-6) << bits << " " << j;
    EXPECT_EQ(cb.values[(1 << (bits - 1)) - 1], 0.0f);  // exact zero level
  }
}

TEST(Codebook, MakeCodebookSortsAndValidates) {
  const float c[] = {0.5f, -1.0f, 1.0f, -0.25f};
  auto cb = make_codebook(2, c);
  ASSERT_TRUE(cb.ok());
  EXPECT_EQ(cb->values[0], -1.0f);
  EXPECT_EQ(cb->values[3], 1.0f);
  EXPECT_EQ(cb->thresholds[1], 0.125f);
  const float dup[] = {0.5f, -1.0f, 0.5f, 1.0f};
  EXPECT_FALSE(make_codebook(2, dup).ok());
  const float nan[] = {0.5f, -1.0f, std::numeric_limits<float>::quiet_NaN(), 1.0f};
  EXPECT_FALSE(make_codebook(2, nan).ok());
  EXPECT_FALSE(make_codebook(3, c).ok());  // needs 8 centroids
  EXPECT_FALSE(make_codebook(5, c).ok());
}

// The threshold count is nearest-centroid: checked against argmin on a dense grid, and ties
// (exact midpoints) go to the lower centroid.
TEST(Codebook, EncodeIsNearestCentroid) {
  for (int bits = 2; bits <= 4; ++bits) {
    const Codebook cb = make_nf_codebook(bits);
    for (int i = -30000; i <= 30000; ++i) {
      const float x = float(i) / 20000.0f;
      int best = 0;
      for (int j = 1; j < cb.size(); ++j) {
        if (std::fabs(x - cb.values[j]) < std::fabs(x - cb.values[best])) best = j;
      }
      const int code = codebook_encode(x, cb);
      if (code != best) {  // only allowed within an ulp of a midpoint
        ASSERT_NEAR(std::fabs(x - cb.values[code]), std::fabs(x - cb.values[best]), 1e-6f) << x;
      }
    }
    for (int j = 0; j + 1 < cb.size(); ++j) EXPECT_EQ(codebook_encode(cb.thresholds[j], cb), j);
  }
}

Codebook random_codebook(int bits, uint64_t seed) {
  auto v = test::make_data(test::Dist::kGaussian, size_t(1) << bits, seed, 0.5f);
  std::sort(v.begin(), v.end());
  v.front() = -1.0f;
  v.back() = 1.0f;
  return make_codebook(bits, v).value();
}

TEST(Codebook, SimdMatchesReferenceAllTargets) {
  test::for_each_target([] {
    uint64_t seed = 3;
    for (int bits = 2; bits <= 4; ++bits) {
      for (const Codebook& cb0 : {make_nf_codebook(bits), random_codebook(bits, 77 + bits)}) {
        const Codebook cb = apply_qnorm(cb0, QNorm{1.1f, -0.05f});
        for (size_t n : test::kOddSizes) {
          const auto x = test::make_data(test::Dist(seed % 3), n, seed, 1.7f, 0.4f);
          ++seed;
          const NormParams np = norm_from_minmax(x.data(), n);
          std::vector<uint8_t> a(packed_bytes(bits, n)), b(a.size());
          ASSERT_TRUE(encode_codebook_row(x.data(), n, np, cb, a.data(), KernelPath::kRef).ok());
          ASSERT_TRUE(encode_codebook_row(x.data(), n, np, cb, b.data(), KernelPath::kSimd).ok());
          ASSERT_EQ(a, b) << bits << " n=" << n;
          std::vector<float> ya(n), yb(n);
          decode_codebook_row(a.data(), n, np, cb, ya.data(), KernelPath::kRef);
          decode_codebook_row(a.data(), n, np, cb, yb.data(), KernelPath::kSimd);
          for (size_t i = 0; i < n; ++i) ASSERT_TRUE(test::same_bits(ya[i], yb[i]));
          std::vector<float> acc_a(n, 0.5f), acc_b(n, 0.5f);
          axpy_codebook_row(-0.3f, a.data(), n, np, cb, acc_a.data(), KernelPath::kRef);
          axpy_codebook_row(-0.3f, a.data(), n, np, cb, acc_b.data(), KernelPath::kSimd);
          for (size_t i = 0; i < n; ++i) ASSERT_TRUE(test::same_bits(acc_a[i], acc_b[i]));

          // Per channel: thresholds from a different sample (offline calibration).
          const auto cal = test::make_data(test::Dist::kGaussian, n, seed + 500, 1.0f);
          std::vector<float> up(n), lo(n);
          for (size_t i = 0; i < n; ++i) {
            up[i] = std::fabs(cal[i]) + 0.5f;
            lo[i] = -std::fabs(cal[i]) * 0.5f - 0.5f;
          }
          const ChannelNorm cn = make_channel_norm(up.data(), lo.data(), n).value();
          ASSERT_TRUE(encode_codebook_row_pc(x.data(), n, cn, cb, a.data(), KernelPath::kRef).ok());
          ASSERT_TRUE(encode_codebook_row_pc(x.data(), n, cn, cb, b.data(), KernelPath::kSimd).ok());
          ASSERT_EQ(a, b);
          decode_codebook_row_pc(a.data(), n, cn, cb, ya.data(), KernelPath::kRef);
          decode_codebook_row_pc(a.data(), n, cn, cb, yb.data(), KernelPath::kSimd);
          for (size_t i = 0; i < n; ++i) ASSERT_TRUE(test::same_bits(ya[i], yb[i]));
          const auto q = test::make_data(test::Dist::kGaussian, n, seed + 900);
          std::vector<float> w(n);
          float bias;
          prepare_codebook_query_pc(q.data(), n, cn, w.data(), &bias);
          double mag = std::fabs(bias);
          for (size_t i = 0; i < n; ++i) mag += std::fabs(w[i] * cb.values[code_at(a.data(), bits, i)]);
          EXPECT_NEAR(dot_codebook_row_pc(w.data(), bias, a.data(), n, cb, KernelPath::kRef),
                      dot_codebook_row_pc(w.data(), bias, a.data(), n, cb, KernelPath::kSimd),
                      tol::dot_rel(n) * mag);
          double direct = 0;
          for (size_t i = 0; i < n; ++i) direct += double(q[i]) * ya[i];
          EXPECT_NEAR(dot_codebook_row_pc(w.data(), bias, a.data(), n, cb, KernelPath::kRef), direct,
                      tol::dot_rel(n) * (mag + 1e-30) + 1e-6);
        }
      }
    }
  });
}

// Round trip on each distribution: every element within the codebook bound (min/max
// thresholds, so every value is an inlier).
TEST(Codebook, RoundTripBounds) {
  for (auto dist : test::kAllDists) {
    for (int bits = 2; bits <= 4; ++bits) {
      for (const Codebook& cb : {make_nf_codebook(bits), random_codebook(bits, 5 + bits)}) {
        double max_gap = 0;
        for (int j = 0; j + 1 < cb.size(); ++j) max_gap = std::max<double>(max_gap, cb.values[j + 1] - cb.values[j]);
        const double norm_err = std::max({max_gap / 2, 1.0 + cb.values[0], 1.0 - cb.values[cb.size() - 1]});
        const size_t n = 4096;
        const auto x = test::make_data(dist, n, 100 + bits, 2.0f, 0.7f);
        const NormParams np = norm_from_minmax(x.data(), n);
        std::vector<uint8_t> codes(packed_bytes(bits, n));
        ASSERT_TRUE(encode_codebook_row(x.data(), n, np, cb, codes.data()).ok());
        std::vector<float> y(n);
        decode_codebook_row(codes.data(), n, np, cb, y.data());
        const NormF f = norm_float(np);
        const double bound = tol::codebook_bound(norm_err, f.half, f.zero);
        for (size_t i = 0; i < n; ++i) ASSERT_LE(std::fabs(double(x[i]) - y[i]), bound) << test::dist_name(dist);
      }
    }
  }
}

TEST(Codebook, ConstantVectorAndBadInput) {
  const Codebook cb = make_nf_codebook(3);
  std::vector<float> x(33, 2.5f), y(33);
  const NormParams np = norm_from_minmax(x.data(), x.size());
  std::vector<uint8_t> codes(packed_bytes(3, 33));
  for (auto path : {KernelPath::kRef, KernelPath::kSimd}) {
    ASSERT_TRUE(encode_codebook_row(x.data(), x.size(), np, cb, codes.data(), path).ok());
    decode_codebook_row(codes.data(), x.size(), np, cb, y.data(), path);
    for (float v : y) EXPECT_EQ(v, 2.5f);  // h = 0: x' = z exactly
  }
  x[7] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(encode_codebook_row(x.data(), x.size(), np, cb, codes.data()).code(), StatusCode::kInvalidArgument);
  x[7] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(encode_codebook_row(x.data(), x.size(), np, cb, codes.data()).code(), StatusCode::kInvalidArgument);
  const float up[] = {1.0f}, lo[] = {2.0f};
  EXPECT_FALSE(make_channel_norm(up, lo, 1).ok());
}

// Q-Norm (spec §5.2): after adjustment, decoded values have the mean and std of the originals.
TEST(QNormTest, MatchesFirstTwoMoments) {
  for (int bits = 2; bits <= 4; ++bits) {
    const Codebook cb = make_nf_codebook(bits);
    auto x = test::make_data(test::Dist::kLaplace, 100000, 9, 0.3f, 0.05f);
    for (auto& v : x) v = std::clamp(v, -1.0f, 1.0f);
    const QNorm qn = fit_qnorm(x.data(), x.size(), cb).value();
    const Codebook adj = apply_qnorm(cb, qn);
    double m1 = 0, m2 = 0, q1 = 0, q2 = 0;
    for (float v : x) {
      const double d = adj.values[codebook_encode(v, adj)];
      m1 += v, q1 += double(v) * v, m2 += d, q2 += d * d;
    }
    const double n = double(x.size());
    m1 /= n, m2 /= n;
    const double s1 = std::sqrt(q1 / n - m1 * m1), s2 = std::sqrt(q2 / n - m2 * m2);
    EXPECT_NEAR(m2, m1, tol::kQNormRel * s1);
    EXPECT_NEAR(s2, s1, tol::kQNormRel * s1);
    EXPECT_EQ(adj.thresholds, cb.thresholds);  // encode unchanged
  }
  const Codebook cb = make_nf_codebook(2);
  EXPECT_FALSE(fit_qnorm(nullptr, 0, cb).ok());
}

}  // namespace
}  // namespace kvq
