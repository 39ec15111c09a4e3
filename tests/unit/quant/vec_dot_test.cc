// SPDX-License-Identifier: MIT
// The integer dot products of packed weight rows with Q8 activation blocks (vec_dot.h): every
// Highway target against the scalar reference on random blocks and several row lengths. The
// integer sums are exact on both sides; only the float summation order differs, so they agree
// to float rounding of the sum of |w a| (and both match the f32 dot of the dequantized rows).
#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#include "base/fp16.h"
#include "base/rng.h"
#include "quant/ggml_blocks.h"
#include "quant/weight/vec_dot.h"
#include "test_util.h"

namespace kvq {
namespace {

// Random bytes are valid codes and scale bytes; the fp16 fields get finite values.
template <typename Block>
std::vector<Block> random_blocks(size_t n_blocks, std::initializer_list<size_t> f16_offsets, uint64_t seed) {
  std::vector<Block> v(n_blocks);
  Rng rng(seed);
  auto* bytes = reinterpret_cast<uint8_t*>(v.data());
  for (size_t i = 0; i < n_blocks * sizeof(Block); ++i) bytes[i] = uint8_t(rng.next_u64());
  for (size_t b = 0; b < n_blocks; ++b) {
    for (size_t off : f16_offsets) {
      const f16_t h = f32_to_f16(rng.uniform(0.001f, 0.05f));
      std::memcpy(bytes + b * sizeof(Block) + off, &h, 2);
    }
  }
  return v;
}

template <typename Block, typename ActBlock>
void check(const char* name, int block, int act_block, std::initializer_list<size_t> f16_offsets,
           void (*dequantize)(const Block*, float*, int64_t), void (*quantize_act)(const float*, ActBlock*, int64_t),
           void (*dequantize_act)(const ActBlock*, float*, int64_t),
           float (*dot)(const Block*, const ActBlock*, int64_t, KernelPath)) {
  for (int64_t n : {256, 768, 2816, 4352}) {
    SCOPED_TRACE(std::string(name) + " n " + std::to_string(n));
    const auto w = random_blocks<Block>(size_t(n / block), f16_offsets, uint64_t(n) + 1);
    const auto x = test::make_data(test::Dist::kOutliers, size_t(n), uint64_t(n) + 2);
    std::vector<ActBlock> a(size_t(n / act_block));
    quantize_act(x.data(), a.data(), n);
    std::vector<float> wf(static_cast<size_t>(n)), af(static_cast<size_t>(n));
    dequantize(w.data(), wf.data(), n);
    dequantize_act(a.data(), af.data(), n);
    double exact = 0, mag = 0;
    for (int64_t i = 0; i < n; ++i) {
      exact += double(wf[size_t(i)]) * af[size_t(i)];
      mag += std::fabs(double(wf[size_t(i)]) * af[size_t(i)]);
    }
    const float ref = dot(w.data(), a.data(), n, KernelPath::kRef);
    EXPECT_NEAR(ref, exact, 1e-5 * mag);
    test::for_each_target([&] { EXPECT_NEAR(dot(w.data(), a.data(), n, KernelPath::kSimd), ref, 1e-5 * mag); });
  }
}

TEST(VecDot, EveryTargetMatchesTheReference) {
  check<BlockQ8_0, BlockQ8_0>("q8_0", 32, 32, {offsetof(BlockQ8_0, d)}, dequantize_row_q8_0_ref, quantize_row_q8_0_ref,
                              dequantize_row_q8_0_ref, vec_dot_q8_0_q8_0);
  check<BlockQ4_0, BlockQ8_0>("q4_0", 32, 32, {offsetof(BlockQ4_0, d)}, dequantize_row_q4_0_ref, quantize_row_q8_0_ref,
                              dequantize_row_q8_0_ref, vec_dot_q4_0_q8_0);
  check<BlockQ4_1, BlockQ8_0>("q4_1", 32, 32, {offsetof(BlockQ4_1, d), offsetof(BlockQ4_1, m)}, dequantize_row_q4_1_ref,
                              quantize_row_q8_0_ref, dequantize_row_q8_0_ref, vec_dot_q4_1_q8_0);
  check<BlockQ5_0, BlockQ8_0>("q5_0", 32, 32, {offsetof(BlockQ5_0, d)}, dequantize_row_q5_0_ref, quantize_row_q8_0_ref,
                              dequantize_row_q8_0_ref, vec_dot_q5_0_q8_0);
  check<BlockQ5_1, BlockQ8_0>("q5_1", 32, 32, {offsetof(BlockQ5_1, d), offsetof(BlockQ5_1, m)}, dequantize_row_q5_1_ref,
                              quantize_row_q8_0_ref, dequantize_row_q8_0_ref, vec_dot_q5_1_q8_0);
  check<BlockIQ4_NL, BlockQ8_0>("iq4_nl", 32, 32, {offsetof(BlockIQ4_NL, d)}, dequantize_row_iq4_nl_ref,
                                quantize_row_q8_0_ref, dequantize_row_q8_0_ref, vec_dot_iq4_nl_q8_0);
  check<BlockIQ4_XS, BlockQ8_K>("iq4_xs", kQK_K, kQK_K, {offsetof(BlockIQ4_XS, d)}, dequantize_row_iq4_xs_ref,
                                quantize_row_q8_k_ref, dequantize_row_q8_k_ref, vec_dot_iq4_xs_q8_k);
  check<BlockQ2_K, BlockQ8_K>("q2_k", kQK_K, kQK_K, {offsetof(BlockQ2_K, d), offsetof(BlockQ2_K, dmin)},
                              dequantize_row_q2_k_ref, quantize_row_q8_k_ref, dequantize_row_q8_k_ref,
                              vec_dot_q2_k_q8_k);
  check<BlockQ3_K, BlockQ8_K>("q3_k", kQK_K, kQK_K, {offsetof(BlockQ3_K, d)}, dequantize_row_q3_k_ref,
                              quantize_row_q8_k_ref, dequantize_row_q8_k_ref, vec_dot_q3_k_q8_k);
  check<BlockQ4_K, BlockQ8_K>("q4_k", kQK_K, kQK_K, {offsetof(BlockQ4_K, d), offsetof(BlockQ4_K, dmin)},
                              dequantize_row_q4_k_ref, quantize_row_q8_k_ref, dequantize_row_q8_k_ref,
                              vec_dot_q4_k_q8_k);
  check<BlockQ5_K, BlockQ8_K>("q5_k", kQK_K, kQK_K, {offsetof(BlockQ5_K, d), offsetof(BlockQ5_K, dmin)},
                              dequantize_row_q5_k_ref, quantize_row_q8_k_ref, dequantize_row_q8_k_ref,
                              vec_dot_q5_k_q8_k);
  check<BlockQ6_K, BlockQ8_K>("q6_k", kQK_K, kQK_K, {offsetof(BlockQ6_K, d)}, dequantize_row_q6_k_ref, quantize_row_q8_k_ref,
                              dequantize_row_q8_k_ref, vec_dot_q6_k_q8_k);
}

// The x86 Q8_0 / Q4_0 kernels take |w| times a * sign(w) (pmaddubsw), which is exact only for
// activation codes within +-127 (-128 has no positive counterpart in int8): the activation
// quantizer never gives -128, at any scale, including rows whose extremes tie or whose scale is
// near float's smallest normal.
TEST(VecDot, Q8_0ActivationCodesStayWithin127) {
  Rng rng(9);
  for (float scale : {1e-30f, 1e-3f, 1.0f, 7.0f, 3e4f, 1e30f}) {
    for (int trial = 0; trial < 50; ++trial) {
      std::vector<float> x(64);
      for (auto& v : x) v = scale * rng.uniform(-1.0f, 1.0f);
      x[size_t(trial) % 32] = -scale;  // the block's extreme negative
      x[32 + size_t(trial) % 32] = trial % 2 ? scale : -scale;
      std::vector<BlockQ8_0> a(2);
      ASSERT_TRUE(quantize_row_q8_0(x.data(), a.data(), 64).ok());
      for (const auto& b : a) {
        for (int8_t q : b.qs) ASSERT_GE(q, -127) << "scale " << scale;
      }
    }
  }
}

// The multi-row Q4_K kernel (pairs of rows sharing activation loads) against the single-row
// one: bit-identical per row for every row count (odd ones leave a single row at the end) and
// every row length, and within the reference's tolerance.
TEST(VecDot, Q4KRowsMatchOneRowAtATime) {
  for (int64_t n : {256, 768, 2816}) {
    for (int n_rows : {1, 2, 3, 5, 8, 17}) {
      SCOPED_TRACE("n " + std::to_string(n) + " rows " + std::to_string(n_rows));
      const size_t stride = size_t(n / kQK_K);
      const auto w = random_blocks<BlockQ4_K>(stride * size_t(n_rows), {offsetof(BlockQ4_K, d), offsetof(BlockQ4_K, dmin)},
                                              uint64_t(n) * 31 + uint64_t(n_rows));
      const auto x = test::make_data(test::Dist::kOutliers, size_t(n), uint64_t(n) + 7);
      std::vector<BlockQ8_K> a(stride);
      quantize_row_q8_k_ref(x.data(), a.data(), n);
      std::vector<float> wf(static_cast<size_t>(n)), af(static_cast<size_t>(n));
      dequantize_row_q8_k_ref(a.data(), af.data(), n);
      for (KernelPath path : {KernelPath::kRef, KernelPath::kSimd}) {
        test::for_each_target([&] {
          std::vector<float> y(static_cast<size_t>(n_rows) + 1, -1.0f);
          vec_dot_q4_k_q8_k_rows(w.data(), stride, n_rows, a.data(), n, y.data(), path);
          EXPECT_EQ(y[size_t(n_rows)], -1.0f) << "wrote past the last row";
          for (int r = 0; r < n_rows; ++r) {
            const BlockQ4_K* row = w.data() + size_t(r) * stride;
            EXPECT_EQ(y[size_t(r)], vec_dot_q4_k_q8_k(row, a.data(), n, path)) << "row " << r;
            dequantize_row_q4_k_ref(row, wf.data(), n);
            double mag = 0;
            for (int64_t i = 0; i < n; ++i) mag += std::fabs(double(wf[size_t(i)]) * af[size_t(i)]);
            EXPECT_NEAR(y[size_t(r)], vec_dot_q4_k_q8_k_ref(row, a.data(), n), 1e-5 * mag) << "row " << r;
          }
        });
      }
    }
  }
}

}  // namespace
}  // namespace kvq
