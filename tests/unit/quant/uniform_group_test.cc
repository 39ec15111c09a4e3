// SPDX-License-Identifier: MIT
#include "quant/uniform_group.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "test_util.h"
#include "tolerances.h"

namespace kvq {
namespace {

struct RowQ {
  std::vector<uint8_t> codes;
  std::vector<f16_t> scales, zeros;
  RowQ(size_t n, const UniformParams& p)
      : codes(packed_bytes(p.bits, n) + 1, 0xAB),
        scales(uniform_group_count(n, p.group_size) + 1, 0xABCD),
        zeros(uniform_group_count(n, p.group_size) + 1, 0xABCD) {}
};

double dot_ref_sum_abs(const std::vector<float>& q, const std::vector<float>& x) {
  double s = 0;
  for (size_t i = 0; i < q.size(); ++i) s += std::fabs(double(q[i]) * x[i]);
  return s;
}

// Quantize and dequantize: Highway path bit-exact with the reference, on every target, for
// odd sizes, all bit widths, groupings and both symmetric modes. Dot/axpy within dot_rel.
TEST(UniformRow, SimdMatchesReferenceAllTargets) {
  test::for_each_target([] {
    uint64_t seed = 1;
    for (int bits : {2, 3, 4, 8}) {
      for (int G : {0, 7, 16, 32, 128}) {
        for (bool sym : {false, true}) {
          const UniformParams p{bits, G, sym};
          for (size_t n : test::kOddSizes) {
            const auto x = test::make_data(test::Dist(seed % 3), n, seed, 2.0f, 0.5f);
            ++seed;
            RowQ a(n, p), b(n, p);
            ASSERT_TRUE(quantize_uniform_row(x.data(), n, p, a.codes.data(), a.scales.data(),
                                             a.zeros.data(), KernelPath::kRef).ok());
            ASSERT_TRUE(quantize_uniform_row(x.data(), n, p, b.codes.data(), b.scales.data(),
                                             b.zeros.data(), KernelPath::kSimd).ok());
            ASSERT_EQ(a.codes, b.codes) << bits << " " << G << " " << sym << " n=" << n;
            ASSERT_EQ(a.scales, b.scales);
            if (!sym) {
              ASSERT_EQ(a.zeros, b.zeros);
            }
            std::vector<float> ya(n), yb(n);
            dequantize_uniform_row(a.codes.data(), a.scales.data(), a.zeros.data(), n, p,
                                   ya.data(), KernelPath::kRef);
            dequantize_uniform_row(a.codes.data(), a.scales.data(), a.zeros.data(), n, p,
                                   yb.data(), KernelPath::kSimd);
            for (size_t i = 0; i < n; ++i) {
              ASSERT_TRUE(test::same_bits(ya[i], yb[i])) << i;
            }
            const auto q = test::make_data(test::Dist::kGaussian, n, seed + 1000);
            const double tol = tol::dot_rel(n) * dot_ref_sum_abs(q, ya);
            EXPECT_NEAR(dot_uniform_row(q.data(), a.codes.data(), a.scales.data(),
                                        a.zeros.data(), n, p, KernelPath::kRef),
                        dot_uniform_row(q.data(), a.codes.data(), a.scales.data(),
                                        a.zeros.data(), n, p, KernelPath::kSimd),
                        tol);
            std::vector<float> acc_a(q), acc_b(q);
            axpy_uniform_row(0.75f, a.codes.data(), a.scales.data(), a.zeros.data(), n, p,
                             acc_a.data(), KernelPath::kRef);
            axpy_uniform_row(0.75f, a.codes.data(), a.scales.data(), a.zeros.data(), n, p,
                             acc_b.data(), KernelPath::kSimd);
            for (size_t i = 0; i < n; ++i) {
              ASSERT_NEAR(acc_a[i], acc_b[i], 1e-6 * (std::fabs(q[i]) + std::fabs(ya[i])));
            }
          }
        }
      }
    }
  });
}

// Per-element worst-case bound (tolerances.h) and the s^2/12 mean-square error law.
TEST(UniformRow, RoundTripErrorBounds) {
  for (auto dist : test::kAllDists) {
    for (int bits : {2, 3, 4, 8}) {
      for (int G : {32, 128, 0}) {
        for (bool sym : {false, true}) {
          const UniformParams p{bits, G, sym};
          const size_t n = 4096;
          const auto x = test::make_data(dist, n, 42 + bits, 1.5f, sym ? 0.0f : 0.3f);
          RowQ q(n, p);
          ASSERT_TRUE(quantize_uniform_row(x.data(), n, p, q.codes.data(), q.scales.data(),
                                           q.zeros.data()).ok());
          std::vector<float> y(n);
          dequantize_uniform_row(q.codes.data(), q.scales.data(), q.zeros.data(), n, p, y.data());
          const size_t g_len = G ? G : n;
          double se = 0, se_theory = 0;
          for (size_t g0 = 0; g0 < n; g0 += g_len) {
            float mn = x[g0], mx = x[g0];
            for (size_t i = g0; i < g0 + g_len; ++i) mn = std::min(mn, x[i]), mx = std::max(mx, x[i]);
            const double s = f16_to_f32(q.scales[g0 / g_len]);
            const double bound = sym ? tol::uniform_sym_bound(s, std::max(-mn, mx))
                                     : tol::uniform_asym_bound(s, mn, mx);
            for (size_t i = g0; i < g0 + g_len; ++i) {
              ASSERT_LE(std::fabs(double(x[i]) - y[i]), bound)
                  << test::dist_name(dist) << " bits " << bits << " G " << G << " sym " << sym;
              se += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
              se_theory += s * s / 12;
            }
          }
          if (bits >= 4 || G == 32) {
            EXPECT_LE(se, tol::kUniformMseSlack * se_theory)
                << test::dist_name(dist) << " bits " << bits << " G " << G << " sym " << sym;
          }
        }
      }
    }
  }
}

TEST(UniformRow, ConstantAndZeroGroupsAreExact) {
  for (int bits : {2, 3, 4, 8}) {
    for (bool sym : {false, true}) {
      for (float c : {0.0f, 1.5f, -3.25f, 1e-3f}) {
        const UniformParams p{bits, 32, sym};
        const size_t n = 33;
        std::vector<float> x(n, c), y(n);
        for (auto path : {KernelPath::kRef, KernelPath::kSimd}) {
          RowQ q(n, p);
          ASSERT_TRUE(quantize_uniform_row(x.data(), n, p, q.codes.data(), q.scales.data(),
                                           q.zeros.data(), path).ok());
          dequantize_uniform_row(q.codes.data(), q.scales.data(), q.zeros.data(), n, p, y.data(), path);
          // Asymmetric: scale 0, every value is the fp16 zero point (exact for fp16 inputs).
          // Symmetric: code m reconstructs c up to rounding, and zero exactly.
          for (size_t i = 0; i < n; ++i) {
            if (!sym || c == 0.0f) {
              EXPECT_EQ(y[i], round_to_f16(c)) << bits << " " << sym << " " << c;
            } else {
              EXPECT_NEAR(y[i], c, tol::uniform_sym_bound(std::fabs(c) / ((1 << (bits - 1)) - 1), std::fabs(c)));
            }
          }
          if (!sym) {
            EXPECT_EQ(q.scales[0], 0);
          }
        }
      }
    }
  }
}

TEST(UniformRow, CheckedApiRejectsBadInput) {
  std::vector<float> x(64, 1.0f);
  RowQ q(64, UniformParams{});
  auto run = [&](const UniformParams& p) {
    return quantize_uniform_row(x.data(), x.size(), p, q.codes.data(), q.scales.data(),
                                q.zeros.data());
  };
  EXPECT_TRUE(run(UniformParams{2, 32, false}).ok());
  EXPECT_EQ(run(UniformParams{5, 32, false}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(run(UniformParams{2, -1, false}).code(), StatusCode::kInvalidArgument);
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity(), 70000.0f}) {
    x[13] = bad;
    for (auto path : {KernelPath::kRef, KernelPath::kSimd}) {
      const Status s = quantize_uniform_row(x.data(), x.size(), UniformParams{}, q.codes.data(),
                                            q.scales.data(), q.zeros.data(), path);
      EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
    }
    const Status s = quantize_uniform_cols(x.data(), 2, 32, 32, 2, q.codes.data(),
                                           q.scales.data(), q.zeros.data());
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    x[13] = 1.0f;
  }
}

// KIVI keys: a [n_rows tokens, n_cols channels] block, one group per channel.
TEST(UniformCols, SimdMatchesReferenceAndBounds) {
  test::for_each_target([] {
    uint64_t seed = 5;
    for (int bits : {2, 3, 4, 8}) {
      for (size_t n_rows : {1, 5, 32}) {
        for (size_t n_cols : {1, 7, 33, 127, 128, 300}) {
          const size_t ld = n_cols + 3;
          auto x = test::make_data(test::Dist(seed % 3), n_rows * ld, seed, 1.0f, 0.2f);
          ++seed;
          // One heavy channel, as in KIVI §3.2.
          for (size_t t = 0; t < n_rows; ++t) x[t * ld] *= 30.0f;
          const size_t rb = packed_bytes(bits, n_cols);
          std::vector<uint8_t> ca(n_rows * rb), cb(n_rows * rb);
          std::vector<f16_t> sa(n_cols), za(n_cols), sb(n_cols), zb(n_cols);
          ASSERT_TRUE(quantize_uniform_cols(x.data(), n_rows, n_cols, ld, bits, ca.data(),
                                            sa.data(), za.data(), KernelPath::kRef).ok());
          ASSERT_TRUE(quantize_uniform_cols(x.data(), n_rows, n_cols, ld, bits, cb.data(),
                                            sb.data(), zb.data(), KernelPath::kSimd).ok());
          ASSERT_EQ(ca, cb);
          ASSERT_EQ(sa, sb);
          ASSERT_EQ(za, zb);
          std::vector<float> ya(n_rows * n_cols), yb(n_rows * n_cols);
          dequantize_uniform_cols(ca.data(), sa.data(), za.data(), n_rows, n_cols, bits,
                                  ya.data(), n_cols, KernelPath::kRef);
          dequantize_uniform_cols(ca.data(), sa.data(), za.data(), n_rows, n_cols, bits,
                                  yb.data(), n_cols, KernelPath::kSimd);
          for (size_t i = 0; i < ya.size(); ++i) {
            ASSERT_TRUE(test::same_bits(ya[i], yb[i]));
          }
          for (size_t c = 0; c < n_cols; ++c) {
            float mn = x[c], mx = x[c];
            for (size_t t = 0; t < n_rows; ++t) mn = std::min(mn, x[t * ld + c]), mx = std::max(mx, x[t * ld + c]);
            const double bound = tol::uniform_asym_bound(f16_to_f32(sa[c]), mn, mx);
            for (size_t t = 0; t < n_rows; ++t) {
              ASSERT_LE(std::fabs(double(x[t * ld + c]) - ya[t * n_cols + c]), bound);
            }
          }
          const auto q = test::make_data(test::Dist::kGaussian, n_cols, seed + 99);
          std::vector<float> da(n_rows), db(n_rows);
          dot_uniform_cols(q.data(), ca.data(), sa.data(), za.data(), n_rows, n_cols, bits,
                           da.data(), KernelPath::kRef);
          dot_uniform_cols(q.data(), ca.data(), sa.data(), za.data(), n_rows, n_cols, bits,
                           db.data(), KernelPath::kSimd);
          // The SIMD path sums (q_c s_c) code + q_c z_c separately, so its error scales with
          // sum |q_c| (|s_c code| + |z_c|), not with the (possibly cancelling) dot itself.
          for (size_t t = 0; t < n_rows; ++t) {
            double mag = 0;
            for (size_t c = 0; c < n_cols; ++c) {
              mag += std::fabs(q[c]) * (std::fabs(ya[t * n_cols + c] - f16_to_f32(za[c])) +
                                        std::fabs(f16_to_f32(za[c])));
            }
            ASSERT_NEAR(da[t], db[t], tol::dot_rel(n_cols) * mag);
          }
        }
      }
    }
  });
}

TEST(UniformRows, DeterministicAcrossThreadCounts) {
  const size_t n_rows = 37, n = 200, ld = 203;
  const UniformParams p{3, 32, false};
  const auto x = test::make_data(test::Dist::kLaplace, n_rows * ld, 11);
  const size_t stride = packed_bytes(3, n), ng = uniform_group_count(n, 32);
  std::vector<uint8_t> c0(n_rows * stride);
  std::vector<f16_t> s0(n_rows * ng), z0(n_rows * ng);
  ASSERT_TRUE(quantize_uniform_rows(nullptr, x.data(), n_rows, n, ld, p, c0.data(), stride,
                                    s0.data(), z0.data()).ok());
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    std::vector<uint8_t> c(c0.size());
    std::vector<f16_t> s(s0.size()), z(z0.size());
    ASSERT_TRUE(quantize_uniform_rows(&pool, x.data(), n_rows, n, ld, p, c.data(), stride,
                                      s.data(), z.data()).ok());
    EXPECT_EQ(c, c0);
    EXPECT_EQ(s, s0);
    EXPECT_EQ(z, z0);
  }
  // Same as one row at a time.
  std::vector<uint8_t> c(stride);
  std::vector<f16_t> s(ng), z(ng);
  ASSERT_TRUE(quantize_uniform_row(x.data() + 5 * ld, n, p, c.data(), s.data(), z.data()).ok());
  EXPECT_TRUE(std::equal(c.begin(), c.end(), c0.begin() + 5 * stride));
}

}  // namespace
}  // namespace kvq
