// SPDX-License-Identifier: MIT
#include "quant/bits_accounting.h"

#include <gtest/gtest.h>

#include "quant/outlier_layout.h"
#include "quant/outliers.h"

namespace kvq {
namespace {

// LLaMA-7B: 32 layers, 32 KV heads, head_dim 128.
constexpr int kL = 32, kH = 32, kD = 128;

TEST(BitsAccounting, F16IsSixteenBits) {
  CacheConfig c;
  c.n_layers = kL, c.n_kv_heads = kH, c.head_dim = kD;
  const auto r = account_bits(c, 1024).value();
  EXPECT_DOUBLE_EQ(r.bits_per_value(), 16.0);
  EXPECT_DOUBLE_EQ(r.total_bytes(), 1024.0 * 2 * kL * kH * kD * 2);  // 512 KiB per token
  // Capacity, not size: 1000 tokens occupy 16 pages of 64, so they cost what 1024 do.
  EXPECT_DOUBLE_EQ(account_bits(c, 1000).value().total_bytes(), r.total_bytes());
  EXPECT_DOUBLE_EQ(account_bits(c, 1025).value().total_bytes(), 1088.0 * 2 * kL * kH * kD * 2);
}

// KIVI §1.6: b + 32/G bits for the quantized part, plus the fp16 residual windows.
TEST(BitsAccounting, KiviMatchesHandCount) {
  const CacheConfig c = kivi_config(kL, kH, kD, 2, 32, 128);
  // n = 4096: keys flushed in blocks of 128 -> all quantized (3 bits), their window ring of
  // 128 fp16 rows still allocated; values: 3968 quantized and a ring of 129 rows (128 + the
  // step's token).
  auto r = account_bits(c, 4096).value();
  EXPECT_NEAR(r.k_bits_per_value(), (4096 * 3.0 + 128 * 16.0) / 4096, 1e-12);
  EXPECT_NEAR(r.v_bits_per_value(), (3968 * 3.0 + 129 * 16.0) / 4096, 1e-12);
  // n = 4095: keys have 3968 quantized and 127 in the ring of 128.
  r = account_bits(c, 4095).value();
  EXPECT_NEAR(r.k_bits_per_value(), (3968 * 3.0 + 128 * 16.0) / 4095, 1e-12);
  // KVQuant's accounting of KIVI-2-gs32-r128 at 32K: 3.05 bits.
  r = account_bits(c, 32768).value();
  EXPECT_NEAR(r.bits_per_value(), 3.05, 0.03);
  // KIVI-4 g32: 5 bits in the quantized part, plus the rings of G = 32 key rows and 1 value row.
  EXPECT_NEAR(account_bits(kivi_config(kL, kH, kD, 4, 32, 0), 1 << 20).value().bits_per_value(),
              5.0 + (32 + 1) * 16.0 / 2 / (1 << 20), 1e-9);
}

// KVQuant App M / Table 18: nuq-b-1% costs b + 0.32..0.35 bits at 128K tokens.
TEST(BitsAccounting, KvquantMatchesPaper) {
  for (int bits = 2; bits <= 4; ++bits) {
    const auto r = account_bits(kvquant_config(kL, kH, kD, bits, 0.01, 1), 128 * 1024).value();
    EXPECT_GE(r.bits_per_value(), bits + 0.32) << bits;
    EXPECT_LE(r.bits_per_value(), bits + 0.35) << bits;
    // Exact V outliers: 42 per token at d = 4096 (21 + 21).
    EXPECT_DOUBLE_EQ(r.v.outlier_values, double(128 * 1024 - 1) * 42 * 2 * kL);
  }
  // Without outliers: b bits plus per-token V scale/zero (32 bits / 4096), ~b + 0.004.
  const auto r = account_bits(kvquant_config(kL, kH, kD, 3, 0.0, 1), 128 * 1024).value();
  EXPECT_NEAR(r.bits_per_value(), 3.0, 0.02);
  // Memory at 128K tokens (paper: nuq4-1% 17.3 GB vs fp16 64.0 GB, decimal GB of 2^30? the
  // paper's 64.0 GB fp16 is 2^36 bytes, so compare in GiB).
  const auto r4 = account_bits(kvquant_config(kL, kH, kD, 4, 0.01, 1), 128 * 1024).value();
  EXPECT_NEAR(r4.total_bytes() / double(1ull << 30), 17.3, 0.15);
}

// The outliers cost what the cache's page layout stores (quant/outlier_layout.h): full pages
// sealed (a value and a uint16 cell per outlier; a capacity word and n_kv_heads + 1 head
// pointers per page), the newest page growing (a value and an index per outlier, a capacity
// word and 65 row pointers). On the testbed (6 layers, 2 KV heads of 64: d_kv 128) uint8
// indices and uint16 pointers; at d_kv 512 uint16 indices and pointers; at LLaMA-7B's 4096
// uint16 and uint32.
TEST(BitsAccounting, KvquantOutliersFollowTheStoresLayout) {
  struct Case {
    int kv_heads;
    double idx_bytes, ptr_bytes;
  };
  for (const Case c : {Case{2, 1, 2}, Case{8, 2, 2}, Case{32, 2, 4}}) {
    const int d_kv = c.kv_heads * 64;
    const double per_token = 2.0 * double(outliers_per_side(size_t(d_kv), 0.01));
    // 1024 tokens after the sink: 16 sealed pages.
    const auto r = account_bits(kvquant_config(6, c.kv_heads, 64, 3, 0.01, 1), 1025).value();
    const double nq = 1024, pages = 16;
    EXPECT_DOUBLE_EQ(r.v.outlier_values, nq * per_token * 2 * 6) << d_kv;
    EXPECT_DOUBLE_EQ(r.v.outlier_indices, nq * per_token * 2 * 6) << d_kv;
    EXPECT_DOUBLE_EQ(r.v.outlier_pointers, pages * (4 + c.ptr_bytes * (c.kv_heads + 1)) * 6) << d_kv;
    EXPECT_DOUBLE_EQ(r.k.outlier_indices, nq * 0.01 * d_kv * 2 * 6) << d_kv;
    EXPECT_DOUBLE_EQ(r.k.outlier_pointers, r.v.outlier_pointers) << d_kv;
    // 1000 tokens: 15 sealed pages and one growing page of 40 rows.
    const auto g = account_bits(kvquant_config(6, c.kv_heads, 64, 3, 0.01, 1), 1001).value();
    EXPECT_DOUBLE_EQ(g.v.outlier_indices, (960 * 2 + 40 * c.idx_bytes) * per_token * 6) << d_kv;
    EXPECT_DOUBLE_EQ(g.v.outlier_pointers,
                     (15 * (4 + c.ptr_bytes * (c.kv_heads + 1)) + (4 + c.ptr_bytes * 65)) * 6) << d_kv;
    const OutlierLayout lay = OutlierLayout::for_rows(c.kv_heads, 64, 64);
    EXPECT_EQ(lay.idx_bytes, c.idx_bytes);
    EXPECT_EQ(lay.ptr_bytes, c.ptr_bytes);
    EXPECT_TRUE(lay.can_seal(64));
  }
}

TEST(BitsAccounting, Q8AndQ4AndIntBaselines) {
  CacheConfig c;
  c.n_layers = kL, c.n_kv_heads = kH, c.head_dim = kD;
  c.k.scheme = c.v.scheme = KvScheme::kQ8_0;
  c.k.bits = c.v.bits = 8;
  EXPECT_NEAR(account_bits(c, 128).value().bits_per_value(), 8.5, 1e-12);  // 34 bytes / 32
  c.k.scheme = c.v.scheme = KvScheme::kQ4_0;
  c.k.bits = c.v.bits = 4;
  EXPECT_NEAR(account_bits(c, 128).value().bits_per_value(), 4.5, 1e-12);  // 18 bytes / 32
  // int3 per token over the whole 4096 vector, asymmetric: 3 + 32/4096 bits.
  c.k.scheme = c.v.scheme = KvScheme::kUniform;
  c.k.bits = c.v.bits = 3;
  c.k.group_size = c.v.group_size = 0;
  c.k.whole_vector = c.v.whole_vector = true;
  EXPECT_NEAR(account_bits(c, 128).value().bits_per_value(), 3 + 32.0 / 4096, 1e-12);
  // FlexGen-style group 64, asymmetric: 3 + 32/64.
  c.k.group_size = c.v.group_size = 64;
  EXPECT_NEAR(account_bits(c, 128).value().bits_per_value(), 3.5, 1e-12);
}

TEST(BitsAccounting, RejectsBadConfigs) {
  EXPECT_FALSE(account_bits(CacheConfig{}, 10).ok());
  CacheConfig c = kivi_config(kL, kH, kD, 2, 32, 100);  // R not a multiple of G
  EXPECT_FALSE(account_bits(c, 10).ok());
  c = kivi_config(kL, kH, kD, 5, 32, 128);
  EXPECT_FALSE(account_bits(c, 10).ok());
  c = kvquant_config(kL, kH, kD, 3, 0.01, 1);
  EXPECT_FALSE(account_bits(c, -1).ok());
  EXPECT_EQ(account_bits(c, 0).value().bits_per_value(), 0.0);
}

}  // namespace
}  // namespace kvq
