// SPDX-License-Identifier: MIT
// The decode-attention microbenchmark on a tiny shape: every row complete and finite, bytes
// read equal to what the cache allocates, f16 as its own speedup base, memory refused up front.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/attention_bench.h"

namespace kvq {
namespace {

AttentionBenchOptions tiny(const std::vector<std::string>& caches, std::vector<int> depths) {
  AttentionBenchOptions o;
  o.shapes = {AttentionShape{"tiny", 4, 2, 64}};
  o.depths = std::move(depths);
  for (const auto& c : caches) o.caches.push_back(parse_cache_spec(c).value());
  o.n_threads = 2;
  o.repetitions = 2;
  o.min_rep_seconds = 0.001;
  o.pool_tokens = 128;  // smaller than the depth: the pool is appended cyclically
  o.calib_windows = 2;
  o.calib_window = 64;
  o.bandwidth_bytes = size_t(8) << 20;
  o.bandwidth_passes = 2;
  return o;
}

KvCacheShape tiny_cache(int n_ctx) {
  KvCacheShape s;
  s.n_layers = 1;
  s.n_kv_heads = 2;
  s.head_dim = 64;
  s.n_ctx = n_ctx;
  return s;
}

TEST(AttentionBench, RowsCompleteAndConsistent) {
  auto r = run_attention_bench(tiny({"f16", "kvquant-3"}, {300}));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r->rows.size(), 2u);
  EXPECT_GT(r->read_gbps, 0.0);
  EXPECT_FALSE(r->bandwidth_method.empty());
  EXPECT_FALSE(r->calibration_note.empty());
  auto f16 = make_cache(parse_cache_spec("f16").value(), tiny_cache(300)).value();
  for (const auto& row : r->rows) {
    EXPECT_EQ(row.shape, "tiny");
    EXPECT_EQ(row.depth, 300);
    for (double x : {row.us_per_token, row.gbps, row.read_gbps, row.bandwidth_fraction, row.speedup_vs_f16}) {
      EXPECT_TRUE(std::isfinite(x) && x > 0) << row.cache << " " << x;
    }
    EXPECT_NEAR(row.gbps, double(row.bytes_read) / (row.us_per_token * 1e-6) / 1e9, 1e-9 * row.gbps);
    EXPECT_NEAR(row.bandwidth_fraction, row.gbps / row.read_gbps, 1e-12);
  }
  EXPECT_EQ(r->rows[0].cache, "f16");
  EXPECT_EQ(r->rows[0].speedup_vs_f16, 1.0);
  EXPECT_EQ(r->rows[0].bytes_read, f16->bytes_for(300));
  EXPECT_EQ(r->rows[1].cache, "kvquant-3");
  EXPECT_GT(r->rows[1].bytes_read, 0u);
  EXPECT_LT(r->rows[1].bytes_read, r->rows[0].bytes_read / 3);
}

TEST(AttentionBench, AddsTheF16BaseAndOrdersByDepth) {
  auto r = run_attention_bench(tiny({"kivi-2"}, {300, 100}));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r->rows.size(), 4u);
  const char* caches[] = {"f16", "kivi-2", "f16", "kivi-2"};
  const int depths[] = {100, 100, 300, 300};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(r->rows[i].cache, caches[i]);
    EXPECT_EQ(r->rows[i].depth, depths[i]);
    EXPECT_GT(r->rows[i].speedup_vs_f16, 0.0);
  }
  EXPECT_TRUE(r->calibration_note.empty());
}

TEST(AttentionBench, RefusesWhatDoesNotFitBeforeFilling) {
  auto o = tiny({"f16"}, {100000});
  o.available_memory = 1 << 20;
  auto r = run_attention_bench(o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfMemory);
  EXPECT_NE(r.status().message().find("memory is available"), std::string::npos) << r.status().message();
  // A shape's caches are held at once (timed in alternating rounds): room for f16 alone is not
  // room for f16 and q8_0.
  const double f16_bytes = double(make_cache(parse_cache_spec("f16").value(), tiny_cache(4000)).value()->bytes_for(4000));
  o = tiny({"f16", "q8_0"}, {4000});
  o.available_memory = 1.3 * f16_bytes;
  r = run_attention_bench(o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfMemory);
  EXPECT_NE(r.status().message().find("f16, q8_0 caches, held at once"), std::string::npos) << r.status().message();
  o = tiny({"f16"}, {4000});
  o.available_memory = 1.3 * f16_bytes;
  EXPECT_TRUE(run_attention_bench(o).ok());
}

TEST(AttentionBench, BadOptions) {
  EXPECT_EQ(run_attention_bench(tiny({"f16"}, {0})).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(run_attention_bench(tiny({}, {10})).status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(attention_shape("gpt2").ok());
  EXPECT_EQ(attention_shape("llama3-8b").value().n_kv_heads, 8);
}

}  // namespace
}  // namespace kvq
