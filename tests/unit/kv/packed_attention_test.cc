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
                              "K=kvquant-3,V=kvquant-3:rot=1"};

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
      const int kvh = h / (kHeads / kKvHeads);
      b.cache->read(1, kvh, 0, n, kd.data(), vd.data());
      if (b.cache->pre_rope()) {
        std::vector<float> cs(kHd);
        for (int t = 0; t < n; ++t) {
          rope.angles(t, cs.data());
          rope.rotate(&kd[size_t(t) * kHd], cs.data(), false);
        }
      }
      for (int i = 0; i < n_q; ++i) {
        const int pos = pos0 + i;
        ref::attention_head_ref(&q[(size_t(pos) * kHeads + h) * kHd], kd.data(), vd.data(), ref.data(), pos + 1,
                                kHd, 0.125f);
        const float* got = &out[(size_t(i) * kHeads + h) * kHd];
        // f16 caches round q and probabilities to f16 on purpose (llama.cpp parity).
        const float tol = std::string(spec) == "f16" ? 2e-3f : 1e-5f;
        for (int d = 0; d < kHd; ++d) ASSERT_NEAR(got[d], ref[d], tol * (1.0f + std::fabs(ref[d]))) << spec;
      }
    }
  }
}

// bytes_used is what is allocated; the bits accounting predicts it from the configuration.
// Checked at a whole number of 64-token pages, after a decode that left KIVI's windows in
// their steady state, with the key outliers actually stored.
TEST(PackedAttention, BytesUsedMatchesBitsAccounting) {
  Rng rng(12);
  const size_t row = size_t(kKvHeads * kHd);
  for (const char* spec_text : {"f16", "q8_0", "q4_0", "int3", "int4:g=32", "kvquant-3", "kvquant-2:outliers=0:sinks=0",
                                "kivi-2:g=32:r=128", "int3:rot=1", "kivi-2:g=32:r=128:rot=1"}) {
    // One sink token plus 4 full pages for kvquant-3 (sinks=1), 4 pages otherwise.
    const int n = std::string(spec_text) == "kvquant-3" ? 257 : 256;
    Built b = build(spec_text, n);
    ASSERT_TRUE(b.cache);
    std::vector<float> k(row), v(row);
    for (int t = 0; t < n; ++t) {
      for (auto& x : k) x = float(rng.normal());
      for (auto& x : v) x = float(rng.normal());
      for (int il = 0; il < kLayers; ++il) ASSERT_TRUE(b.cache->append(il, 1, k.data(), v.data()).ok());
      ASSERT_TRUE(b.cache->end_step().ok());  // as the model does after each step
    }
    CacheConfig cfg = cache_config(parse_cache_spec(spec_text).value(), {kLayers, kKvHeads, kHd, n});
    if (std::string(spec_text) == "kvquant-3") {
      const auto& ks = static_cast<const KvquantStore&>(dynamic_cast<const CompositeKvCache&>(*b.cache).keys());
      cfg.key_outliers_per_token = double(ks.n_outliers()) / double(kLayers) / double(n - 1);
    }
    auto acc = account_bits(cfg, n);
    ASSERT_TRUE(acc.ok()) << acc.status().to_string();
    EXPECT_NEAR(double(b.cache->bytes_used()), acc->total_bytes(), 1e-6 * acc->total_bytes() + 1.0)
        << spec_text << "\n" << acc->to_string();
  }
}

}  // namespace
}  // namespace kvq
