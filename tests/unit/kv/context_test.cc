// SPDX-License-Identifier: MIT
// Long-context storage: every cache's bytes_used() is what its PagePool handed out (after
// appends, truncation and shifts), a refused allocation leaves the cache as it was, and a
// context shift keeps the sinks and the newest tokens exactly as a fresh cache holding only
// those tokens would (pre-RoPE keys: bit for bit; f16/f32 post-RoPE keys: re-rotated).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "attention/attention.h"
#include "base/rng.h"
#include "kernels/rope.h"
#include "kv/composite_cache.h"
#include "kv/paged_outliers.h"
#include "kv/row_ring.h"
#include "test_caches.h"

namespace kvq {
namespace {

using test::build;
using test::Built;
using test::kHd;
using test::kHeads;
using test::kKvHeads;
using test::kLayers;

constexpr size_t kRow = size_t(kKvHeads) * kHd;
const char* const kAll[] = {"f32", "f16", "q8_0", "q4_0", "int3", "int4:g=32", "kivi-2:g=32:r=64", "kivi-4:g=16:r=32",
                            "kvquant-3", "kvquant-2:outliers=0:sinks=0", "kvquant-4:prerope=0:qnorm=1",
                            "K=kvquant-3,V=kivi-2:g=32:r=64", "K=kvquant-2,V=f16", "kvquant-mixed",
                            "K=kvquant-mixed:outliers=0:sinks=0,V=kvquant-mixed", "kvquant-3:r=16"};

std::vector<float> random_rows(Rng& rng, int n) {
  std::vector<float> x(size_t(n) * kRow);
  for (auto& v : x) v = float(rng.normal());
  return x;
}

// Appends rows [t0, t1) to every layer in steps of `chunk`, ending each step as the model does.
void append(KvCache& c, const std::vector<float>& k, const std::vector<float>& v, int t0, int t1, int chunk) {
  for (int t = t0; t < t1; t += chunk) {
    const int n = std::min(chunk, t1 - t);
    for (int il = 0; il < kLayers; ++il) {
      ASSERT_TRUE(c.append(il, n, &k[size_t(t) * kRow], &v[size_t(t) * kRow]).ok());
    }
    ASSERT_TRUE(c.end_step().ok());
  }
}

size_t pool_bytes(const KvCache& c) { return dynamic_cast<const CompositeKvCache&>(c).pool().bytes_in_use(); }

// What the cache says it holds is what its pool handed out, plus fixed per-layer data
// (codebooks, thresholds: bytes_for(0)).
void expect_honest(const KvCache& c, const std::string& what) {
  EXPECT_EQ(c.bytes_used(), pool_bytes(c) + c.bytes_for(0)) << c.name() << " " << what;
}

TEST(PagePool, BytesUsedIsWhatThePoolHandedOut) {
  Rng rng(1);
  const Rope rope(kHd, kHd, 10000.0f);
  for (const char* spec : kAll) {
    Built b = build(spec, 1024);
    ASSERT_TRUE(b.cache);
    KvCache& c = *b.cache;
    const auto k = random_rows(rng, 400), v = random_rows(rng, 400);
    expect_honest(c, "empty");
    append(c, k, v, 0, 150, 150);  // a prefill
    expect_honest(c, "after a prefill");
    append(c, k, v, 150, 300, 1);  // decode
    expect_honest(c, "after decode");
    const Status tr = c.truncate(257);
    if (tr.ok()) {
      EXPECT_EQ(c.n_tokens(0), 257) << spec;
    }
    expect_honest(c, "after truncate");
    const int n = c.n_tokens(0);
    if (c.shift(c.sink_tokens(), 128, rope).ok()) {
      EXPECT_EQ(c.n_tokens(0), n - 128) << spec;
    }
    expect_honest(c, "after a shift");
    append(c, k, v, 300, 400, 7);
    expect_honest(c, "after appends past a shift");
    c.clear();
    expect_honest(c, "cleared");
  }
}

TEST(PagePool, ARefusedAllocationLeavesTheCacheAsItWas) {
  Rng rng(2);
  const auto k = random_rows(rng, 600), v = random_rows(rng, 600);
  for (const char* spec : kAll) {
    // A budget that runs out part way: what 300 tokens take.
    const size_t budget = build(spec, 1024).cache->bytes_for(300) - build(spec, 1024).cache->bytes_for(0);
    auto pool = std::make_shared<PagePool>(budget);
    Built b = build(spec, 1024, pool);
    KvCache& c = *b.cache;
    Status s;
    int t = 0;
    for (; t < 600 && s.ok(); t += 5) {
      for (int il = 0; il < kLayers && s.ok(); ++il) {
        const int before = c.n_tokens(il);
        const size_t bytes = c.bytes_used();
        s = c.append(il, 5, &k[size_t(t) * kRow], &v[size_t(t) * kRow]);
        if (!s.ok()) {
          EXPECT_EQ(s.code(), StatusCode::kOutOfMemory) << spec << ": " << s.to_string();
          EXPECT_EQ(c.n_tokens(il), before) << spec;
          EXPECT_LE(c.bytes_used(), bytes) << spec;
        }
      }
      if (s.ok()) s = c.end_step();
    }
    EXPECT_FALSE(s.ok()) << spec << " held 600 tokens in a budget of " << budget;
    EXPECT_LE(pool->peak_bytes(), budget) << spec;
    expect_honest(c, "after a refusal");
  }
}

// Builds `fresh` from the kept tokens only and compares every read and an attention step.
void expect_same_cache(const KvCache& a, const KvCache& b, float tol, const std::string& what) {
  ASSERT_EQ(a.n_tokens(0), b.n_tokens(0)) << what;
  const int n = a.n_tokens(0);
  std::vector<float> ka(size_t(n) * kHd), va(ka.size()), kb(ka.size()), vb(ka.size());
  for (int il = 0; il < kLayers; ++il) {
    for (int h = 0; h < kKvHeads; ++h) {
      a.read(il, h, 0, n, ka.data(), va.data());
      b.read(il, h, 0, n, kb.data(), vb.data());
      for (size_t i = 0; i < ka.size(); ++i) {
        if (tol == 0) {
          ASSERT_EQ(ka[i], kb[i]) << what << " key " << i / kHd << " of layer " << il;
          ASSERT_EQ(va[i], vb[i]) << what << " value " << i / kHd << " of layer " << il;
        } else {
          ASSERT_NEAR(ka[i], kb[i], tol * (1 + std::fabs(kb[i]))) << what << " key " << i / kHd;
          ASSERT_NEAR(va[i], vb[i], tol * (1 + std::fabs(vb[i]))) << what << " value " << i / kHd;
        }
      }
    }
  }
}

TEST(ContextShift, PreRopeCachesMatchAFreshCacheOfTheKeptTokensExactly) {
  Rng rng(3);
  const Rope rope(kHd, kHd, 10000.0f);
  ExecContext ctx(2);
  const AttentionParams p{kHeads, kKvHeads, kHd, 0.125f, &rope};
  for (const char* spec : {"kvquant-3", "kvquant-2:outliers=0:sinks=0", "K=kvquant-3,V=kivi-2:g=32:r=64",
                           "K=kvquant-2,V=f16", "kvquant-4:sinks=4:qnorm=1", "kvquant-3:r=16"}) {
    const int n = 4 + 64 * 5 + 21;
    const auto k = random_rows(rng, n), v = random_rows(rng, n);
    Built a = build(spec, 1024);
    append(*a.cache, k, v, 0, 100, 100);
    append(*a.cache, k, v, 100, n, 1);
    const int keep = a.cache->sink_tokens(), drop = 128;
    ASSERT_TRUE(a.cache->shift(keep, drop, rope).ok()) << spec;
    EXPECT_EQ(a.cache->n_tokens(0), n - drop);
    // Fresh: the sinks, then the tokens after the dropped ones, fed the same way (the value
    // window of KIVI flushes the same tokens).
    Built b = build(spec, 1024);
    append(*b.cache, k, v, 0, keep, std::max(keep, 1));
    std::vector<float> k2(k.begin() + ptrdiff_t(size_t(keep + drop) * kRow), k.end());
    std::vector<float> v2(v.begin() + ptrdiff_t(size_t(keep + drop) * kRow), v.end());
    append(*b.cache, k2, v2, 0, 100 - keep - drop > 0 ? 100 - keep - drop : 0, 100);
    append(*b.cache, k2, v2, std::max(0, 100 - keep - drop), n - keep - drop, 1);
    expect_same_cache(*a.cache, *b.cache, 0, spec);
    // Attention of a new token at the next position is the same bit for bit.
    std::vector<float> q(size_t(kHeads) * kHd), oa(q.size()), ob(q.size());
    for (auto& x : q) x = float(rng.normal());
    const int pos = n - drop;
    const auto kn = random_rows(rng, 1), vn = random_rows(rng, 1);
    for (auto* c : {a.cache.get(), b.cache.get()}) {
      for (int il = 0; il < kLayers; ++il) ASSERT_TRUE(c->append(il, 1, kn.data(), vn.data()).ok());
    }
    ASSERT_TRUE(attend(ctx, p, *a.cache, 2, q.data(), 1, pos, oa.data()).ok());
    ASSERT_TRUE(attend(ctx, p, *b.cache, 2, q.data(), 1, pos, ob.data()).ok());
    EXPECT_EQ(0, std::memcmp(oa.data(), ob.data(), oa.size() * 4)) << spec;
  }
}

TEST(ContextShift, FullPrecisionPostRopeKeysAreReRotated) {
  Rng rng(4);
  const Rope rope(kHd, kHd, 10000.0f);
  const int n = 200, keep = 1, drop = 70;
  auto k = random_rows(rng, n);
  const auto v = random_rows(rng, n);
  // Keys as the model stores them: rotated at their positions.
  auto rotated = [&](const std::vector<float>& x, int pos0, int count) {
    std::vector<float> out(x.begin(), x.begin() + ptrdiff_t(size_t(count) * kRow)), cs(size_t(count) * kHd);
    rope.ggml_angles(pos0, count, cs.data());
    rope.rotate_rows(out.data(), count, kKvHeads, cs.data());
    return out;
  };
  for (const char* spec : {"f32", "f16"}) {
    Built a = build(spec, 1024);
    append(*a.cache, rotated(k, 0, n), v, 0, n, 50);
    ASSERT_TRUE(a.cache->shift(keep, drop, rope).ok()) << spec;
    // Fresh: token 0 at position 0, then tokens keep + drop .. n at positions keep ..
    std::vector<float> kept(k.begin(), k.begin() + ptrdiff_t(kRow));
    kept.insert(kept.end(), k.begin() + ptrdiff_t(size_t(keep + drop) * kRow), k.end());
    std::vector<float> vkept(v.begin(), v.begin() + ptrdiff_t(kRow));
    vkept.insert(vkept.end(), v.begin() + ptrdiff_t(size_t(keep + drop) * kRow), v.end());
    Built b = build(spec, 1024);
    append(*b.cache, rotated(kept, 0, n - drop), vkept, 0, n - drop, 50);
    // f32: angle arithmetic differs (double composition vs ggml's float recurrence);
    // f16: plus one more rounding of the re-rotated keys (as llama.cpp's K-shift).
    expect_same_cache(*a.cache, *b.cache, std::string(spec) == "f32" ? 2e-5f : 2e-3f, spec);
  }
}

TEST(ContextShift, RefusedWhereItWouldRequantizeOrSplitPages) {
  Rng rng(5);
  const Rope rope(kHd, kHd, 10000.0f);
  const auto k = random_rows(rng, 300), v = random_rows(rng, 300);
  struct Case {
    const char* spec;
    int keep, drop;
    const char* says;
  };
  for (const Case& c : {Case{"q4_0", 1, 64, "stored after RoPE and quantized"}, Case{"int4:g=32", 0, 64, "after RoPE"},
                        Case{"kivi-2:g=32:r=64", 0, 64, "kivi keys"}, Case{"kvquant-3:prerope=0", 1, 64, "prerope=0"},
                        Case{"kvquant-3", 1, 10, "a page at a time"}, Case{"kvquant-3", 0, 64, "keep 1 tokens"},
                        Case{"f16", 250, 64, "cannot drop 64 tokens after the first 250"}}) {
    Built b = build(c.spec, 1024);
    append(*b.cache, k, v, 0, 300, 64);
    const size_t bytes = b.cache->bytes_used();
    const Status s = b.cache->shift(c.keep, c.drop, rope);
    EXPECT_FALSE(s.ok()) << c.spec;
    EXPECT_NE(s.message().find(c.says), std::string::npos) << c.spec << ": " << s.to_string();
    EXPECT_EQ(b.cache->n_tokens(0), 300) << c.spec;
    EXPECT_EQ(b.cache->bytes_used(), bytes) << c.spec;
  }
}

// The paged outliers against a flat list of rows, through appends, sealing, truncation (into a
// sealed page too, which is cut in place and turned back into a growing page by the next
// append) and page drops, in every layout a store takes (quant/outlier_layout.h): rows of 2 heads of 100
// values (uint8 indices, uint16 pointers), 8 of 125 (uint16, uint16) and 40 of 125 (uint16,
// uint32).
TEST(PagedOutliers, MatchAFlatModel) {
  for (const auto& [n_heads, head_dim] : {std::pair{2, 100}, std::pair{8, 125}, std::pair{40, 125}}) {
    const size_t row_values = size_t(n_heads) * size_t(head_dim);
    SCOPED_TRACE(row_values);
    PagePool pool;
    PagedOutliers o(&pool, 64, n_heads, head_dim);
    EXPECT_EQ(o.layout().idx_bytes, row_values <= 256 ? 1 : 2);
    EXPECT_EQ(o.layout().ptr_bytes, row_values * 64 <= 65535 ? 2 : 4);
    std::vector<std::vector<uint16_t>> model;
    Rng rng(6);
    const size_t most = std::min<size_t>(300, row_values / 3);
    auto add = [&](int n) {
      for (int i = 0; i < n; ++i) {
        std::vector<uint16_t> idx(rng.below(uint32_t(rng.below(10) == 0 ? most : 5)));
        for (size_t j = 0; j < idx.size(); ++j) idx[j] = uint16_t(j * 3 + rng.below(3));
        std::vector<f16_t> val(idx.size());
        for (size_t j = 0; j < idx.size(); ++j) val[j] = f32_to_f16(float(idx[j]));
        ASSERT_TRUE(o.append_row(idx.data(), val.data(), idx.size()).ok());
        model.push_back(idx);
      }
    };
    auto check = [&](size_t sealed) {
      ASSERT_EQ(o.n_rows(), model.size());
      size_t nnz = 0;
      for (size_t r = 0; r < model.size(); ++r) {
        std::vector<uint16_t> got;
        o.for_each_in_row(r, [&](uint32_t i, f16_t v) {
          got.push_back(uint16_t(i));
          EXPECT_EQ(f16_to_f32(v), float(i));
        });
        ASSERT_EQ(got, model[r]) << r;
        nnz += model[r].size();
      }
      EXPECT_EQ(o.nnz(), nnz);
      EXPECT_EQ(o.bytes(), pool.bytes_in_use());
      EXPECT_EQ(o.sealed_pages(), sealed);
    };
    add(200);
    check(0);  // full pages are sealed once a step is done (end_step)
    o.seal_full_pages();
    check(3);
    o.truncate(150);  // into sealed page 2: it stays sealed, cut in place
    model.resize(150);
    check(3);
    add(100);  // page 2 grows again
    check(2);
    o.seal_full_pages();
    check(3);
    o.drop_front_pages(128);
    model.erase(model.begin(), model.begin() + 128);
    check(1);
    add(64 * 3);
    o.seal_full_pages();
    check(4);
    o.truncate(0);
    model.clear();
    check(0);
    EXPECT_EQ(pool.bytes_in_use(), 0u);
  }
}

TEST(RowRing, WrapsIntoTwoPiecesAndErases) {
  PagePool pool;
  RowRing r(&pool, 4);
  auto put = [&](int i, int v) { std::memcpy(r.row(i), &v, 4); };
  auto get = [&](int i) {
    int v;
    std::memcpy(&v, r.row(i), 4);
    return v;
  };
  ASSERT_TRUE(r.push(6, 8).ok());
  for (int i = 0; i < 6; ++i) put(i, i);
  r.pop_front(4);
  ASSERT_TRUE(r.push(4, 8).ok());  // wraps: no reallocation
  EXPECT_EQ(r.capacity(), 8);
  for (int i = 2; i < 6; ++i) put(i, 10 + i);
  const uint8_t* base[2] = {};
  int count[2] = {};
  ASSERT_EQ(r.pieces(base, count), 2);
  EXPECT_EQ(count[0] + count[1], 6);
  r.erase(1, 2);
  const int want[] = {4, 13, 14, 15};
  ASSERT_EQ(r.size(), 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(get(i), want[i]);
  ASSERT_TRUE(r.reallocate(4).ok());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(get(i), want[i]);
  EXPECT_EQ(pool.bytes_in_use(), 16u);
}

}  // namespace
}  // namespace kvq
