// SPDX-License-Identifier: MIT
// Attention read straight from each packed cache equals attention over the same cache
// dequantized in full (the reference), and bytes_used agrees with the bits accounting.
#include <gtest/gtest.h>

#include <cmath>

#include "attention/attention.h"
#include "base/rng.h"
#include "kernels/ref/ops_ref.h"
#include "kv/cache_spec.h"
#include "kv/composite_cache.h"
#include "kv/kvquant_store.h"
#include "quant/bits_accounting.h"
#include "quant/codebook.h"
#include "test_caches.h"

namespace kvq {
namespace {

using test::build;
using test::Built;
using test::kHd;
using test::kHeads;
using test::kKvHeads;
using test::kLayers;

const char* const kSpecs[] = {"f32", "f16", "q8_0", "q4_0", "int3", "int4:g=32", "kivi-2:g=32:r=64",
                              "kivi-4:g=16:r=32", "kvquant-3", "kvquant-2:outliers=0:sinks=0",
                              "kvquant-4:prerope=0:qnorm=1",
                              // Rotated (kv/rotated_store.h): read() rotates back, attention does not.
                              "q4_0:rot=1", "int3:rot=1", "kivi-2:g=32:r=64:rot=1", "kvquant-4:prerope=0:rot=1",
                              "K=kvquant-3,V=kvquant-3:rot=1",
                              // An fp16 window of the newest tokens after the packed body.
                              "kvquant-3:r=16", "kvquant-2:outliers=0:sinks=0:r=8"};

// Random keys, values and queries for positions [0, n), the keys and values appended to layer
// il of cache in one step.
struct RandomKvq {
  std::vector<float> k, v, q;
};
RandomKvq append_random(Rng& rng, KvCache& cache, int il, int n) {
  RandomKvq r;
  r.k.resize(size_t(n) * kKvHeads * kHd);
  r.v.resize(r.k.size());
  r.q.resize(size_t(n) * kHeads * kHd);
  for (auto* x : {&r.k, &r.v, &r.q})
    for (auto& e : *x) e = float(rng.normal());
  EXPECT_TRUE(cache.append(il, n, r.k.data(), r.v.data()).ok());
  return r;
}

// KV head kvh of layer il for positions [0, n), dequantized, keys rotated to their positions
// when the cache stores them before RoPE: what a reference attention reads.
void read_keys_at_positions(const KvCache& cache, const Rope& rope, int il, int kvh, int n, float* kd, float* vd) {
  cache.read(il, kvh, 0, n, kd, vd);
  if (!cache.pre_rope()) return;
  std::vector<float> cs(kHd);
  for (int t = 0; t < n; ++t) {
    rope.angles(t, cs.data());
    rope.rotate(kd + size_t(t) * kHd, cs.data(), false);
  }
}

TEST(PackedAttention, MatchesAttentionOverTheDequantizedCache) {
  Rng rng(11);
  const int n = 150;  // odd: crosses blocks of 64 and KIVI windows
  const Rope rope(kHd, kHd, 10000.0f);
  for (const char* spec : kSpecs) {
    Built b = build(spec, n);
    ASSERT_TRUE(b.cache);
    const size_t row = size_t(kKvHeads * kHd);
    std::vector<float> k(size_t(n) * row), v(k.size()), q(size_t(n) * kHeads * kHd);
    for (auto& x : k) x = float(rng.normal());
    for (auto& x : v) x = float(rng.normal());
    for (auto& x : q) x = float(rng.normal());
    // Two appends: a prefill of 100 and 50 decode steps.
    ASSERT_TRUE(b.cache->append(1, 100, k.data(), v.data()).ok());
    for (int t = 100; t < n; ++t) ASSERT_TRUE(b.cache->append(1, 1, &k[t * row], &v[t * row]).ok());
    ExecContext ctx(2);
    const AttentionParams p{kHeads, kKvHeads, kHd, 0.125f, &rope};
    const int n_q = 7, pos0 = n - n_q;  // the last 7 positions attend causally
    std::vector<float> out(size_t(n_q) * kHeads * kHd);
    ASSERT_TRUE(attend(ctx, p, *b.cache, 1, &q[size_t(pos0) * kHeads * kHd], n_q, pos0, out.data()).ok());
    // Reference: dequantize everything, RoPE pre-RoPE keys, plain softmax attention.
    std::vector<float> kd(size_t(n) * kHd), vd(kd.size()), ref(kHd);
    for (int h = 0; h < kHeads; ++h) {
      read_keys_at_positions(*b.cache, rope, 1, h / (kHeads / kKvHeads), n, kd.data(), vd.data());
      for (int i = 0; i < n_q; ++i) {
        const int pos = pos0 + i;
        std::vector<float> qh(&q[(size_t(pos) * kHeads + h) * kHd], &q[(size_t(pos) * kHeads + h + 1) * kHd]);
        test::round_query_for_keys(spec, qh.data(), kHd);
        float slack = 0.0f;  // 2-bit per-token groups round their weights (test_caches.h)
        test::attention_head_as_stored(*b.cache, 1, h / (kHeads / kKvHeads), qh.data(), kd.data(), vd.data(), ref.data(),
                                     pos + 1, kHd, 0.125f, KernelPath::kSimd, &slack);
        const float* got = &out[(size_t(i) * kHeads + h) * kHd];
        // f16 caches round the probabilities to f16 on purpose (llama.cpp parity).
        const float tol = std::string(spec) == "f16" ? 2e-3f : 1e-5f;
        for (int d = 0; d < kHd; ++d) ASSERT_NEAR(got[d], ref[d], tol * (1.0f + std::fabs(ref[d])) + slack) << spec;
      }
    }
  }
}

// Keys stored before RoPE are rotated at attention time exactly as the model would rotate
// them (Rope::angles + Rope::rotate) for every RoPE the architectures use: neox pairs
// (Qwen2, Phi-3, Gemma), Llama-3.1's freq factors, partial rotary; on the SIMD key table and
// the scalar path, across an attention chunk (runs composed from the chunk start).
TEST(PackedAttention, PreRopeKeysFollowEveryRopeMode) {
  std::vector<float> ff(kHd / 2);
  for (size_t i = 0; i < ff.size(); ++i) ff[i] = 1.0f + float(i % 5);
  const Rope ropes[] = {Rope(kHd, kHd, 10000.0f, RopeMode::kNeox), Rope(kHd, kHd, 500000.0f, RopeMode::kNormal, ff),
                        Rope(kHd, kHd, 1e6f, RopeMode::kNeox, ff), Rope(kHd, kHd / 2, 10000.0f, RopeMode::kNeox),
                        Rope(kHd, kHd / 2, 10000.0f, RopeMode::kNormal)};
  Rng rng(13);
  const int n = kAttentionChunk + 76;
  for (const Rope& rope : ropes) {
    for (const char* spec : {"kvquant-3", "kvquant-2:outliers=0:sinks=0"}) {
      Built b = build(spec, n);
      ASSERT_TRUE(b.cache && b.cache->pre_rope());
      const std::vector<float> q = append_random(rng, *b.cache, 0, n).q;
      const AttentionParams p{kHeads, kKvHeads, kHd, 0.125f, &rope};
      const int n_q = 3, pos0 = n - n_q;
      std::vector<float> kd(size_t(n) * kHd), vd(kd.size()), ref(kHd);
      for (KernelPath path : {KernelPath::kSimd, KernelPath::kRef}) {
        ExecContext ctx(2, path);
        std::vector<float> out(size_t(n_q) * kHeads * kHd);
        ASSERT_TRUE(attend(ctx, p, *b.cache, 0, &q[size_t(pos0) * kHeads * kHd], n_q, pos0, out.data()).ok());
        for (int h = 0; h < kHeads; ++h) {
          read_keys_at_positions(*b.cache, rope, 0, h / (kHeads / kKvHeads), n, kd.data(), vd.data());
          for (int i = 0; i < n_q; ++i) {
            const int pos = pos0 + i;
            // 2-bit KVQuant values round their weights (slack: test::attention_head_as_stored).
            float slack = 0.0f;
            test::attention_head_as_stored(*b.cache, 0, h / (kHeads / kKvHeads), &q[(size_t(pos) * kHeads + h) * kHd],
                                           kd.data(), vd.data(), ref.data(), pos + 1, kHd, 0.125f, path, &slack);
            const float* got = &out[(size_t(i) * kHeads + h) * kHd];
            for (int d = 0; d < kHd; ++d) {
              ASSERT_NEAR(got[d], ref[d], 2e-5f * (1.0f + std::fabs(ref[d])) + slack)
                  << spec << " rope_dim " << rope.rope_dim() << " stride " << rope.pair_stride();
            }
          }
        }
      }
    }
  }
}

// A sliding window (Phi-3): the query at p attends to (p - window, p] only, in the decode and
// prefill paths, for windows inside one chunk, across a chunk start, and past a whole chunk.
TEST(PackedAttention, SlidingWindowAttendsToTheLastKeysOnly) {
  const Rope rope(kHd, kHd, 10000.0f, RopeMode::kNeox);
  Rng rng(14);
  const int n = kAttentionChunk + 76;
  for (const char* spec : {"f32", "kvquant-3"}) {
    Built b = build(spec, n);
    ASSERT_TRUE(b.cache);
    const std::vector<float> q = append_random(rng, *b.cache, 0, n).q;
    std::vector<float> kd(size_t(n) * kHd), vd(kd.size()), ref(kHd);
    for (int window : {40, 300, 1100}) {
      for (int n_q : {3, 20}) {
        const AttentionParams p{kHeads, kKvHeads, kHd, 0.125f, &rope, window};
        const int pos0 = n - n_q;
        ExecContext ctx(2);
        std::vector<float> out(size_t(n_q) * kHeads * kHd);
        ASSERT_TRUE(attend(ctx, p, *b.cache, 0, &q[size_t(pos0) * kHeads * kHd], n_q, pos0, out.data()).ok());
        for (int h = 0; h < kHeads; ++h) {
          read_keys_at_positions(*b.cache, rope, 0, h / (kHeads / kKvHeads), n, kd.data(), vd.data());
          for (int i = 0; i < n_q; ++i) {
            const int pos = pos0 + i, lo = std::max(0, pos - window + 1);
            ref::attention_head_ref(&q[(size_t(pos) * kHeads + h) * kHd], &kd[size_t(lo) * kHd], &vd[size_t(lo) * kHd],
                                    ref.data(), pos + 1 - lo, kHd, 0.125f);
            const float* got = &out[(size_t(i) * kHeads + h) * kHd];
            for (int d = 0; d < kHd; ++d) {
              ASSERT_NEAR(got[d], ref[d], 2e-5f * (1.0f + std::fabs(ref[d])))
                  << spec << " window " << window << " n_q " << n_q;
            }
          }
        }
      }
    }
  }
}

// The rotation itself against its definition: neox pairs (i, i + rope_dim/2), freq factors
// dividing the angle, dims past rope_dim untouched; ggml's float angles close to the double ones.
TEST(Rope, NeoxPairsFreqFactorsAndPartialRotary) {
  const std::vector<float> ff = {1.0f, 2.0f, 4.0f, 8.0f};
  const Rope full(8, 8, 100.0f, RopeMode::kNeox, ff), part(8, 4, 100.0f, RopeMode::kNeox);
  const int pos = 5;
  float cs[8], g[8];
  full.angles(pos, cs);
  full.ggml_angles(pos, 1, g);
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(cs[i], g[i], 1e-6f);
  float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  full.rotate(x, cs, false);
  for (int i = 0; i < 4; ++i) {
    const double a = pos * std::pow(100.0, -2.0 * i / 8) / ff[size_t(i)];
    EXPECT_NEAR(x[i], (i + 1) * std::cos(a) - (i + 5) * std::sin(a), 1e-5);
    EXPECT_NEAR(x[i + 4], (i + 1) * std::sin(a) + (i + 5) * std::cos(a), 1e-5);
  }
  float y[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  part.angles(pos, cs);
  part.rotate(y, cs, false);
  for (int i = 0; i < 2; ++i) {
    const double a = pos * std::pow(100.0, -2.0 * i / 4);
    EXPECT_NEAR(y[i], (i + 1) * std::cos(a) - (i + 3) * std::sin(a), 1e-5);
    EXPECT_NEAR(y[i + 2], (i + 1) * std::sin(a) + (i + 3) * std::cos(a), 1e-5);
  }
  for (int i = 4; i < 8; ++i) EXPECT_EQ(y[i], float(i + 1));
}

// n decode steps of random K/V rows (row floats each) into every layer, one end_step each as
// the model does.
void append_random_steps(KvCache& cache, Rng& rng, int n, size_t row) {
  std::vector<float> k(row), v(row);
  for (int t = 0; t < n; ++t) {
    for (auto& x : k) x = float(rng.normal());
    for (auto& x : v) x = float(rng.normal());
    for (int il = 0; il < kLayers; ++il) ASSERT_TRUE(cache.append(il, 1, k.data(), v.data()).ok());
    ASSERT_TRUE(cache.end_step().ok());
  }
}

// bytes_used is what is allocated; the bits accounting predicts it from the configuration.
// Checked at a whole number of 64-token pages, after a decode that left KIVI's windows in
// their steady state, with the key outliers actually stored.
TEST(PackedAttention, BytesUsedMatchesBitsAccounting) {
  Rng rng(12);
  const size_t row = size_t(kKvHeads * kHd);
  for (const char* spec_text : {"f16", "q8_0", "q4_0", "int3", "int4:g=32", "kvquant-3", "kvquant-2:outliers=0:sinks=0",
                                "kivi-2:g=32:r=128", "int3:rot=1", "kivi-2:g=32:r=128:rot=1", "kvquant-mixed",
                                "kvquant-mixed:outliers=0:sinks=0", "kvquant-3:norm=8", "kvquant-2:outliers=0:sinks=0:norm=8"}) {
    // One sink token plus 4 full pages for kvquant-3 (sinks=1), 4 pages otherwise.
    const std::string st(spec_text);
    const int n = st == "kvquant-3" || st == "kvquant-mixed" || st == "kvquant-3:norm=8" ? 257 : 256;
    Built b = build(spec_text, n);
    ASSERT_TRUE(b.cache);
    ASSERT_NO_FATAL_FAILURE(append_random_steps(*b.cache, rng, n, row));
    // kvquant-mixed: the per-layer widths come with the calibration (test::kMixed*Bits).
    CacheConfig cfg = cache_config(parse_cache_spec(spec_text).value(), {kLayers, kKvHeads, kHd, n}, {&b.k, &b.v});
    if (n == 257) {
      const auto& ks = static_cast<const KvquantStore&>(dynamic_cast<const CompositeKvCache&>(*b.cache).keys());
      cfg.key_outliers_per_token = double(ks.n_outliers()) / double(kLayers) / double(n - 1);
    }
    auto acc = account_bits(cfg, n);
    ASSERT_TRUE(acc.ok()) << acc.status().to_string();
    EXPECT_NEAR(double(b.cache->bytes_used()), acc->total_bytes(), 1e-6 * acc->total_bytes() + 1.0)
        << spec_text << "\n" << acc->to_string();
  }
}

// Capacity, not size: part of a page is a whole page allocated. Between page boundaries, for
// the formats whose bytes do not depend on the data (no outliers).
TEST(PackedAttention, BytesUsedMatchesBitsAccountingWithinAPage) {
  Rng rng(13);
  const size_t row = size_t(kKvHeads * kHd);
  for (const char* spec_text : {"f16", "q8_0", "q4_0", "int3", "int4:g=32", "kvquant-2:outliers=0:sinks=0",
                                "kvquant-3:outliers=0", "kvquant-3:outliers=0:norm=8", "kivi-2:g=32:r=128",
                                "kivi-4:g=32:r=64"}) {
    for (const int n : {1, 63, 65, 200, 300}) {
      Built b = build(spec_text, n);
      ASSERT_TRUE(b.cache);
      ASSERT_NO_FATAL_FAILURE(append_random_steps(*b.cache, rng, n, row));
      const CacheConfig cfg =
          cache_config(parse_cache_spec(spec_text).value(), {kLayers, kKvHeads, kHd, n}, {&b.k, &b.v});
      auto acc = account_bits(cfg, n);
      ASSERT_TRUE(acc.ok()) << acc.status().to_string();
      EXPECT_NEAR(double(b.cache->bytes_used()), acc->total_bytes(), 1e-6 * acc->total_bytes() + 1.0)
          << spec_text << " at " << n << " tokens\n" << acc->to_string();
    }
  }
}

// The same at the wider outlier layouts (quant/outlier_layout.h): d_kv 512 (uint16 indices and
// pointers) and 1088 (uint16 indices, uint32 pointers); the test shape above has d_kv 128.
TEST(PackedAttention, BytesUsedMatchesBitsAccountingAtEveryOutlierWidth) {
  Rng rng(21);
  for (const int kv_heads : {8, 17}) {
    const size_t row = size_t(kv_heads * kHd);
    const int n = 129;  // the sink and two full pages
    Built b = build("kvquant-3", n, nullptr, kv_heads);
    ASSERT_TRUE(b.cache);
    ASSERT_NO_FATAL_FAILURE(append_random_steps(*b.cache, rng, n, row));
    CacheConfig cfg = cache_config(parse_cache_spec("kvquant-3").value(), {kLayers, kv_heads, kHd, n}, {&b.k, &b.v});
    const auto& ks = static_cast<const KvquantStore&>(dynamic_cast<const CompositeKvCache&>(*b.cache).keys());
    cfg.key_outliers_per_token = double(ks.n_outliers()) / double(kLayers) / double(n - 1);
    auto acc = account_bits(cfg, n);
    ASSERT_TRUE(acc.ok()) << acc.status().to_string();
    EXPECT_NEAR(double(b.cache->bytes_used()), acc->total_bytes(), 1e-6 * acc->total_bytes() + 1.0)
        << "d_kv " << row << "\n" << acc->to_string();
    EXPECT_GT(acc->k.outlier_indices, 0.0);
  }
}

// kvquant-mixed: the accounting of a cache with per-layer widths is the sum of its layers, each
// costing what a uniform cache of its width costs per layer (so the weighted sum of the
// uniform caches' figures), and it is what the cache's pool allocates (above).
TEST(PackedAttention, MixedWidthsAccountAsTheSumOfTheirLayers) {
  const int n = 257;
  Built b = build("kvquant-mixed:outliers=0", n);
  ASSERT_TRUE(b.cache);
  const size_t row = size_t(kKvHeads * kHd);
  Rng rng(15);
  std::vector<float> k(row), v(row);
  for (int t = 0; t < n; ++t) {
    for (auto& x : k) x = float(rng.normal());
    for (auto& x : v) x = float(rng.normal());
    for (int il = 0; il < kLayers; ++il) ASSERT_TRUE(b.cache->append(il, 1, k.data(), v.data()).ok());
  }
  const KvCacheShape shape{kLayers, kKvHeads, kHd, n};
  auto mixed = account_bits(cache_config(parse_cache_spec("kvquant-mixed:outliers=0").value(), shape, {&b.k, &b.v}), n);
  ASSERT_TRUE(mixed.ok()) << mixed.status().to_string();
  // Per width, a uniform cache's keys (values) cost per layer 1/kLayers of its total.
  double k_sum = 0, v_sum = 0;
  for (int il = 0; il < kLayers; ++il) {
    const std::string kb = std::to_string(test::kMixedKeyBits[il]), vb = std::to_string(test::kMixedValueBits[il]);
    auto ku = account_bits(cache_config(parse_cache_spec("kvquant-" + kb + ":outliers=0").value(), shape), n);
    auto vu = account_bits(cache_config(parse_cache_spec("kvquant-" + vb + ":outliers=0").value(), shape), n);
    ASSERT_TRUE(ku.ok() && vu.ok());
    k_sum += ku->k.total() / kLayers;
    v_sum += vu->v.total() / kLayers;
  }
  EXPECT_NEAR(mixed->k.total(), k_sum, 1e-6);
  EXPECT_NEAR(mixed->v.total(), v_sum, 1e-6);
  EXPECT_EQ(double(b.cache->bytes_used()), mixed->total_bytes());
  EXPECT_EQ(double(b.cache->bytes_for(n)), mixed->total_bytes());
  // Without its calibration a mixed spec has no widths: an error that says where they come from.
  auto none = account_bits(cache_config(parse_cache_spec("kvquant-mixed").value(), shape), n);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("--bits-budget"), std::string::npos) << none.status().message();
}

// Attention reads every layer at its own width (the fused kernels take the width per run).
TEST(PackedAttention, MixedWidthsMatchAttentionOverTheDequantizedCacheInEveryLayer) {
  Rng rng(16);
  const int n = 150;
  const Rope rope(kHd, kHd, 10000.0f);
  for (const char* spec : {"kvquant-mixed", "kvquant-mixed:outliers=0:sinks=0"}) {
    Built b = build(spec, n);
    ASSERT_TRUE(b.cache);
    const size_t row = size_t(kKvHeads * kHd);
    std::vector<float> k(size_t(n) * row), v(k.size()), q(size_t(n) * kHeads * kHd);
    for (auto& x : k) x = float(rng.normal());
    for (auto& x : v) x = float(rng.normal());
    for (auto& x : q) x = float(rng.normal());
    for (int il = 0; il < kLayers; ++il) {
      ASSERT_TRUE(b.cache->append(il, 100, k.data(), v.data()).ok());
      for (int t = 100; t < n; ++t) ASSERT_TRUE(b.cache->append(il, 1, &k[t * row], &v[t * row]).ok());
    }
    ExecContext ctx(2);
    const AttentionParams p{kHeads, kKvHeads, kHd, 0.125f, &rope};
    const int n_q = 5, pos0 = n - n_q;
    std::vector<float> out(size_t(n_q) * kHeads * kHd), kd(size_t(n) * kHd), vd(kd.size()), ref(kHd);
    for (int il = 0; il < kLayers; ++il) {
      ASSERT_TRUE(attend(ctx, p, *b.cache, il, &q[size_t(pos0) * kHeads * kHd], n_q, pos0, out.data()).ok());
      for (int h = 0; h < kHeads; ++h) {
        read_keys_at_positions(*b.cache, rope, il, h / (kHeads / kKvHeads), n, kd.data(), vd.data());
        for (int i = 0; i < n_q; ++i) {
          const int pos = pos0 + i;
          float slack = 0.0f;  // 2-bit heads' values round their weights (test::attention_head_as_stored)
          test::attention_head_as_stored(*b.cache, il, h / (kHeads / kKvHeads), &q[(size_t(pos) * kHeads + h) * kHd],
                                         kd.data(), vd.data(), ref.data(), pos + 1, kHd, 0.125f, KernelPath::kSimd, &slack);
          const float* got = &out[(size_t(i) * kHeads + h) * kHd];
          for (int d = 0; d < kHd; ++d) {
            ASSERT_NEAR(got[d], ref[d], 1e-5f * (1.0f + std::fabs(ref[d])) + slack) << spec << " layer " << il;
          }
        }
      }
    }
  }
}

// kvquant-mixed with a width per KV head (kvq calibrate --width-per head): every head reads
// back exactly what a uniform cache of its width stores for it (the norm and the outliers do
// not depend on the width), attention over the packed heads matches attention over read(), and
// the cache allocates what the bits accounting says.
TEST(PackedAttention, PerHeadWidthsMatchUniformCachesAttentionAndAccounting) {
  static_assert(kKvHeads == 2);
  // [layer][head]: both heads equal in one layer (stored as a per-layer width), every width.
  constexpr int kKeyBits[kLayers][kKvHeads] = {{2, 4}, {3, 3}, {4, 3}};
  constexpr int kValueBits[kLayers][kKvHeads] = {{3, 2}, {4, 2}, {2, 4}};
  const int n = 150;
  const Rope rope(kHd, kHd, 10000.0f);
  const size_t row = size_t(kKvHeads * kHd);
  for (const char* spec_text : {"kvquant-mixed", "kvquant-mixed:outliers=0:sinks=0:norm=8"}) {
    SCOPED_TRACE(spec_text);
    const CacheSpec spec = parse_cache_spec(spec_text).value();
    KvquantParams kp = test::dummy_params(0, true), vp = test::dummy_params(0, false);
    for (int il = 0; il < kLayers; ++il) {
      for (int h = 0; h < kKvHeads; ++h) {
        kp.layers[size_t(il)].head_codebooks.push_back(make_nf_codebook(kKeyBits[il][h]));
        vp.layers[size_t(il)].head_codebooks.push_back(make_nf_codebook(kValueBits[il][h]));
      }
    }
    const KvCacheShape shape{kLayers, kKvHeads, kHd, n};
    auto made = make_cache(spec, shape, {&kp, &vp});
    ASSERT_TRUE(made.ok()) << made.status().to_string();
    KvCache& cache = **made;
    // Uniform caches of each width, with the same options (the spec's, at that width).
    std::string opts(spec_text + std::string("kvquant-mixed").size());
    std::vector<std::unique_ptr<KvCache>> uniform;
    std::vector<KvquantParams> up;
    up.reserve(6);
    for (int b = 2; b <= 4; ++b) {
      up.push_back(test::dummy_params(b, true));
      up.push_back(test::dummy_params(b, false));
      auto u = make_cache(parse_cache_spec("kvquant-" + std::to_string(b) + opts).value(), shape,
                          {&up[up.size() - 2], &up.back()});
      ASSERT_TRUE(u.ok()) << u.status().to_string();
      uniform.push_back(std::move(*u));
    }
    Rng rng(17);
    std::vector<float> k(size_t(n) * row), v(k.size()), q(size_t(n) * kHeads * kHd);
    for (auto& x : k) x = float(rng.normal());
    for (auto& x : v) x = float(rng.normal());
    for (auto& x : q) x = float(rng.normal());
    for (int il = 0; il < kLayers; ++il) {
      for (KvCache* c : {&cache, uniform[0].get(), uniform[1].get(), uniform[2].get()}) {
        ASSERT_TRUE(c->append(il, 100, k.data(), v.data()).ok());
        for (int t = 100; t < n; ++t) ASSERT_TRUE(c->append(il, 1, &k[t * row], &v[t * row]).ok());
      }
    }
    std::vector<float> kd(size_t(n) * kHd), vd(kd.size()), ku(kd.size()), vu(kd.size());
    for (int il = 0; il < kLayers; ++il) {
      for (int h = 0; h < kKvHeads; ++h) {
        cache.read(il, h, 0, n, kd.data(), vd.data());
        uniform[size_t(kKeyBits[il][h] - 2)]->read(il, h, 0, n, ku.data(), vu.data());
        ASSERT_EQ(kd, ku) << "keys, layer " << il << " head " << h;
        uniform[size_t(kValueBits[il][h] - 2)]->read(il, h, 0, n, ku.data(), vu.data());
        ASSERT_EQ(vd, vu) << "values, layer " << il << " head " << h;
      }
    }
    ExecContext ctx(2);
    const AttentionParams p{kHeads, kKvHeads, kHd, 0.125f, &rope};
    const int n_q = 5, pos0 = n - n_q;
    std::vector<float> out(size_t(n_q) * kHeads * kHd), ref(kHd);
    for (int il = 0; il < kLayers; ++il) {
      ASSERT_TRUE(attend(ctx, p, cache, il, &q[size_t(pos0) * kHeads * kHd], n_q, pos0, out.data()).ok());
      for (int h = 0; h < kHeads; ++h) {
        read_keys_at_positions(cache, rope, il, h / (kHeads / kKvHeads), n, kd.data(), vd.data());
        for (int i = 0; i < n_q; ++i) {
          const int pos = pos0 + i;
          float slack = 0.0f;  // 2-bit heads' values round their weights (test::attention_head_as_stored)
          test::attention_head_as_stored(cache, il, h / (kHeads / kKvHeads), &q[(size_t(pos) * kHeads + h) * kHd],
                                         kd.data(), vd.data(), ref.data(), pos + 1, kHd, 0.125f, KernelPath::kSimd, &slack);
          const float* got = &out[(size_t(i) * kHeads + h) * kHd];
          for (int d = 0; d < kHd; ++d) ASSERT_NEAR(got[d], ref[d], 1e-5f * (1.0f + std::fabs(ref[d])) + slack) << il;
        }
      }
    }
    // The accounting: per-head widths, each head's codes at its width, a codebook per width in
    // use; what the pool holds, and with all heads of a layer at one width, the per-layer sum.
    const CacheConfig cfg = cache_config(spec, shape, {&kp, &vp});
    ASSERT_EQ(cfg.k.head_bits.size(), size_t(kLayers * kKvHeads));
    auto acc = account_bits(cfg, n);
    ASSERT_TRUE(acc.ok()) << acc.status().to_string();
    if (spec.k.kvquant.outliers == 0) {  // key outliers are data dependent
      EXPECT_EQ(double(cache.bytes_used()), acc->total_bytes());
      EXPECT_EQ(double(cache.bytes_for(n)), acc->total_bytes());
    }
    double codes = 0;
    for (int il = 0; il < kLayers; ++il) {
      for (int h = 0; h < kKvHeads; ++h) codes += (kKeyBits[il][h] + kValueBits[il][h]) * kHd / 8.0;
    }
    const double pages = (n - spec.k.kvquant.sinks + 63) / 64 * 64;
    EXPECT_EQ(acc->k.codes + acc->v.codes, codes * pages);
    // A head whose codebook differs from another head's of the same width is refused.
    KvquantParams bad = kp;
    bad.layers[1].head_codebooks[1].values[0] += 0.5f;
    auto refused = make_cache(spec, shape, {&bad, &vp});
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.status().message().find("different codebooks"), std::string::npos)
        << refused.status().message();
  }
}

}  // namespace
}  // namespace kvq
