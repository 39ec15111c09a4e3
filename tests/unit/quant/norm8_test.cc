// SPDX-License-Identifier: MIT
// The 8-bit per-token norm (quant/normalize.h, the spec's norm=8): every code decodes to an
// exact fp16 NormParams; the encoded norm covers the range it was made for with the smallest
// half-range that can; out-of-reach ranges are errors; and KVQuant's value quantizer with it
// keeps every inlier within half a codebook step of the decoded grid.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "base/rng.h"
#include "quant/bitpack.h"
#include "quant/codebook.h"
#include "quant/normalize.h"
#include "quant/outliers.h"

namespace kvq {
namespace {

TEST(Norm8, EveryCodeIsAnExactFp16NormAndTheScaleIsMonotone) {
  float prev = 0.0f;
  for (int c = 0; c < 256; ++c) {
    for (int q : {-127, -1, 0, 1, 77, 127}) {
      const NormParams8 p{uint8_t(c), int8_t(q)};
      const NormF f = norm8_float(p);
      const NormF g = norm_float(norm8_decode(p));
      ASSERT_EQ(f.half, g.half) << c;
      ASSERT_EQ(f.zero, g.zero) << c << " " << q;
    }
    const float h = norm8_float(NormParams8{uint8_t(c), 0}).half;
    ASSERT_GT(h, prev) << c;
    if (c > 0) {
      ASSERT_LT(h / prev, 1.05f) << c;  // 16 steps per octave
    }
    prev = h;
  }
  EXPECT_EQ(norm8_float(NormParams8{0, 0}).half, 1.0f / 256);
}

TEST(Norm8, CoversTheRangeWithTheSmallestHalfRange) {
  Rng rng(3);
  for (int i = 0; i < 20000; ++i) {
    const float scale = std::ldexp(1.0f, int(rng.below(14)) - 9);
    float a = float(rng.normal()) * scale, b = float(rng.normal()) * scale;
    if (i % 7 == 0) b = a + scale * 0.01f;  // narrow ranges away from 0
    const float upper = std::max(a, b), lower = std::min(a, b);
    const auto p = norm8_from_thresholds(upper, lower);
    ASSERT_TRUE(p.ok()) << lower << " " << upper;
    const NormF f = norm8_float(*p);
    ASSERT_LE(f.zero - f.half, lower);
    ASSERT_GE(f.zero + f.half, upper);
    ASSERT_GE(f.half, (upper - lower) * 0.5f);
    // No smaller code covers it (with its nearest zero point).
    if (p->log_half > 0) {
      const int c = p->log_half - 1;
      const float step = std::ldexp(1.0f, c / 16 + kNorm8MinExp - 5);
      const long q = std::clamp(std::lround((upper + lower) * 0.5f / step), -127L, 127L);
      const NormF g = norm8_float(NormParams8{uint8_t(c), int8_t(q)});
      EXPECT_FALSE(g.zero - g.half <= lower && g.zero + g.half >= upper) << lower << " " << upper;
    }
  }
  // A zero range takes the smallest half-range; an all-equal range away from 0 the smallest
  // whose zero step reaches it (0.03 / 127 needs steps of 2^-12: h = 2^-7, code 16).
  EXPECT_EQ(norm8_from_thresholds(0.0f, 0.0f)->log_half, 0);
  EXPECT_EQ(norm8_from_thresholds(0.03f, 0.03f)->log_half, 16);
}

TEST(Norm8, RangesBeyondEightBitsAreErrors) {
  EXPECT_FALSE(norm8_from_thresholds(300.0f, -300.0f).ok());
  EXPECT_FALSE(norm8_from_thresholds(2000.0f, 1999.0f).ok());
  EXPECT_FALSE(norm8_from_thresholds(1.0f, 2.0f).ok());
  EXPECT_FALSE(norm8_from_thresholds(NAN, 0.0f).ok());
  const auto s = norm8_from_thresholds(300.0f, -300.0f).status();
  EXPECT_NE(s.message().find("norm=16"), std::string::npos) << s.message();
  EXPECT_TRUE(norm8_from_thresholds(240.0f, -240.0f).ok());
}

// KVQuant values with norm=8: the codes are those of the decoded norm (what every decoder
// reads), and each inlier decodes within half the widest codebook gap of itself.
TEST(Norm8, DenseSparseTokenQuantizesWithTheDecodedNorm) {
  Rng rng(11);
  const Codebook cb = make_nf_codebook(3);
  float gap = 0.0f;
  for (int j = 0; j + 1 < cb.size(); ++j) gap = std::max(gap, cb.values[size_t(j) + 1] - cb.values[size_t(j)]);
  for (size_t n : {size_t(37), size_t(128), size_t(301)}) {
    std::vector<float> x(n);
    for (auto& v : x) v = float(rng.normal()) * 0.7f + 0.2f;
    std::vector<uint8_t> codes(packed_bytes(3, n)), codes16(codes.size());
    std::vector<uint16_t> idx(n);
    std::vector<f16_t> val(n);
    NormParams norm;
    NormParams8 n8;
    size_t count = 0;
    ASSERT_TRUE(quantize_dense_sparse_token(x.data(), n, 0.02, cb, codes.data(), &norm, idx.data(), val.data(),
                                            &count, KernelPath::kSimd, &n8).ok());
    const NormF f = norm8_float(n8);
    EXPECT_EQ(f16_to_f32(norm.zero), f.zero);
    EXPECT_EQ(f16_to_f32(norm.half_range), f.half);
    ASSERT_TRUE(encode_codebook_row(x.data(), n, norm, cb, codes16.data(), KernelPath::kRef).ok());
    EXPECT_EQ(codes, codes16);
    std::vector<float> y(n);
    decode_codebook_row(codes.data(), n, norm, cb, y.data());
    std::vector<bool> out(n);
    for (size_t j = 0; j < count; ++j) out[idx[j]] = true;
    for (size_t i = 0; i < n; ++i) {
      if (!out[i]) {
        EXPECT_LE(std::fabs(y[i] - x[i]), f.half * gap * 0.5f * 1.0001f + 1e-6f) << i;
      }
    }
  }
}

}  // namespace
}  // namespace kvq
