// SPDX-License-Identifier: MIT
#include "quant/outliers.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "quant/bitpack.h"
#include "test_util.h"
#include "tolerances.h"

namespace kvq {
namespace {

TEST(Outliers, PerSideCount) {
  EXPECT_EQ(outliers_per_side(4096, 0.01), 21u);  // KVQuant deployment: 21 + 21 at d = 4096
  EXPECT_EQ(outliers_per_side(128, 0.01), 1u);
  EXPECT_EQ(outliers_per_side(1, 0.01), 0u);
  EXPECT_EQ(outliers_per_side(3, 0.9), 1u);  // capped: one inlier remains
  EXPECT_EQ(outliers_per_side(4096, 0.0), 0u);
}

// Fast selection equals the full-sort specification, including heavy ties, on every target.
TEST(Outliers, SelectionMatchesReference) {
  test::for_each_target([&] {
    uint64_t seed = 1;
    for (size_t n : test::kOddSizes) {
      for (double frac : {0.0, 0.01, 0.05, 0.3}) {
        for (int ties = 0; ties < 2; ++ties) {
          auto x = test::make_data(test::Dist(seed % 3), n, seed);
          ++seed;
          if (ties) for (auto& v : x) v = std::round(v);  // many equal values
          const size_t k = outliers_per_side(n, frac);
          std::vector<uint16_t> a(2 * k + 1), b(2 * k + 1);
          float ua, la, ub, lb;
          select_token_outliers(x.data(), n, k, a.data(), &ua, &la);
          select_token_outliers_ref(x.data(), n, k, b.data(), &ub, &lb);
          ASSERT_EQ(a, b) << "n " << n << " frac " << frac;
          ASSERT_EQ(ua, ub);
          ASSERT_EQ(la, lb);
          for (size_t j = 1; j < 2 * k; ++j) ASSERT_LT(a[j - 1], a[j]);  // distinct, ascending
        }
      }
    }
    std::vector<float> c(9, 1.0f);  // constant: top = first k, bottom = last k
    uint16_t idx[4];
    float u, l;
    select_token_outliers(c.data(), 9, 2, idx, &u, &l);
    EXPECT_EQ(idx[0], 0);
    EXPECT_EQ(idx[1], 1);
    EXPECT_EQ(idx[2], 7);
    EXPECT_EQ(idx[3], 8);
  });
}

// The selection skips blocks of values that cannot enter either list: rows whose extremes move
// in every block (ascending, descending, growing zig-zag) and extremes at a block's last value
// take it through every branch, and must still give the specification's choice.
TEST(Outliers, SelectionMatchesReferenceOnOrderedRows) {
  test::for_each_target([&] {
    for (size_t n : {size_t(33), size_t(129), size_t(1000), size_t(4096), size_t(4099)}) {
      for (int shape = 0; shape < 4; ++shape) {
        std::vector<float> x(n);
        for (size_t i = 0; i < n; ++i) {
          const float v = float(i);
          x[i] = shape == 0 ? v : shape == 1 ? -v : shape == 2 ? (i % 2 ? v : -v) : (i % 16 == 15 ? v : 0.5f);
        }
        for (double frac : {0.01, 0.05, 0.3}) {
          const size_t k = outliers_per_side(n, frac);
          std::vector<uint16_t> a(2 * k + 1), b(2 * k + 1);
          float ua, la, ub, lb;
          select_token_outliers(x.data(), n, k, a.data(), &ua, &la);
          select_token_outliers_ref(x.data(), n, k, b.data(), &ub, &lb);
          ASSERT_EQ(a, b) << "n " << n << " shape " << shape << " frac " << frac;
          ASSERT_EQ(ua, ub);
          ASSERT_EQ(la, lb);
        }
      }
    }
  });
}

// Per-channel selection (a vector of channels per test) against the plain loop, its
// specification: odd sizes, values exactly at the thresholds (strict, so not outliers), runs of
// outliers, none, all.
TEST(Outliers, ChannelSelectionMatchesTheLoop) {
  test::for_each_target([&] {
    uint64_t seed = 5;
    for (size_t n : test::kOddSizes) {
      for (int mode = 0; mode < 4; ++mode) {
        auto x = test::make_data(test::Dist(seed % 3), n, seed);
        ++seed;
        std::vector<float> up(n), lo(n);
        for (size_t i = 0; i < n; ++i) {
          up[i] = mode == 2 ? -10.0f : mode == 3 ? 1e9f : 1.5f + 0.001f * float(i % 7);
          lo[i] = mode == 2 ? 10.0f : mode == 3 ? -1e9f : -1.5f - 0.001f * float(i % 5);
          if (mode == 1 && i % 3 == 0) x[i] = i % 2 ? up[i] : lo[i];  // at the threshold: inlier
          if (mode == 1 && i % 11 < 4) x[i] = 100.0f;                 // runs of outliers
        }
        std::vector<uint16_t> want;
        for (size_t i = 0; i < n; ++i) {
          if (x[i] > up[i] || x[i] < lo[i]) want.push_back(uint16_t(i));
        }
        std::vector<uint16_t> got(n + 1);
        got.resize(select_channel_outliers(x.data(), n, up.data(), lo.data(), got.data()));
        ASSERT_EQ(got, want) << "n " << n << " mode " << mode;
      }
    }
  });
}

// KVQuant values at d = 4096, 1%: exactly 42 outliers, stored exactly; inliers within the
// narrowed range's codebook bound, which is much tighter than without outliers.
TEST(Outliers, DenseSparseTokenExactAccounting) {
  for (auto dist : test::kAllDists) {
    for (auto path : {KernelPath::kRef, KernelPath::kSimd}) {
      const size_t n = 4096;
      auto x = test::make_data(dist, n, 21, 1.0f);
      for (auto& v : x) v = round_to_f16(v);  // fp16 activations: outliers kept bit-exactly
      const Codebook cb = make_nf_codebook(3);
      std::vector<uint8_t> codes(packed_bytes(3, n));
      std::vector<uint16_t> idx(n);
      std::vector<f16_t> val(n);
      NormParams np;
      size_t count = 0;
      ASSERT_TRUE(quantize_dense_sparse_token(x.data(), n, 0.01, cb, codes.data(), &np, idx.data(),
                                              val.data(), &count, path).ok());
      ASSERT_EQ(count, 42u);
      std::vector<float> y(n);
      decode_codebook_row(codes.data(), n, np, cb, y.data());
      apply_outliers(idx.data(), val.data(), count, y.data());
      std::vector<bool> is_out(n, false);
      for (size_t j = 0; j < count; ++j) is_out[idx[j]] = true;
      const NormF f = norm_float(np);
      double max_gap = 0;
      for (int j = 0; j + 1 < cb.size(); ++j) max_gap = std::max<double>(max_gap, cb.values[j + 1] - cb.values[j]);
      const double bound = tol::codebook_bound(max_gap / 2, f.half, f.zero);
      for (size_t i = 0; i < n; ++i) {
        if (is_out[i]) {
          ASSERT_EQ(y[i], x[i]);
        } else {
          ASSERT_LE(std::fabs(double(x[i]) - y[i]), bound) << test::dist_name(dist);
        }
      }
      // The fused axpy path plus its correction equals the exact reconstruction.
      std::vector<float> acc(n, 0.0f);
      axpy_codebook_row(0.5f, codes.data(), n, np, cb, acc.data(), path);
      outlier_axpy_correction(0.5f, idx.data(), val.data(), count, codes.data(), np, cb, acc.data());
      for (size_t i = 0; i < n; ++i) ASSERT_NEAR(acc[i], 0.5f * y[i], 1e-6 * std::fabs(y[i]) + 1e-6);
    }
  }
}

TEST(Outliers, DenseSparseChannelsCountsEveryOutlier) {
  const size_t n = 300;
  const auto cal = test::make_data(test::Dist::kGaussian, n, 8);
  std::vector<float> up(n), lo(n);
  for (size_t i = 0; i < n; ++i) up[i] = 1.0f + 0.1f * std::fabs(cal[i]), lo[i] = -1.5f;
  const ChannelNorm cn = make_channel_norm(up.data(), lo.data(), n).value();
  const Codebook cb = make_nf_codebook(4);
  for (auto dist : test::kAllDists) {
    const auto x = test::make_data(dist, n, 31, 1.0f);
    size_t expected = 0;
    for (size_t i = 0; i < n; ++i) expected += x[i] > up[i] || x[i] < lo[i];
    std::vector<uint8_t> codes(packed_bytes(4, n));
    std::vector<uint16_t> idx(n);
    std::vector<f16_t> val(n);
    size_t count = 0;
    ASSERT_TRUE(quantize_dense_sparse_channels(x.data(), n, cn, cb, codes.data(), idx.data(),
                                               val.data(), &count).ok());
    EXPECT_EQ(count, expected);
    std::vector<float> y(n);
    decode_codebook_row_pc(codes.data(), n, cn, cb, y.data());
    const auto q = test::make_data(test::Dist::kGaussian, n, 55);
    std::vector<float> w(n);
    float bias;
    prepare_codebook_query_pc(q.data(), n, cn, w.data(), &bias);
    const float fused = dot_codebook_row_pc(w.data(), bias, codes.data(), n, cb) +
                        outlier_dot_correction_pc(q.data(), idx.data(), val.data(), count, codes.data(), cn, cb);
    apply_outliers(idx.data(), val.data(), count, y.data());
    double exact = 0, mag = 0;
    for (size_t i = 0; i < n; ++i) exact += double(q[i]) * y[i], mag += std::fabs(q[i] * y[i]);
    EXPECT_NEAR(fused, exact, 1e-5 * mag);
  }
}

TEST(Outliers, CheckedApiAndSparseRows) {
  const Codebook cb = make_nf_codebook(2);
  std::vector<float> x(64, 1.0f);
  x[3] = std::numeric_limits<float>::quiet_NaN();
  std::vector<uint8_t> codes(16);
  std::vector<uint16_t> idx(64);
  std::vector<f16_t> val(64);
  NormParams np;
  size_t count;
  EXPECT_FALSE(quantize_dense_sparse_token(x.data(), 64, 0.01, cb, codes.data(), &np, idx.data(), val.data(), &count).ok());
  x[3] = 1.0f;
  EXPECT_FALSE(quantize_dense_sparse_token(x.data(), 64, 1.5, cb, codes.data(), &np, idx.data(), val.data(), &count).ok());
  EXPECT_TRUE(quantize_dense_sparse_token(x.data(), 64, 0.1, cb, codes.data(), &np, idx.data(), val.data(), &count).ok());

  SparseRows rows;
  const uint16_t i1[] = {1, 5};
  const f16_t v1[] = {f32_to_f16(2.0f), f32_to_f16(-3.0f)};
  rows.append_row(i1, v1, 2);
  rows.append_row(nullptr, nullptr, 0);
  rows.append_row(i1, v1, 1);
  EXPECT_EQ(rows.n_rows(), 3u);
  EXPECT_EQ(rows.nnz(), 3u);
  EXPECT_EQ(rows.bytes(), 4u * 4 + 3 * 4);  // 4 row pointers, 3 x (index + value)
  EXPECT_EQ(rows.idx(2)[0], 1);
  EXPECT_EQ(rows.val(0)[1], v1[1]);
  rows.truncate(1);
  EXPECT_EQ(rows.nnz(), 2u);
}

}  // namespace
}  // namespace kvq
