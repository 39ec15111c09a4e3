// SPDX-License-Identifier: MIT
// Every weight format: the Highway dequantizer equals the scalar reference bit for bit, and
// model_ops' matmul over packed rows matches a double-precision dot of the reference's
// weights with the activations rounded as the format says (round_activations), on random
// blocks, odd row and token counts, every SIMD target and 1 or 2 threads (bit-identical
// across thread counts).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <ostream>
#include <vector>

#include "../quant/test_util.h"
#include "base/fp16.h"
#include "base/rng.h"
#include "model/model_ops.h"
#include "quant/ggml_blocks.h"
#include "quant/weight/iq4_xs.h"
#include "quant/weight/q2_k.h"
#include "quant/weight/q3_k.h"
#include "quant/weight/q4_1.h"
#include "quant/weight/q4_k.h"
#include "quant/weight/q5_0.h"
#include "quant/weight/q5_1.h"
#include "quant/weight/q5_k.h"
#include "quant/weight/q6_k.h"

namespace kvq {
namespace {

struct TypeCase {
  GgmlType type;
  std::vector<size_t> f16_fields;  // byte offsets of the block's fp16 scales
};

// Random bytes are valid quants, scale bytes and bit masks for every format; only the fp16
// fields need finite values (random bits would give NaN and Inf).
const TypeCase kCases[] = {
    {GgmlType::kF32, {}},
    {GgmlType::kF16, {0}},
    {GgmlType::kBF16, {}},
    {GgmlType::kQ8_0, {offsetof(BlockQ8_0, d)}},
    {GgmlType::kQ4_0, {offsetof(BlockQ4_0, d)}},
    {GgmlType::kQ4_1, {offsetof(BlockQ4_1, d), offsetof(BlockQ4_1, m)}},
    {GgmlType::kQ5_0, {0}},
    {GgmlType::kQ5_1, {offsetof(BlockQ5_1, d), offsetof(BlockQ5_1, m)}},
    {GgmlType::kIQ4_NL, {0}},
    {GgmlType::kQ2_K, {offsetof(BlockQ2_K, d), offsetof(BlockQ2_K, dmin)}},
    {GgmlType::kQ3_K, {offsetof(BlockQ3_K, d)}},
    {GgmlType::kQ4_K, {offsetof(BlockQ4_K, d), offsetof(BlockQ4_K, dmin)}},
    {GgmlType::kQ5_K, {offsetof(BlockQ5_K, d), offsetof(BlockQ5_K, dmin)}},
    {GgmlType::kQ6_K, {offsetof(BlockQ6_K, d)}},
    {GgmlType::kIQ4_XS, {offsetof(BlockIQ4_XS, d)}},
};

std::vector<uint8_t> random_rows(const TypeCase& c, int rows, int cols, uint64_t seed) {
  const GgmlBlockInfo bi = ggml_block_info(uint32_t(c.type));
  const size_t n_blocks = size_t(rows) * size_t(cols) / bi.block_elems;
  std::vector<uint8_t> bytes(n_blocks * bi.block_bytes);
  Rng rng(seed);
  for (auto& b : bytes) b = uint8_t(rng.next_u64());
  auto put16 = [&](size_t at, uint16_t v) { std::memcpy(&bytes[at], &v, 2); };
  if (c.type == GgmlType::kF32) {
    for (size_t i = 0; i < bytes.size() / 4; ++i) {
      const float v = rng.uniform(-1.0f, 1.0f);
      std::memcpy(&bytes[4 * i], &v, 4);
    }
  } else if (c.type == GgmlType::kF16 || c.type == GgmlType::kBF16) {
    for (size_t i = 0; i < bytes.size() / 2; ++i) {
      const float v = rng.uniform(-1.0f, 1.0f);
      put16(2 * i, c.type == GgmlType::kF16 ? f32_to_f16(v) : f32_to_bf16(v));
    }
  } else {
    for (size_t b = 0; b < n_blocks; ++b)
      for (size_t off : c.f16_fields) put16(b * bi.block_bytes + off, f32_to_f16(rng.uniform(-0.05f, 0.05f)));
  }
  return bytes;
}

void PrintTo(const TypeCase& c, std::ostream* os) { *os << ggml_type_name(uint32_t(c.type)); }

class WeightFormatTest : public ::testing::TestWithParam<TypeCase> {};

TEST_P(WeightFormatTest, SimdMatchesReference) {
  const TypeCase& c = GetParam();
  const WeightFormat* fmt = find_weight_format(uint32_t(c.type));
  ASSERT_NE(fmt, nullptr);
  const int cols = int(ggml_block_info(uint32_t(c.type)).block_elems == 1 ? 97 : ggml_block_info(uint32_t(c.type)).block_elems * 3);
  for (int rows : {1, 7, 37}) {
    const auto bytes = random_rows(c, rows, cols, uint64_t(rows) * 31 + uint64_t(c.type));
    const Matrix w{bytes.data(), fmt, rows, cols, bytes.size() / size_t(rows)};
    std::vector<float> ref(size_t(rows) * cols);
    for (int r = 0; r < rows; ++r) {
      w.dequantize_row(r, &ref[size_t(r) * cols], KernelPath::kRef);
      for (int i = 0; i < cols; ++i) ASSERT_TRUE(std::isfinite(ref[size_t(r) * cols + i]));
    }
    test::for_each_target([&] {
      std::vector<float> got(static_cast<size_t>(cols));
      for (int r = 0; r < rows; ++r) {
        w.dequantize_row(r, got.data(), KernelPath::kSimd);
        for (int i = 0; i < cols; ++i)
          ASSERT_TRUE(test::same_bits(got[size_t(i)], ref[size_t(r) * cols + i])) << "row " << r << " col " << i;
      }
    });
    for (int n_tokens : {1, 3, 31, 70, 131, 600}) {  // vec_dot, tile and panel paths (two token blocks)
      Rng rng(uint64_t(n_tokens) + 5);
      std::vector<float> x(size_t(n_tokens) * cols);
      for (auto& v : x) v = rng.uniform(-1.0f, 1.0f);
      std::vector<float> xr = x;  // what the weights multiply
      if (fmt->round_activations) {
        for (int t = 0; t < n_tokens; ++t) fmt->round_activations(&x[size_t(t) * cols], &xr[size_t(t) * cols], cols);
        ASSERT_NE(xr, x);
      }
      std::vector<float> y1(size_t(n_tokens) * rows), y2(y1.size()), yr(y1.size());
      ExecContext one(1), two(2), scalar(1, KernelPath::kRef);
      matmul(one, w, x.data(), y1.data(), n_tokens);
      matmul(two, w, x.data(), y2.data(), n_tokens);
      matmul(scalar, w, x.data(), yr.data(), n_tokens);
      for (int t = 0; t < n_tokens; ++t) {
        for (int r = 0; r < rows; ++r) {
          double dot = 0, mag = 0;
          for (int i = 0; i < cols; ++i) {
            const double p = double(xr[size_t(t) * cols + i]) * ref[size_t(r) * cols + i];
            dot += p;
            mag += std::fabs(p);
          }
          const size_t o = size_t(t) * rows + r;
          ASSERT_TRUE(test::same_bits(y1[o], y2[o])) << "thread count changed t " << t << " r " << r;
          EXPECT_NEAR(y1[o], dot, 4e-5 * mag + 1e-6) << "t " << t << " r " << r;
          EXPECT_NEAR(yr[o], dot, 4e-5 * mag + 1e-6) << "ref path t " << t << " r " << r;
        }
      }
    }
  }
}

// A layer's Q, K and V (or gate and up) in one pass over the threads: each output equals its
// own matmul bit for bit, on every path (integer, tile, panel, f32) and thread count, and
// weights of different types still run (one after another).
TEST_P(WeightFormatTest, OnePassOverSeveralOutputsEqualsEachAlone) {
  const TypeCase& c = GetParam();
  const WeightFormat* fmt = find_weight_format(uint32_t(c.type));
  ASSERT_NE(fmt, nullptr);
  const int elems = int(ggml_block_info(uint32_t(c.type)).block_elems);
  const int cols = elems == 1 ? 97 : elems * 3;
  const int rows[] = {37, 13, 61};
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<Matrix> ws;
  for (int i = 0; i < 3; ++i) bytes.push_back(random_rows(c, rows[i], cols, uint64_t(rows[i]) * 7 + uint64_t(c.type)));
  for (int i = 0; i < 3; ++i) ws.push_back(Matrix{bytes[size_t(i)].data(), fmt, rows[i], cols, bytes[size_t(i)].size() / size_t(rows[i])});
  // A different type with the same width: the pass splits into one matmul per weight.
  const TypeCase& other = c.type == GgmlType::kF32 ? kCases[1] : kCases[0];
  const int other_elems = int(ggml_block_info(uint32_t(other.type)).block_elems);
  const bool other_fits = cols % other_elems == 0;
  const auto other_bytes = random_rows(other, 11, other_fits ? cols : other_elems, 99);
  const Matrix w_other{other_bytes.data(), find_weight_format(uint32_t(other.type)), 11, cols,
                       other_bytes.size() / 11};
  for (int n_tokens : {1, 3, 8, 40}) {
    Rng rng(uint64_t(n_tokens) + 11);
    std::vector<float> x(size_t(n_tokens) * cols);
    for (auto& v : x) v = rng.uniform(-1.0f, 1.0f);
    for (int n_threads : {1, 2}) {
      ExecContext ctx(n_threads);
      std::vector<std::vector<float>> alone(4), fused(4);
      std::vector<MatmulOutput> outs;
      const int n_out = other_fits ? 4 : 3;
      for (int i = 0; i < n_out; ++i) {
        const Matrix& w = i < 3 ? ws[size_t(i)] : w_other;
        alone[size_t(i)].assign(size_t(n_tokens) * w.rows, 0.0f);
        fused[size_t(i)].assign(size_t(n_tokens) * w.rows, -1.0f);
        matmul(ctx, w, x.data(), alone[size_t(i)].data(), n_tokens);
      }
      for (int n : {3, n_out}) {
        outs.clear();
        for (int i = 0; i < n; ++i) outs.push_back({i < 3 ? &ws[size_t(i)] : &w_other, fused[size_t(i)].data()});
        matmul(ctx, outs, x.data(), n_tokens);
        for (int i = 0; i < n; ++i) {
          for (size_t j = 0; j < alone[size_t(i)].size(); ++j) {
            ASSERT_TRUE(test::same_bits(fused[size_t(i)][j], alone[size_t(i)][j]))
                << "output " << i << " of " << n << ", " << n_tokens << " tokens, " << n_threads << " threads, at " << j;
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, WeightFormatTest, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<TypeCase>& i) {
                           return ggml_type_name(uint32_t(i.param.type));
                         });

// The reference quantizers `kvq synth` writes with: a round trip through the blocks is within
// half a step (plus the fp16 rounding of the scale and minimum).
TEST(WeightFormat, ReferenceQuantizersRoundTrip) {
  constexpr int kN = 32 * 7;
  Rng rng(3);
  std::vector<float> x(kN), y(kN);
  for (auto& v : x) v = rng.uniform(-2.0f, 1.5f);
  auto check = [&](const char* name, float levels) {
    for (int b = 0; b < kN / 32; ++b) {
      float lo = x[32 * b], hi = x[32 * b];
      for (int j = 0; j < 32; ++j) lo = std::min(lo, x[32 * b + j]), hi = std::max(hi, x[32 * b + j]);
      const float step = (hi - lo) / levels;
      for (int j = 0; j < 32; ++j) ASSERT_NEAR(y[32 * b + j], x[32 * b + j], 0.5f * step + 4e-3f * (hi - lo)) << name;
    }
  };
  std::vector<BlockQ4_1> q41(kN / 32);
  quantize_row_q4_1_ref(x.data(), q41.data(), kN);
  dequantize_row_q4_1_ref(q41.data(), y.data(), kN);
  check("q4_1", 15);
  std::vector<BlockQ5_1> q51(kN / 32);
  quantize_row_q5_1_ref(x.data(), q51.data(), kN);
  dequantize_row_q5_1_ref(q51.data(), y.data(), kN);
  check("q5_1", 31);
  std::vector<BlockQ5_0> q50(kN / 32);
  quantize_row_q5_0_ref(x.data(), q50.data(), kN);
  dequantize_row_q5_0_ref(q50.data(), y.data(), kN);
  check("q5_0", 15.5f);  // symmetric: 32 steps of max/16 over [-max, max)
}

// Activation rounding keeps non-finite values, so NaN still reaches the logits.
TEST(WeightFormat, RoundingKeepsNonFiniteBlocks) {
  for (GgmlType t : {GgmlType::kQ8_0, GgmlType::kQ4_K}) {
    const WeightFormat* fmt = find_weight_format(uint32_t(t));
    std::vector<float> x(512, 0.25f), y(512);
    x[3] = std::nanf("");
    fmt->round_activations(x.data(), y.data(), 512);
    EXPECT_TRUE(std::isnan(y[3]));
    EXPECT_NEAR(y[511], 0.25f, 1e-3);
  }
}

TEST(WeightFormat, UnsupportedTypesAreNamed) {
  EXPECT_EQ(find_weight_format(uint32_t(GgmlType::kIQ2_XXS)), nullptr);
  EXPECT_EQ(find_weight_format(uint32_t(GgmlType::kQ8_1)), nullptr);
  EXPECT_NE(weight_format_names().find("Q4_K"), std::string::npos);
}

}  // namespace
}  // namespace kvq
