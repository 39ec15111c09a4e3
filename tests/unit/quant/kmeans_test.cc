// SPDX-License-Identifier: MIT
#include "quant/kmeans.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <vector>

#include "test_util.h"
#include "tolerances.h"

namespace kvq {
namespace {

void expect_valid(const KMeansResult& r, int k) {
  ASSERT_EQ(r.centroids.size(), size_t(k));
  for (size_t j = 1; j < r.centroids.size(); ++j) ASSERT_LT(r.centroids[j - 1], r.centroids[j]);
}

// Small inputs: identical (to 1e-9) to the brute-force Lloyd reference from the same seeds.
TEST(KMeans, MatchesBruteForceReference) {
  uint64_t seed = 1;
  for (auto dist : test::kAllDists) {
    for (int k : {1, 2, 4, 8, 16}) {
      for (size_t n : {size_t(20), size_t(200), size_t(3000)}) {
        const auto x = test::make_data(dist, n, seed++, 0.4f);
        auto w = test::make_data(test::Dist::kGaussian, n, seed++);
        for (auto& v : w) v = v * v;  // Fisher-like non-negative weights
        for (bool weighted : {false, true}) {
          std::span<const float> ws = weighted ? std::span<const float>(w) : std::span<const float>();
          const KMeansOptions opt{k, 100, 7};
          auto fast = kmeans_1d(x, ws, opt);
          auto ref = kmeans_1d_ref(x, ws, opt);
          ASSERT_TRUE(fast.ok() && ref.ok());
          expect_valid(*fast, k);
          for (int j = 0; j < k; ++j) {
            ASSERT_NEAR(fast->centroids[j], ref->centroids[j],
                        tol::kKMeansRel * (1 + std::fabs(ref->centroids[j])))
                << test::dist_name(dist) << " k " << k << " n " << n;
          }
          EXPECT_EQ(fast->iterations, ref->iterations);
          EXPECT_NEAR(fast->inertia, ref->inertia, 1e-9 * (1 + ref->inertia));
        }
      }
    }
  }
}

// On well-separated clusters Lloyd finds the global optimum: the cluster means.
TEST(KMeans, RecoversSeparatedClusters) {
  std::vector<float> x;
  const float centers[] = {-0.9f, -0.3f, 0.2f, 0.8f};
  Rng rng(3);
  for (int i = 0; i < 4000; ++i) x.push_back(centers[i % 4] + float(rng.normal()) * 0.01f);
  auto r = kmeans_1d(x, {}, KMeansOptions{4, 100, 0});
  ASSERT_TRUE(r.ok());
  for (int j = 0; j < 4; ++j) EXPECT_NEAR(r->centroids[j], centers[j], 0.002);
  EXPECT_TRUE(r->converged);
}

TEST(KMeans, DeterministicDistinctAndDegenerateInputs) {
  const auto x = test::make_data(test::Dist::kLaplace, 5000, 4, 0.3f);
  auto a = kmeans_1d(x, {}, KMeansOptions{16, 50, 42});
  auto b = kmeans_1d(x, {}, KMeansOptions{16, 50, 42});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->centroids, b->centroids);
  // Exactly k distinct values (heavily repeated): every value is its own centroid.
  std::vector<float> few;
  for (int i = 0; i < 1000; ++i) few.push_back(float(i % 8) * 0.25f - 1.0f);
  auto r = kmeans_1d(few, {}, KMeansOptions{8, 100, 1});
  ASSERT_TRUE(r.ok());
  expect_valid(*r, 8);
  for (int j = 0; j < 8; ++j) EXPECT_EQ(r->centroids[j], float(j) * 0.25f - 1.0f);
  EXPECT_EQ(r->inertia, 0.0);
  // Fewer distinct values than k, bad weights, NaN.
  EXPECT_EQ(kmeans_1d(few, {}, KMeansOptions{9, 100, 1}).status().code(), StatusCode::kInvalidArgument);
  std::vector<float> w(few.size(), 1.0f);
  w[3] = -1.0f;
  EXPECT_FALSE(kmeans_1d(few, w, KMeansOptions{4, 100, 1}).ok());
  auto bad = few;
  bad[10] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(kmeans_1d(bad, {}, KMeansOptions{4, 100, 1}).ok());
  // Zero-weight samples are ignored (they cannot make a cluster non-empty).
  std::fill(w.begin(), w.end(), 0.0f);
  w[0] = w[1] = 1.0f;
  EXPECT_FALSE(kmeans_1d(few, w, KMeansOptions{3, 100, 1}).ok());
}

// Empty clusters are re-seeded: a clumpy sample where k-means++ with this seed would
// otherwise leave a centroid without points still returns k distinct non-empty centroids.
TEST(KMeans, EmptyClustersAreReseeded) {
  for (uint64_t seed = 0; seed < 50; ++seed) {
    std::vector<float> x;
    for (int i = 0; i < 300; ++i) x.push_back(i < 290 ? float(i % 3) : 100.0f + float(i));
    auto r = kmeans_1d(x, {}, KMeansOptions{6, 100, seed});
    auto ref = kmeans_1d_ref(x, {}, KMeansOptions{6, 100, seed});
    ASSERT_TRUE(r.ok() && ref.ok());
    expect_valid(*r, 6);
    EXPECT_EQ(r->centroids, ref->centroids);
  }
}

// Tens of millions of samples is the calibration scale (16 x 2048 tokens x 4096 channels / 8);
// 4M here keeps the suite fast. The time is printed, not asserted: BM_KMeans in
// bench/quant/quant_bench.cc measures it.
TEST(KMeans, LargeInputConverges) {
  const auto x = test::make_data(test::Dist::kGaussian, 4'000'000, 12, 0.3f);
  auto w = test::make_data(test::Dist::kGaussian, x.size(), 13);
  for (auto& v : w) v = v * v;
  const auto t0 = std::chrono::steady_clock::now();
  auto r = kmeans_1d(x, w, KMeansOptions{16, 100, 0});
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(r.ok());
  expect_valid(*r, 16);
  std::printf("kmeans_1d: 4M weighted samples, k = 16: %.3f s, %d iterations\n", s, r->iterations);
}

}  // namespace
}  // namespace kvq
