// SPDX-License-Identifier: MIT
// Weighted 1-D k-means for nuq codebooks (KVQuant §3.3, spec §4.2-4.3): minimizes
// sum_i w_i (x_i - c(x_i))^2, e.g. with w = Fisher information * s_i^2 on normalized values.
//
// Algorithm: the points are sorted once (equal values merged, weights summed) and prefix sums
// of w, w x and w x^2 are built. k-means++ seeding (seeded kvq::Rng) samples from those
// prefix sums, and each Lloyd iteration is O(k log n): the clusters of sorted centroids are
// contiguous ranges split at the midpoints (binary search), their sums are prefix-sum
// differences. A point on a midpoint belongs to the lower cluster. An empty cluster is
// re-seeded at the farthest point (one end of the range) of the cluster with the largest
// squared error. Deterministic: the output depends only on the input, weights and seed.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "quant/common.h"

namespace kvq {

struct KMeansOptions {
  int k = 16;          // 1..256
  int max_iter = 100;  // Lloyd iterations (sklearn's KMeans used by KVQuant: 50)
  uint64_t seed = 0;
};

struct KMeansResult {
  std::vector<float> centroids;  // k values, strictly increasing, every cluster non-empty
  double inertia = 0.0;          // sum w (x - nearest centroid)^2 with the float centroids
  int iterations = 0;
  bool converged = false;  // assignments stopped changing before max_iter
};

// x: samples; w: weights (empty = all 1). invalid_argument for NaN/Inf, negative weights, size
// mismatch, k out of range, or fewer than k distinct values with positive weight.
StatusOr<KMeansResult> kmeans_1d(std::span<const float> x, std::span<const float> w,
                                 const KMeansOptions& opt);
// Brute-force reference: the same seeding, then O(n k) Lloyd over the raw samples
// (argmin |x - c| with ties to the lower centroid, direct double sums).
StatusOr<KMeansResult> kmeans_1d_ref(std::span<const float> x, std::span<const float> w,
                                     const KMeansOptions& opt);

}  // namespace kvq
