// SPDX-License-Identifier: MIT
// Weighted 1-D k-means: sorted prefix-sum Lloyd and its brute-force reference (kmeans.h).
#include "quant/kmeans.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "base/rng.h"

namespace kvq {
namespace {

// Distinct sample values (ascending) with summed weights and prefix sums of w, w x, w x^2.
struct Sorted {
  std::vector<float> x;
  std::vector<double> p0, p1, p2;  // size n + 1
  size_t n() const { return x.size(); }
  double weight(size_t lo, size_t hi) const { return p0[hi] - p0[lo]; }
  // sum over [lo, hi) of w (x - c)^2.
  double cost(size_t lo, size_t hi, double c) const {
    const double s0 = p0[hi] - p0[lo], s1 = p1[hi] - p1[lo], s2 = p2[hi] - p2[lo];
    return std::max(0.0, s2 - 2 * c * s1 + c * c * s0);
  }
};

Status validate(std::span<const float> x, std::span<const float> w, const KMeansOptions& opt) {
  if (opt.k < 1 || opt.k > 256) return invalid_argument("kmeans: k must be in [1, 256]");
  if (opt.max_iter < 1) return invalid_argument("kmeans: max_iter must be >= 1");
  if (!w.empty() && w.size() != x.size()) return invalid_argument("kmeans: weights size != samples size");
  KVQ_RETURN_IF_ERROR(check_finite(x.data(), x.size(), "kmeans samples"));
  KVQ_RETURN_IF_ERROR(check_finite(w.data(), w.size(), "kmeans weights"));
  for (size_t i = 0; i < w.size(); ++i) {
    if (w[i] < 0) return invalid_argument("kmeans: negative weight at " + std::to_string(i));
  }
  return ok_status();
}

StatusOr<Sorted> build_sorted(std::span<const float> x, std::span<const float> w, int k) {
  std::vector<std::pair<float, float>> pts;
  pts.reserve(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const float wi = w.empty() ? 1.0f : w[i];
    if (wi > 0) pts.emplace_back(x[i] + 0.0f, wi);  // +0: -0 and 0 are one value
  }
  std::sort(pts.begin(), pts.end());  // (x, w): a unique order, so sums are deterministic
  Sorted s;
  s.p0.push_back(0);
  s.p1.push_back(0);
  s.p2.push_back(0);
  for (size_t i = 0; i < pts.size();) {
    const float v = pts[i].first;
    double wsum = 0;
    for (; i < pts.size() && pts[i].first == v; ++i) wsum += pts[i].second;
    s.x.push_back(v);
    s.p0.push_back(s.p0.back() + wsum);
    s.p1.push_back(s.p1.back() + wsum * v);
    s.p2.push_back(s.p2.back() + wsum * double(v) * v);
  }
  if (s.n() < size_t(k)) {
    return invalid_argument("kmeans: " + std::to_string(s.n()) +
                            " distinct values with positive weight, fewer than k = " +
                            std::to_string(k));
  }
  return s;
}

// b[0] = 0, b[k] = n, b[j + 1] = #points <= midpoint(c_j, c_{j+1}).
void segments(const Sorted& s, const std::vector<double>& c, std::vector<size_t>& b) {
  const size_t k = c.size();
  b.assign(k + 1, 0);
  b[k] = s.n();
  for (size_t j = 0; j + 1 < k; ++j) {
    const double mid = (c[j] + c[j + 1]) * 0.5;
    b[j + 1] = size_t(std::upper_bound(s.x.begin(), s.x.end(), mid,
                                       [](double m, float v) { return m < double(v); }) -
                      s.x.begin());
  }
}

// Farthest point from its own centroid over the whole data (ends of each range), ties to
// the lower value; skips points that coincide with a centroid. Used when sampling fails.
double farthest_point(const Sorted& s, const std::vector<double>& c) {
  std::vector<size_t> b;
  segments(s, c, b);
  double best = -1, best_x = s.x[0];
  for (size_t j = 0; j < c.size(); ++j) {
    if (b[j] == b[j + 1]) continue;
    for (size_t i : {b[j], b[j + 1] - 1}) {
      const double d = std::fabs(double(s.x[i]) - c[j]);
      if (d > 0 && (d > best || (d == best && s.x[i] < best_x))) {
        best = d;
        best_x = s.x[i];
      }
    }
  }
  return best_x;
}

// k-means++ (Arthur & Vassilvitskii): first centre with probability proportional to w,
// each next one proportional to w * D(x)^2, sampled in O(k log n) from the prefix sums.
std::vector<double> seed_plus_plus(const Sorted& s, int k, uint64_t seed) {
  Rng rng(seed);
  std::vector<double> c;
  {
    const double r = rng.uniform() * s.p0.back();
    size_t i = size_t(std::upper_bound(s.p0.begin() + 1, s.p0.end(), r) - (s.p0.begin() + 1));
    c.push_back(s.x[std::min(i, s.n() - 1)]);
  }
  std::vector<size_t> b;
  while (int(c.size()) < k) {
    segments(s, c, b);
    double total = 0;
    for (size_t j = 0; j < c.size(); ++j) total += s.cost(b[j], b[j + 1], c[j]);
    double pick = NAN;
    if (total > 0) {
      double r = rng.uniform() * total;
      size_t j = 0;
      for (; j + 1 < c.size(); ++j) {
        const double cj = s.cost(b[j], b[j + 1], c[j]);
        if (r < cj) break;
        r -= cj;
      }
      // Smallest t with cost(b_j, t + 1) > r.
      size_t lo = b[j], hi = b[j + 1];
      while (lo + 1 < hi) {
        const size_t mid = (lo + hi) / 2;
        if (s.cost(b[j], mid, c[j]) > r) {
          hi = mid;
        } else {
          lo = mid;
        }
      }
      pick = s.x[std::min(lo, s.n() - 1)];
    }
    if (std::isnan(pick) || std::binary_search(c.begin(), c.end(), pick)) {
      pick = farthest_point(s, c);
    }
    c.insert(std::upper_bound(c.begin(), c.end(), pick), pick);
  }
  return c;
}

// Final float centroids: strictly increasing even after rounding to float.
std::vector<float> to_float_centroids(const std::vector<double>& c) {
  std::vector<float> f(c.size());
  for (size_t j = 0; j < c.size(); ++j) {
    f[j] = float(c[j]);
    if (j > 0 && !(f[j] > f[j - 1])) f[j] = std::nextafter(f[j - 1], INFINITY);
  }
  return f;
}

double inertia_of(const Sorted& s, const std::vector<float>& cf) {
  std::vector<double> c(cf.begin(), cf.end());
  std::vector<size_t> b;
  segments(s, c, b);
  double sum = 0;
  for (size_t j = 0; j < c.size(); ++j) {
    for (size_t i = b[j]; i < b[j + 1]; ++i) {
      const double d = double(s.x[i]) - c[j];
      sum += (s.p0[i + 1] - s.p0[i]) * d * d;
    }
  }
  return sum;
}

}  // namespace

StatusOr<KMeansResult> kmeans_1d(std::span<const float> x, std::span<const float> w,
                                 const KMeansOptions& opt) {
  KVQ_RETURN_IF_ERROR(validate(x, w, opt));
  KVQ_ASSIGN_OR_RETURN(Sorted s, build_sorted(x, w, opt.k));
  std::vector<double> c = seed_plus_plus(s, opt.k, opt.seed);
  std::vector<size_t> b, prev;
  KMeansResult res;
  for (res.iterations = 0; res.iterations < opt.max_iter; ++res.iterations) {
    segments(s, c, b);
    // Empty cluster: move it to the farthest point of the worst cluster (1-D: a range end).
    size_t empty = c.size();
    for (size_t j = 0; j < c.size() && empty == c.size(); ++j) {
      if (b[j] == b[j + 1]) empty = j;
    }
    if (empty < c.size()) {
      size_t worst = 0;
      double worst_cost = -1;
      for (size_t j = 0; j < c.size(); ++j) {
        const double e = b[j] < b[j + 1] ? s.cost(b[j], b[j + 1], c[j]) : -1;
        if (e > worst_cost) worst_cost = e, worst = j;
      }
      const double d_lo = std::fabs(double(s.x[b[worst]]) - c[worst]);
      const double d_hi = std::fabs(double(s.x[b[worst + 1] - 1]) - c[worst]);
      c[empty] = d_hi > d_lo ? s.x[b[worst + 1] - 1] : s.x[b[worst]];
      std::sort(c.begin(), c.end());
      prev.clear();
      continue;
    }
    if (b == prev) {
      res.converged = true;
      break;
    }
    prev = b;
    for (size_t j = 0; j < c.size(); ++j) {
      c[j] = (s.p1[b[j + 1]] - s.p1[b[j]]) / (s.p0[b[j + 1]] - s.p0[b[j]]);
    }
  }
  res.centroids = to_float_centroids(c);
  res.inertia = inertia_of(s, res.centroids);
  return res;
}

StatusOr<KMeansResult> kmeans_1d_ref(std::span<const float> x, std::span<const float> w,
                                     const KMeansOptions& opt) {
  KVQ_RETURN_IF_ERROR(validate(x, w, opt));
  KVQ_ASSIGN_OR_RETURN(Sorted s, build_sorted(x, w, opt.k));
  std::vector<double> c = seed_plus_plus(s, opt.k, opt.seed);
  const size_t n = x.size(), k = c.size();
  auto wt = [&](size_t i) { return w.empty() ? 1.0 : double(w[i]); };
  std::vector<int> a(n, -1), prev;
  KMeansResult res;
  for (res.iterations = 0; res.iterations < opt.max_iter; ++res.iterations) {
    std::vector<double> s0(k, 0), s1(k, 0), sse(k, 0);
    for (size_t i = 0; i < n; ++i) {
      if (!(wt(i) > 0)) continue;
      int best = 0;
      for (size_t j = 1; j < k; ++j) {
        if (std::fabs(double(x[i]) - c[j]) < std::fabs(double(x[i]) - c[best])) best = int(j);
      }
      a[i] = best;
      s0[best] += wt(i);
      s1[best] += wt(i) * x[i];
      sse[best] += wt(i) * (x[i] - c[best]) * (x[i] - c[best]);
    }
    size_t empty = k;
    for (size_t j = 0; j < k && empty == k; ++j) {
      if (s0[j] == 0) empty = j;
    }
    if (empty < k) {
      size_t worst = 0;
      for (size_t j = 1; j < k; ++j) {
        if (s0[j] > 0 && (s0[worst] == 0 || sse[j] > sse[worst])) worst = j;
      }
      double far = 0, far_x = 0;
      bool found = false;
      for (size_t i = 0; i < n; ++i) {
        if (a[i] != int(worst)) continue;
        const double d = std::fabs(double(x[i]) - c[worst]);
        if (!found || d > far || (d == far && x[i] < far_x)) far = d, far_x = x[i], found = true;
      }
      c[empty] = far_x;
      std::sort(c.begin(), c.end());
      prev.clear();
      continue;
    }
    if (a == prev) {
      res.converged = true;
      break;
    }
    prev = a;
    for (size_t j = 0; j < k; ++j) c[j] = s1[j] / s0[j];
  }
  res.centroids = to_float_centroids(c);
  double inertia = 0;
  for (size_t i = 0; i < n; ++i) {
    double best = INFINITY;
    for (float cj : res.centroids) best = std::min(best, std::fabs(double(x[i]) - cj));
    inertia += wt(i) * best * best;
  }
  res.inertia = inertia;
  return res;
}

}  // namespace kvq
