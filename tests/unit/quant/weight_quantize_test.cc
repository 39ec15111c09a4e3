// SPDX-License-Identifier: MIT
// The reference quantizers of the K-quant and IQ4 weight types (what `kvq synth --type` writes):
// quantize then dequantize random rows of several sizes and distributions within an RMS bound
// per type, every block's scales use their full range, and all-zero, constant, tiny and huge
// rows give finite values. Byte equality with llama-quantize's own files is
// tests/golden/weight_requantize_test.cc.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "base/fp16.h"
#include "quant/weight/iq4_nl.h"
#include "quant/weight/iq4_xs.h"
#include "quant/weight/q2_k.h"
#include "quant/weight/q3_k.h"
#include "quant/weight/q4_k.h"
#include "quant/weight/q5_k.h"
#include "quant/weight/q6_k.h"
#include "test_util.h"

namespace kvq {
namespace {

// One type's quantizer as bytes in, floats out, plus a check of one block's fields.
struct QuantCase {
  const char* name;
  int block_elems;
  size_t block_bytes;
  void (*quantize)(const float* x, uint8_t* y, int64_t k);
  void (*dequantize)(const uint8_t* y, float* x, int64_t k);
  // Largest RMS error relative to the row's RMS on Gaussian data (see kCases).
  double gaussian_rel_rms;
  // Checks the fields of a block quantized from non-constant data.
  std::function<void(const uint8_t* block)> check_fields;
};

template <typename Block, void (*kQ)(const float*, Block*, int64_t)>
void quantize_bytes(const float* x, uint8_t* y, int64_t k) {
  kQ(x, reinterpret_cast<Block*>(y), k);
}
template <typename Block, void (*kD)(const Block*, float*, int64_t)>
void dequantize_bytes(const uint8_t* y, float* x, int64_t k) {
  kD(reinterpret_cast<const Block*>(y), x, k);
}

template <typename Block>
Block as(const uint8_t* p) {
  Block b;
  std::memcpy(&b, p, sizeof(Block));
  return b;
}

bool finite16(f16_t h) { return std::isfinite(f16_to_f32(h)); }

// Q4_K / Q5_K: d and dmin finite and non-negative; the largest sub-block scale is stored as 63.
template <typename Block>
void check_k_scale_min(const uint8_t* p) {
  const auto b = as<Block>(p);
  ASSERT_TRUE(finite16(b.d) && finite16(b.dmin));
  EXPECT_GE(f16_to_f32(b.d), 0.0f);
  EXPECT_GE(f16_to_f32(b.dmin), 0.0f);
  int max_sc = 0;
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    k_scale_min(j, b.scales, &sc, &m);
    max_sc = std::max(max_sc, int(sc));
  }
  EXPECT_EQ(max_sc, 63);
}

// Bounds: a b-bit uniform grid over a sub-block's range r has RMS error r / (2^b - 1) / sqrt(12)
// when values fill the range evenly; Gaussian sub-blocks of 16-32 values span about 4 sigma,
// so Q4_K's grid alone gives about 4 / 15 / sqrt(12) = 0.077 sigma, and the scale searches
// trade a little range for less error. Measured on Gaussian rows (17 super-blocks): Q2_K 0.297,
// Q3_K 0.152, Q4_K 0.072, Q5_K 0.036, Q6_K 0.018 (each bit halves it, as it should), IQ4_NL
// 0.076 and IQ4_XS 0.077 (16 non-linear levels, Q4_K's error without its per-sub-block
// minimum); the bounds add about 15%.
const QuantCase kCases[] = {
    {"q2_k", kQK_K, sizeof(BlockQ2_K), quantize_bytes<BlockQ2_K, quantize_row_q2_k_ref>,
     dequantize_bytes<BlockQ2_K, dequantize_row_q2_k_ref>, 0.34,
     [](const uint8_t* p) {
       const auto b = as<BlockQ2_K>(p);
       ASSERT_TRUE(finite16(b.d) && finite16(b.dmin));
       EXPECT_GE(f16_to_f32(b.d), 0.0f);
       EXPECT_GE(f16_to_f32(b.dmin), 0.0f);
       int max_sc = 0;
       for (uint8_t s : b.scales) max_sc = std::max(max_sc, s & 0xF);
       EXPECT_EQ(max_sc, 15);
     }},
    {"q3_k", kQK_K, sizeof(BlockQ3_K), quantize_bytes<BlockQ3_K, quantize_row_q3_k_ref>,
     dequantize_bytes<BlockQ3_K, dequantize_row_q3_k_ref>, 0.175,
     [](const uint8_t* p) {
       const auto b = as<BlockQ3_K>(p);
       ASSERT_TRUE(finite16(b.d));
       int8_t sc[16];
       unpack_q3_k_scales(b.scales, sc);
       EXPECT_EQ(*std::min_element(sc, sc + 16), -32);  // the largest scale maps to -32
     }},
    {"q4_k", kQK_K, sizeof(BlockQ4_K), quantize_bytes<BlockQ4_K, quantize_row_q4_k_ref>,
     dequantize_bytes<BlockQ4_K, dequantize_row_q4_k_ref>, 0.083, check_k_scale_min<BlockQ4_K>},
    {"q5_k", kQK_K, sizeof(BlockQ5_K), quantize_bytes<BlockQ5_K, quantize_row_q5_k_ref>,
     dequantize_bytes<BlockQ5_K, dequantize_row_q5_k_ref>, 0.042, check_k_scale_min<BlockQ5_K>},
    {"q6_k", kQK_K, sizeof(BlockQ6_K), quantize_bytes<BlockQ6_K, quantize_row_q6_k_ref>,
     dequantize_bytes<BlockQ6_K, dequantize_row_q6_k_ref>, 0.021,
     [](const uint8_t* p) {
       const auto b = as<BlockQ6_K>(p);
       ASSERT_TRUE(finite16(b.d));
       EXPECT_EQ(*std::min_element(b.scales, b.scales + 16), -128);  // the largest scale maps to -128
     }},
    {"iq4_nl", 32, sizeof(BlockIQ4_NL), quantize_bytes<BlockIQ4_NL, quantize_row_iq4_nl_ref>,
     dequantize_bytes<BlockIQ4_NL, dequantize_row_iq4_nl_ref>, 0.088,
     [](const uint8_t* p) {
       const auto b = as<BlockIQ4_NL>(p);
       ASSERT_TRUE(finite16(b.d));
       EXPECT_NE(f16_to_f32(b.d), 0.0f);
     }},
    {"iq4_xs", kQK_K, sizeof(BlockIQ4_XS), quantize_bytes<BlockIQ4_XS, quantize_row_iq4_xs_ref>,
     dequantize_bytes<BlockIQ4_XS, dequantize_row_iq4_xs_ref>, 0.088,
     [](const uint8_t* p) {
       const auto b = as<BlockIQ4_XS>(p);
       ASSERT_TRUE(finite16(b.d));
       int min_ls = 63;
       for (int s = 0; s < 8; ++s)
         min_ls = std::min(min_ls, ((b.scales_l[s / 2] >> (4 * (s % 2))) & 0xF) | (((b.scales_h >> (2 * s)) & 3) << 4));
       EXPECT_EQ(min_ls, 0);  // the largest sub-block scale maps to -32
     }},
};

void PrintTo(const QuantCase& c, std::ostream* os) { *os << c.name; }

// Quantizes and dequantizes x; returns the reconstruction and the bytes.
std::vector<float> round_trip(const QuantCase& c, const std::vector<float>& x, std::vector<uint8_t>* bytes = nullptr) {
  std::vector<uint8_t> q(x.size() / size_t(c.block_elems) * c.block_bytes, 0xAB);
  c.quantize(x.data(), q.data(), int64_t(x.size()));
  std::vector<float> y(x.size());
  c.dequantize(q.data(), y.data(), int64_t(x.size()));
  if (bytes) *bytes = std::move(q);
  return y;
}

double rel_rms(const std::vector<float>& x, const std::vector<float>& y) {
  double e = 0, s = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    e += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    s += double(x[i]) * x[i];
  }
  return s > 0 ? std::sqrt(e / s) : std::sqrt(e);
}

class WeightQuantizeTest : public ::testing::TestWithParam<QuantCase> {};

TEST_P(WeightQuantizeTest, RoundTripWithinTheTypesError) {
  const QuantCase& c = GetParam();
  for (int n_blocks : {1, 3, 17}) {
    const size_t n = size_t(n_blocks) * size_t(c.block_elems == 32 ? 256 : c.block_elems);
    for (test::Dist dist : test::kAllDists) {
      SCOPED_TRACE(std::string(test::dist_name(dist)) + " n " + std::to_string(n));
      const auto x = test::make_data(dist, n, 11 + n + size_t(dist), 0.02f, dist == test::Dist::kLaplace ? 0.01f : 0.0f);
      std::vector<uint8_t> q;
      const auto y = round_trip(c, x, &q);
      for (float v : y) ASSERT_TRUE(std::isfinite(v));
      const double e = rel_rms(x, y);
      // Heavier tails stretch the sub-block ranges: Laplace and 2% outliers at 40x cost up to
      // 1.6x the Gaussian error on the sub-blocks they land in.
      const double bound = c.gaussian_rel_rms * (dist == test::Dist::kGaussian ? 1.0 : 1.6);
      EXPECT_LE(e, bound) << c.name;
      if (dist == test::Dist::kGaussian && n_blocks == 17) std::printf("[ quant ] %s gaussian rel RMS %.4f\n", c.name, e);
      for (size_t b = 0; b < q.size() / c.block_bytes; ++b) {
        if (c.block_elems == kQK_K || b % 8 == 0) c.check_fields(&q[b * c.block_bytes]);
      }
      // Pure: the same input gives the same bytes.
      std::vector<uint8_t> q2;
      round_trip(c, x, &q2);
      EXPECT_EQ(q, q2);
    }
  }
}

TEST_P(WeightQuantizeTest, ZeroConstantTinyAndHugeRowsStayFinite) {
  const QuantCase& c = GetParam();
  const size_t n = 2 * kQK_K;
  // All zero: exact zeros back.
  for (float v : round_trip(c, std::vector<float>(n, 0.0f))) ASSERT_EQ(v, 0.0f);
  // Constant rows, either sign: finite and near the constant (one level of the type's grid,
  // plus the fp16 scale's rounding).
  for (float k : {0.37f, -0.37f, 5.0f}) {
    const auto y = round_trip(c, std::vector<float>(n, k));
    for (float v : y) {
      ASSERT_TRUE(std::isfinite(v));
      EXPECT_NEAR(v, k, 0.35f * std::fabs(k)) << c.name << " constant " << k;
    }
  }
  // Tiny values (scales underflow fp16) and huge ones (a 40000 peak: fp16 scales still fit):
  // finite, and the huge row as accurate as a unit-scale one.
  auto x = test::make_data(test::Dist::kGaussian, n, 5, 1e-7f);
  for (float v : round_trip(c, x)) ASSERT_TRUE(std::isfinite(v));
  x = test::make_data(test::Dist::kGaussian, n, 5, 1e4f);
  const auto y = round_trip(c, x);
  for (float v : y) ASSERT_TRUE(std::isfinite(v));
  EXPECT_LE(rel_rms(x, y), c.gaussian_rel_rms);
  // A single spike in zeros, and a row with a zero sub-block next to non-zero ones.
  std::vector<float> spike(n, 0.0f);
  spike[77] = 3.0f;
  const auto ys = round_trip(c, spike);
  EXPECT_NEAR(ys[77], 3.0f, 0.05f);
  for (size_t i = 0; i < n; ++i) {
    if (i != 77) {
      EXPECT_NEAR(ys[i], 0.0f, 0.2f) << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(KQuantAndIq4, WeightQuantizeTest, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<QuantCase>& i) { return std::string(i.param.name); });

}  // namespace
}  // namespace kvq
