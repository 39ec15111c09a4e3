// SPDX-License-Identifier: MIT
// The fused attention path against its specifications, on every cache format:
//  - each format's SIMD run decoder is bit-identical to its scalar reference (kernels/ref);
//  - attention read in place (SIMD and reference kernels) equals plain softmax attention over
//    the cache dequantized by read(), for head_dim 8, 64, 128, odd lengths and mixed K/V (the
//    query rounded as the keys' format says: f16, or q8_0 for q4_0 / q8_0 keys);
//  - split-K results are bit-identical for any thread count, and batched prefill equals
//    token-by-token decode for batch-invariant caches, at contexts split into several chunks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "attention/attention.h"
#include "base/rng.h"
#include "kernels/cpu/kv_decode.h"
#include "kernels/cpu/kv_fused.h"
#include "kernels/ref/kv_decode_ref.h"
#include "kernels/ref/ops_ref.h"
#include "kv/cache_spec.h"
#include "quant/codebook.h"
#include "../quant/test_util.h"
#include "test_caches.h"

namespace kvq {
namespace {

struct HeadShape {
  int n_heads, n_kv_heads, head_dim;
};

KvquantParams params_for(const TensorSpec& t, const HeadShape& s, bool keys, int n_layers) {
  KvquantParams p;
  for (int il = 0; il < n_layers; ++il) {
    KvquantLayerParams lp;
    lp.codebook = make_nf_codebook(t.bits);
    if (keys) {
      // Thresholds inside the data's range, so ~1% of keys are outliers.
      lp.upper.assign(size_t(s.n_kv_heads * s.head_dim), 2.5f);
      lp.lower.assign(size_t(s.n_kv_heads * s.head_dim), -2.4f);
    }
    p.layers.push_back(lp);
  }
  return p;
}

struct Cache {
  std::unique_ptr<KvCache> cache;
  KvquantParams k, v;
};

// Empty when the spec is not available for this head_dim (an explicit kUnimplemented).
Cache make(const std::string& k_spec, const std::string& v_spec, const HeadShape& s, int n_ctx, int n_layers = 1) {
  Cache c;
  const CacheSpec spec = parse_cache_spec(k_spec, v_spec).value();
  if (spec.k.kind == TensorKind::kKvquant) c.k = params_for(spec.k, s, true, n_layers);
  if (spec.v.kind == TensorKind::kKvquant) c.v = params_for(spec.v, s, false, n_layers);
  auto made = make_cache(spec, {n_layers, s.n_kv_heads, s.head_dim, n_ctx}, {&c.k, &c.v});
  if (!made.ok()) {
    // Formats this head_dim cannot hold say so (e.g. ggml blocks of 32 at head_dim 8).
    EXPECT_TRUE(made.status().code() == StatusCode::kUnimplemented ||
                made.status().code() == StatusCode::kInvalidArgument)
        << k_spec << "/" << v_spec << ": "
                                                                 << made.status().to_string();
    return c;
  }
  c.cache = std::move(*made);
  return c;
}

std::vector<float> randn(Rng& rng, size_t n, float scale = 1.0f) {
  std::vector<float> v(n);
  for (auto& x : v) x = scale * float(rng.normal());
  return v;
}

// Fills the cache with n tokens: a prefill of about 2/3, then single appends with end_step.
void fill(KvCache& c, Rng& rng, int n, const HeadShape& s) {
  const size_t row = size_t(s.n_kv_heads) * size_t(s.head_dim);
  auto k = randn(rng, size_t(n) * row), v = randn(rng, size_t(n) * row);
  const int pre = n * 2 / 3;
  ASSERT_TRUE(c.append(0, pre, k.data(), v.data()).ok());
  ASSERT_TRUE(c.end_step().ok());
  for (int t = pre; t < n; ++t) {
    ASSERT_TRUE(c.append(0, 1, &k[size_t(t) * row], &v[size_t(t) * row]).ok());
    ASSERT_TRUE(c.end_step().ok());
  }
}

const char* const kFormats[] = {"f32", "f16", "q8_0", "q4_0", "int3", "int4:g=32", "int2",
                                "kivi-2:g=32:r=64", "kivi-4:g=16:r=32", "kvquant-3", "kvquant-4:sinks=5",
                                "kvquant-2:outliers=0:sinks=0", "kvquant-3:prerope=0:qnorm=1",
                                "q4_0:rot=1", "int3:rot=1", "kivi-2:g=32:r=64:rot=1", "kvquant-3:prerope=0:rot=1", "kvquant-3:norm=8",
                                "kvquant-2:outliers=0:norm=8", "kvquant-3:r=16"};

// Every run of layer 0 (K and V, each head, runs of at most max_run tokens within a page)
// decoded by the kernel and by its reference: bit-identical. per_segment sees each segment.
void check_run_decoders(const KvCache& c, const HeadShape& s, int max_run,
                        const std::function<void(const KvSegment&)>& per_segment = {}) {
  KvStoreView views[2];
  c.views(0, &views[0], &views[1]);
  for (const KvStoreView& v : views) {
    for (int si = 0; si < v.n_segments; ++si) {
      const KvSegment& seg = v.seg[si];
      if (per_segment) per_segment(seg);
      for (int h = 0; h < s.n_kv_heads; ++h) {
        for (int i = 0; i < seg.n;) {
          const int n = std::min({seg.n - i, seg.page_left(i), max_run});
          KvRun run;
          seg.run(h, i, n, &run);
          std::vector<float> a(size_t(n) * size_t(s.head_dim)), b(a.size());
          cpu::decode_run(run, a.data());
          ref::decode_run_ref(run, b.data());
          ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4))
              << kv_format_name(run.format) << " head " << h << " token " << i;
          i += n;
        }
      }
    }
  }
}

TEST(FusedAttention, RunDecodersMatchTheirReferences) {
  for (int hd : {8, 64, 128}) {
    const HeadShape s{4, 2, hd};
    for (const char* f : kFormats) {
      Rng rng(uint64_t(hd) * 7 + 1);
      Cache c = make(f, f, s, 300);
      if (!c.cache) continue;
      fill(*c.cache, rng, 261, s);
      SCOPED_TRACE(std::string(f) + " hd " + std::to_string(hd));
      ASSERT_NO_FATAL_FAILURE(check_run_decoders(*c.cache, s, 64));
    }
  }
}

// out for the last n_q positions against softmax attention over read() (RoPE'd when pre-RoPE).
void check_against_read(const std::string& k_spec, const std::string& v_spec, const HeadShape& s, int n, int n_q,
                        KernelPath path) {
  SCOPED_TRACE(k_spec + " / " + v_spec + " hd " + std::to_string(s.head_dim) + " n " + std::to_string(n) +
               (path == KernelPath::kRef ? " ref" : " simd"));
  Rng rng(uint64_t(n) * 31 + uint64_t(s.head_dim));
  Cache c = make(k_spec, v_spec, s, n);
  if (!c.cache) return;
  fill(*c.cache, rng, n, s);
  const int hd = s.head_dim, group = s.n_heads / s.n_kv_heads;
  const Rope rope(hd, hd, 10000.0f);
  auto q = randn(rng, size_t(n_q) * s.n_heads * hd);
  ExecContext ctx(2, path);
  const float scale = 1.0f / std::sqrt(float(hd));
  const AttentionParams p{s.n_heads, s.n_kv_heads, hd, scale, &rope};
  std::vector<float> out(q.size());
  const int pos0 = n - n_q;
  ASSERT_TRUE(attend(ctx, p, *c.cache, 0, q.data(), n_q, pos0, out.data()).ok());
  std::vector<float> kd(size_t(n) * hd), vd(kd.size()), ref(hd), cs(hd);
  // Stores attended as llama.cpp does (kv_view.h): the query rounded as the keys' format says
  // (test::round_query_for_keys), the probabilities to f16 for f16 values.
  const bool f16 = k_spec == "f16" || v_spec == "f16";
  for (int h = 0; h < s.n_heads; ++h) {
    c.cache->read(0, h / group, 0, n, kd.data(), vd.data());
    if (c.cache->pre_rope()) {
      for (int t = 0; t < n; ++t) {
        rope.angles(t, cs.data());
        rope.rotate(&kd[size_t(t) * hd], cs.data(), false);
      }
    }
    for (int i = 0; i < n_q; ++i) {
      std::vector<float> qh(q.begin() + ptrdiff_t((size_t(i) * s.n_heads + h) * hd),
                            q.begin() + ptrdiff_t((size_t(i) * s.n_heads + h + 1) * hd));
      test::round_query_for_keys(k_spec, qh.data(), hd);
      float slack = 0.0f;
      test::attention_head_as_stored(*c.cache, 0, h / group, qh.data(), kd.data(), vd.data(), ref.data(), pos0 + i + 1, hd,
                                     scale, path, path == KernelPath::kSimd || c.cache->pre_rope() ? &slack : nullptr);
      const float* got = &out[(size_t(i) * s.n_heads + h) * hd];
      // f16 rounds the probabilities to f16 on purpose (llama.cpp parity); 2-bit per-token
      // groups and KVQuant values round their weights to uint8 (slack: test::
      // attention_head_as_stored); pre-RoPE keys are rotated by composed angles (a few ulp from
      // the direct ones), on the reference path too, so that a weight may round the other way
      // there as well.
      const float tol = f16 ? 2e-3f : c.cache->pre_rope() ? 2e-5f : 1e-5f;
      for (int d = 0; d < hd; ++d) {
        ASSERT_NEAR(got[d], ref[d], tol * (1.0f + std::fabs(ref[d])) + slack) << "head " << h;
      }
    }
  }
}

// KVQuant's outliers in the wider page layouts (quant/outlier_layout.h): d_kv 512 (uint16
// indices, uint16 pointers) and 1088 (uint16 indices, uint32 pointers); the shapes above all
// have d_kv <= 256 (uint8 indices). Run decoders against their references, then attention
// against read(), at odd lengths, with and without GQA.
TEST(FusedAttention, WideOutlierLayoutsMatchTheirReferences) {
  const char* const formats[] = {"kvquant-3", "kvquant-2:sinks=5", "kvquant-4:prerope=0"};
  for (const HeadShape s : {HeadShape{16, 8, 64}, HeadShape{17, 17, 64}}) {
    const size_t d_kv = size_t(s.n_kv_heads) * size_t(s.head_dim);
    for (const char* f : formats) {
      SCOPED_TRACE(std::string(f) + " d_kv " + std::to_string(d_kv));
      Rng rng(d_kv);
      Cache c = make(f, f, s, 300);
      ASSERT_TRUE(c.cache);
      fill(*c.cache, rng, 261, s);
      ASSERT_NO_FATAL_FAILURE(check_run_decoders(*c.cache, s, 37, [&](const KvSegment& seg) {
        if (seg.out_pages) {
          EXPECT_EQ(seg.out_layout.idx_bytes, 2);
          EXPECT_EQ(seg.out_layout.ptr_bytes, d_kv * 64 <= 65535 ? 2 : 4);
        }
      }));
      for (KernelPath path : {KernelPath::kSimd, KernelPath::kRef}) {
        for (int n : {1, 65, 201}) check_against_read(f, f, s, n, std::min(n, 3), path);
      }
    }
  }
}

TEST(FusedAttention, EveryFormatMatchesAttentionOverRead) {
  for (KernelPath path : {KernelPath::kSimd, KernelPath::kRef}) {
    for (int hd : {8, 64, 128}) {
      // With GQA the formats whose fused kernels do not unpack a row once for the whole group
      // share a decoded tile instead (attention.cc); without GQA every fused kernel scores and
      // accumulates straight from the codes: both paths.
      for (const HeadShape s : {HeadShape{hd == 8 ? 8 : 4, hd == 8 ? 4 : 2, hd}, HeadShape{2, 2, hd}}) {
        for (const char* f : kFormats) {
          for (int n : {1, 63, 64, 65, 1000}) check_against_read(f, f, s, n, std::min(n, 3), path);
        }
      }
    }
  }
}

// q4_0 / q8_0 values take a GQA group's queries in passes of up to 4 (one or two queries: whole
// blocks per pass, 64 channels with one, and a 32-channel pass for what is left; four: the
// run's weights taken first a vector of tokens at a time, then whole blocks on AVX-512, half
// blocks on the narrower targets): every target, every group size up to 5, head sizes that
// leave a 32-channel remainder, and runs that end inside a vector of tokens (100 = 64 + 36).
TEST(FusedAttention, GgmlValuesInQueryPassesOnEveryTarget) {
  test::for_each_target([] {
    for (int hd : {96, 160}) {
      for (int group = 1; group <= 5; ++group) {
        const HeadShape s{2 * group, 2, hd};
        for (const char* f : {"q8_0", "q4_0"}) {
          for (int n : {1, 65, 100, 130}) check_against_read("f16", f, s, n, 2, KernelPath::kSimd);
        }
      }
    }
  });
}

// q4_0 / q8_0 keys are scored in integers against the query rounded to q8_0 (score_run_q8):
// AVX2's pmaddubsw path and the widening path of the other targets, head sizes of 1-5 blocks,
// GQA groups of 1-5 (query passes of 4, 2 and 1), odd lengths.
TEST(FusedAttention, GgmlKeysScoredInIntegersOnEveryTarget) {
  test::for_each_target([] {
    for (int hd : {32, 96, 160}) {
      for (int group : {1, 3, 5}) {
        const HeadShape s{2 * group, 2, hd};
        for (const char* f : {"q8_0", "q4_0", "q4_0:rot=1"}) {
          for (int n : {1, 63, 130}) check_against_read(f, "f32", s, n, 2, KernelPath::kSimd);
        }
      }
    }
  });
}

// On a CPU with AVX-512 VNNI the q4_0 / q8_0 kernels are compiled for Highway's AVX3_DL target
// too (kernels/cpu/kv_fused_ggml.cc), where a key block's byte products are summed by vpdpbusd
// instead of pmaddubsw + pmaddwd: the same integers in the same lanes, so attention must be bit
// for bit the AVX3 target's (which for_each_target, limited to the targets the tests compile,
// does not reach).
TEST(FusedAttention, GgmlKeysWithVnniEqualAvx3BitForBit) {
  if (!(hwy::SupportedTargets() & HWY_AVX3)) GTEST_SKIP() << "this CPU has no AVX-512: nothing to compare";
  for (int hd : {64, 96, 128}) {
    for (int group : {1, 4}) {
      const HeadShape s{2 * group, 2, hd};
      for (const char* f : {"q8_0", "q4_0"}) {
        SCOPED_TRACE(std::string(f) + " hd " + std::to_string(hd) + " group " + std::to_string(group));
        const int n = 130, n_q = 3;
        Rng rng(uint64_t(hd) * 7 + uint64_t(group));
        Cache c = make(f, f, s, n);
        ASSERT_TRUE(c.cache);
        fill(*c.cache, rng, n, s);
        const Rope rope(hd, hd, 10000.0f);
        const auto q = randn(rng, size_t(n_q) * s.n_heads * hd);
        const AttentionParams p{s.n_heads, s.n_kv_heads, hd, 1.0f / std::sqrt(float(hd)), &rope};
        std::vector<float> best(q.size()), avx3(q.size());
        ExecContext ctx(2, KernelPath::kSimd);
        ASSERT_TRUE(attend(ctx, p, *c.cache, 0, q.data(), n_q, n - n_q, best.data()).ok());
        hwy::SetSupportedTargetsForTest(HWY_AVX3);
        const bool ok = attend(ctx, p, *c.cache, 0, q.data(), n_q, n - n_q, avx3.data()).ok();
        hwy::SetSupportedTargetsForTest(0);
        ASSERT_TRUE(ok);
        for (size_t i = 0; i < best.size(); ++i) ASSERT_TRUE(test::same_bits(best[i], avx3[i])) << i;
      }
    }
  }
}

// KVQuant's pre-RoPE keys: with one query per KV head the rotation is folded into the query
// (AVX-512, head sizes of a multiple of 32), with GQA each key is rotated once for the group;
// every target, code width and both forms, head sizes 64, 96 and 128, odd lengths.
TEST(FusedAttention, KvquantPreRopeKeysOnEveryTarget) {
  test::for_each_target([] {
    for (int hd : {64, 96, 128}) {
      for (int group : {1, 2, 3}) {  // 2-bit keys with 1 or 2 queries per KV head: tokens in lanes
        const HeadShape s{2 * group, 2, hd};
        for (const char* f : {"kvquant-2", "kvquant-3:sinks=0", "kvquant-4:outliers=0"}) {
          for (int n : {1, 63, 130}) check_against_read(f, "f32", s, n, 2, KernelPath::kSimd);
        }
      }
    }
  });
}

// KVQuant's sparse outliers correct a pass of two or four queries in the lanes of one vector
// (kv_outliers-inl.h), one query alone one by one: a query's bits must not depend on its pass.
// Prefill takes the queries of 16 tokens in passes of 4, decode a group of 2 in one pass and a
// group of 3 in passes of 2 and 1; every target (AVX2's sealed lists of one query go 8 entries
// at a time), keys before RoPE (their corrections) and after (values' only), sealed pages and a
// growing one, head sizes 64 and 128.
TEST(FusedAttention, KvquantOutliersInLanesGiveTheSameBitsOnEveryTarget) {
  test::for_each_target([] {
    for (int hd : {64, 128}) {
      for (int group : {2, 3, 4}) {
        const HeadShape s{2 * group, 2, hd};
        for (const char* f : {"kvquant-2", "kvquant-3:sinks=0", "kvquant-4:prerope=0"}) {
          SCOPED_TRACE(std::string(f) + " head_dim " + std::to_string(hd) + " group " + std::to_string(group));
          const int n = 150;  // two sealed pages of 64 tokens and a growing one
          Rng rng(uint64_t(hd + group));
          Cache c = make(f, f, s, n);
          ASSERT_TRUE(c.cache);
          const size_t row = size_t(s.n_kv_heads) * hd, q_row = size_t(s.n_heads) * hd;
          auto k = randn(rng, size_t(n) * row), v = randn(rng, size_t(n) * row), q = randn(rng, size_t(n) * q_row);
          ASSERT_TRUE(c.cache->append(0, n, k.data(), v.data()).ok());
          const Rope rope(hd, hd, 10000.0f);
          const AttentionParams p{s.n_heads, s.n_kv_heads, hd, 0.125f, &rope};
          ExecContext ctx(1);
          std::vector<float> prefill(size_t(n) * q_row), dec(q_row);
          ASSERT_TRUE(attend(ctx, p, *c.cache, 0, q.data(), n, 0, prefill.data()).ok());
          for (int pos : {0, 63, 64, 100, n - 1}) {
            ASSERT_TRUE(attend(ctx, p, *c.cache, 0, &q[size_t(pos) * q_row], 1, pos, dec.data()).ok());
            ASSERT_EQ(0, std::memcmp(dec.data(), &prefill[size_t(pos) * q_row], q_row * 4)) << "position " << pos;
          }
        }
      }
    }
  });
}

// KIVI keys are scored in integers against each block's weighted query rounded to int8
// (ref::uniform_cols_scores_ref): AVX2's pmaddubsw kernel (rows of whole 32-byte vectors, or of
// 16 bytes in pairs), the float kernel of the other targets and of the other row sizes, and the
// scalar specification where neither fits; GQA groups of 1-5, odd lengths, blocks of 16 and 32.
TEST(FusedAttention, KiviKeysScoredInIntegersOnEveryTarget) {
  test::for_each_target([] {
    for (int hd : {32, 64, 96, 128, 256}) {
      for (int group : {1, 3, 5}) {
        const HeadShape s{2 * group, 2, hd};
        for (const char* f : {"kivi-2:g=32:r=32", "kivi-4:g=16:r=32", "kivi-2:g=16:r=16:rot=1"}) {
          for (int n : {1, 47, 63, 130}) check_against_read(f, "f32", s, n, 2, KernelPath::kSimd);
        }
      }
    }
  });
}

// int2 / int4 keys of one group per head are scored in integers against the query rounded to
// int8 (ref::uniform_row_scores_ref): AVX2's pmaddubsw kernel (rows of whole 32-byte vectors, or
// of 16 bytes in pairs), the float kernel of the other targets, and the scalar specification
// where neither fits; GQA groups of 1-5, odd lengths, rotated rows; groups narrower than the head
// (int4:g=32) stay in floats.
TEST(FusedAttention, IntKeysScoredInIntegersOnEveryTarget) {
  test::for_each_target([] {
    for (int hd : {32, 64, 96, 128, 256}) {
      for (int group : {1, 3, 5}) {
        const HeadShape s{2 * group, 2, hd};
        for (const char* f : {"int2", "int4", "int4:rot=1", "int4:g=32", "int2:g=256"}) {
          if (std::string(f).ends_with("g=256") && hd != 256) continue;  // no group wider than the head
          if (std::string(f).find("rot=1") != std::string::npos && (hd & (hd - 1)) != 0) continue;
          for (int n : {1, 47, 63, 130}) check_against_read(f, "f32", s, n, 2, KernelPath::kSimd);
        }
      }
    }
  });
}

// Each key (which 0) or value (1) run of format fmt in layer 0 of a cache of spec f (2 KV heads
// of hd, 261 tokens drawn from rng), cut into runs of 1-64 tokens: fn(run, k), k the run's
// index in its head.
void for_each_store_run(int which, const char* f, int hd, Rng& rng, KvFormat fmt,
                        const std::function<void(const KvRun&, int)>& fn) {
  const HeadShape s{2, 2, hd};
  Cache c = make(f, f, s, 300);
  ASSERT_TRUE(c.cache) << f;
  fill(*c.cache, rng, 261, s);
  KvStoreView views[2];
  c.cache->views(0, &views[0], &views[1]);
  for (int si = 0; si < views[which].n_segments; ++si) {
    const KvSegment& seg = views[which].seg[si];
    for (int h = 0; h < s.n_kv_heads; ++h) {
      for (int i = 0, k = 0; i < seg.n; ++k) {
        const int n = std::min({seg.n - i, seg.page_left(i), 1 + (k * 23) % 64});
        KvRun run;
        seg.run(h, i, n, &run);
        i += n;
        if (run.format != fmt) continue;
        SCOPED_TRACE(std::string(f) + " hd " + std::to_string(hd) + " n " + std::to_string(n));
        fn(run, k);
        if (::testing::Test::HasFatalFailure()) return;
      }
    }
  }
}

void for_each_value_run(const char* f, int hd, Rng& rng, KvFormat fmt, const std::function<void(const KvRun&, int)>& fn) {
  for_each_store_run(1, f, hd, rng, fmt, fn);
}

// Probabilities of n_q queries, ld apart, for run k: a fifth zero, and some runs of vanishing
// ones (far tokens of a long context: weights below kRoundedMaxFloor count as zero, never an
// overflowing 255 / wmax).
std::vector<float> run_probs(Rng& rng, int n_q, size_t ld, int k) {
  std::vector<float> p(size_t(n_q) * ld);
  const float tiny = k % 5 == 0 ? 1e-33f : k % 5 == 1 ? 1e-28f : 1.0f;
  for (auto& x : p) x = rng.uniform() < 0.2 ? 0.0f : tiny * float(rng.uniform());
  return p;
}

// A fused integer kernel's outputs against its reference's, given the same probabilities: the
// same integer sums, float only in the per-run scales and the zero points' sums (a weight
// rounded the other way would move an output by ~1e-3 here).
void expect_outputs_near(const std::vector<float>& a, const std::vector<float>& b) {
  for (size_t j = 0; j < a.size(); ++j) {
    ASSERT_TRUE(std::isfinite(a[j]) && std::isfinite(b[j])) << j;
    ASSERT_NEAR(a[j], b[j], 1e-5f * (1.0f + std::fabs(b[j]))) << j;
  }
}

// 2- and 4-bit per-token groups accumulate in integers (ref::uniform_row_accumulate_ref): given
// the same probabilities the fused kernel's sums are the reference's (exact integers; float only
// in the zero points' sums and d * sum + z): every value run of layer 0 cut into runs of 1-64
// tokens (4-bit sums widened every 16 tokens, 2-bit every 32), weights with zeros, 1 and 3
// queries, head sizes 32 (4 bits: 16-byte rows in pairs), 64 (2 bits: likewise), 128 and 256,
// groups of 16-256 (more than 4 groups per token: the reference only).
TEST(FusedAttention, TwoAndFourBitValuesInIntegersMatchTheirReference) {
  int fused_runs = 0, fused_4bit = 0;
  test::for_each_target([&] {
    for (int hd : {32, 64, 128, 256}) {
      for (const char* f : {"kivi-2:g=32:r=32", "int2", "int2:g=64", "kivi-2:g=16:r=16", "kivi-4:g=32:r=32", "int4",
                            "int4:g=32", "int4:g=64", "kivi-4:g=16:r=16"}) {
        if (hd == 32 && std::string(f).ends_with("g=64")) continue;  // a group wider than the head
        Rng rng(uint64_t(hd) + 3);
        for_each_value_run(f, hd, rng, KvFormat::kUniformRow, [&](const KvRun& run, int k) {
          for (int n_q : {1, 3}) {
            const size_t ld = size_t(run.n) + 3;
            const std::vector<float> p = run_probs(rng, n_q, ld, k);
            auto a = randn(rng, size_t(n_q) * size_t(hd)), b = a;
            const bool fused = cpu::accumulate_run_fused(run, p.data(), n_q, ld, a.data());
            ref::uniform_row_accumulate_ref(run, p.data(), n_q, ld, b.data());
            if (!fused) continue;
            ++fused_runs;
            fused_4bit += run.bits == 4;
            ASSERT_NO_FATAL_FAILURE(expect_outputs_near(a, b));
          }
        });
      }
    }
  });
  if (hwy::SupportedTargets() & HWY_AVX2) {
    EXPECT_GT(fused_runs - fused_4bit, 200);  // AVX2's kernel took them, at both widths
    EXPECT_GT(fused_4bit, 200);
  }
}

// The integer value kernel takes queries in passes (two at a time on AVX-512) that share the
// code bytes: each query's outputs are the bits it gets alone, whatever its pass holds (a query
// whose weights all round to zero, one with no weight at all, one with a NaN that makes its
// outputs NaN), on every target.
TEST(FusedAttention, IntegerValuesGiveTheSameBitsForAnyQueryGrouping) {
  int compared = 0;
  test::for_each_target([&] {
    for (int hd : {64, 128}) {
      for (const char* f : {"kivi-2:g=32:r=32", "int2", "kivi-4:g=32:r=32", "int4", "int4:g=64"}) {
        Rng rng(uint64_t(hd) + 11);
        for_each_value_run(f, hd, rng, KvFormat::kUniformRow, [&](const KvRun& run, int k) {
          constexpr int kQ = 5;
          const size_t ld = size_t(run.n) + 1;
          std::vector<float> p(kQ * ld);
          for (int i = 0; i < kQ; ++i) {
            // Query (k + i) % kQ: 0 normal, 1 below float resolution, 2 none, 3 a NaN, 4 normal.
            const int kind = (k + i) % kQ;
            for (size_t t = 0; t < size_t(run.n); ++t) {
              float x = kind == 2 ? 0.0f : float(rng.uniform()) * (kind == 1 ? 1e-33f : 1.0f);
              if (kind == 3 && t == size_t(run.n) / 2) x = NAN;
              p[size_t(i) * ld + t] = x;
            }
          }
          const auto start = randn(rng, kQ * size_t(hd));
          auto together = start;
          if (!cpu::accumulate_run_fused(run, p.data(), kQ, ld, together.data())) return;
          for (int i = 0; i < kQ; ++i) {
            std::vector<float> alone(start.begin() + i * hd, start.begin() + (i + 1) * hd);
            ASSERT_TRUE(cpu::accumulate_run_fused(run, p.data() + size_t(i) * ld, 1, ld, alone.data()));
            ASSERT_EQ(0, std::memcmp(alone.data(), together.data() + size_t(i) * hd, alone.size() * sizeof(float)))
                << f << " head_dim " << hd << " query " << i << " of kind " << (k + i) % kQ;
          }
          ++compared;
        });
      }
    }
  });
  if (hwy::SupportedTargets() & HWY_AVX2) {
    EXPECT_GT(compared, 100);
  }
}

// The integer kernels' AVX-512 forms (two pairs of rows per 512-bit vector in the value kernels
// of KIVI / int-b and of 2-bit KVQuant, two rows per vector in the KIVI / int-b key kernel) sum
// the same integers in the same order as their AVX2 forms: every key and value run of each
// format, cut into runs of 1-64 tokens, gives AVX2's bits on every AVX-512 target (head sizes 64
// and 128; 1, 3 and 4 queries); 2-bit KVQuant values, AVX3's on AVX3_DL.
TEST(FusedAttention, WideIntegerKernelsEqualAvx2BitForBit) {
  if (!(hwy::SupportedTargets() & HWY_AVX3)) GTEST_SKIP() << "this CPU has no AVX-512: nothing to compare";
  int compared = 0;
  // A CPU that has target and every lesser one (files compiled for fewer targets take their
  // best below it).
  const auto up_to = [](int64_t target) { return hwy::SupportedTargets() & ~(target - 1); };
  // out = kernel(run, n_q) on base and on each better AVX-512 target, from the same start.
  auto compare = [&](int64_t base, const std::vector<float>& start, const std::function<bool(float*)>& kernel) {
    std::vector<float> base_out = start;
    hwy::SetSupportedTargetsForTest(up_to(base));
    const bool fused = kernel(base_out.data());
    hwy::SetSupportedTargetsForTest(0);
    if (!fused) return;
    for (int64_t target : {int64_t(HWY_AVX3), int64_t(HWY_AVX3_DL)}) {
      if (target >= base || !(hwy::SupportedTargets() & target)) continue;
      SCOPED_TRACE(hwy::TargetName(target));
      std::vector<float> wide = start;
      hwy::SetSupportedTargetsForTest(up_to(target));
      const bool fused_wide = kernel(wide.data());
      hwy::SetSupportedTargetsForTest(0);
      ASSERT_TRUE(fused_wide);
      for (size_t i = 0; i < wide.size(); ++i) ASSERT_TRUE(test::same_bits(base_out[i], wide[i])) << i;
    }
    ++compared;
  };
  for (int hd : {64, 128}) {
    for (const char* f : {"kivi-2:g=32:r=32", "kivi-4:g=32:r=32", "int2", "int2:g=64", "int4", "int4:g=32", "kvquant-2",
                          "kvquant-2:sinks=0:outliers=0:norm=8"}) {
      const bool kvquant = std::string(f).starts_with("kvquant");
      // KVQuant's run weights and outliers are summed in lanes of the target's width, so its
      // 512-bit form (AVX3: pmaddubsw, AVX3_DL: vpdpbusd) is compared with itself.
      const int64_t base = kvquant ? HWY_AVX3 : HWY_AVX2;
      Rng rng(uint64_t(hd) + 5);
      for_each_value_run(f, hd, rng, kvquant ? KvFormat::kCodebookRow : KvFormat::kUniformRow, [&](const KvRun& run, int k) {
        for (int n_q : {1, 3, 4}) {
          SCOPED_TRACE("values, queries " + std::to_string(n_q));
          const size_t ld = size_t(run.n) + 3;
          const std::vector<float> p = run_probs(rng, n_q, ld, k);
          compare(base, randn(rng, size_t(n_q) * size_t(hd)),
                  [&](float* out) { return cpu::accumulate_run_fused(run, p.data(), n_q, ld, out); });
          if (::testing::Test::HasFatalFailure()) return;
        }
      });
      if (kvquant) continue;
      const KvFormat key_fmt = std::string(f).starts_with("kivi") ? KvFormat::kUniformCols : KvFormat::kUniformRow;
      for_each_store_run(0, f, hd, rng, key_fmt, [&](const KvRun& run, int) {
        for (int n_q : {1, 3, 4}) {
          SCOPED_TRACE("keys, queries " + std::to_string(n_q));
          const size_t ld = size_t(run.n) + 3;
          const std::vector<float> q = randn(rng, size_t(n_q) * size_t(hd));
          compare(HWY_AVX2, std::vector<float>(size_t(n_q) * ld, 0.0f),
                  [&](float* s) { return cpu::score_run_fused(run, q.data(), n_q, 0.125f, s, ld); });
          if (::testing::Test::HasFatalFailure()) return;
        }
      });
    }
  }
  EXPECT_GT(compared, 500);
}

// A codebook's four levels in int8 steps: within half a step each, never worse in squared error
// than the finest step (kLevelSteps) alone, exact where the levels are evenly spaced; levels
// not finite give NaN, vanishing ones 0, with zero steps either way.
TEST(FusedAttention, CodebookLevelsRoundToTheirBestSteps) {
  int8_t lq[4];
  const float even[4] = {-1.0f, -1.0f / 3, 1.0f / 3, 1.0f};
  EXPECT_FLOAT_EQ(ref::round_levels_ref(even, 4, lq), 1.0f / 63);
  EXPECT_EQ(std::vector<int>(lq, lq + 4), (std::vector<int>{-63, -21, 21, 63}));
  Rng rng(23);
  for (int k = 0; k < 1000; ++k) {
    float l[4];
    for (float& x : l) x = float(rng.normal()) * (k % 3 == 0 ? 1e-3f : 2.0f);
    const float step = ref::round_levels_ref(l, 4, lq);
    float lmax = 0.0f, err = 0.0f, err63 = 0.0f;
    for (const float x : l) lmax = std::max(lmax, std::fabs(x));
    ASSERT_GE(step, lmax / kLevelSteps * 0.999999f);
    ASSERT_LE(step, lmax / (kLevelSteps / 2) * 1.000001f);
    for (int j = 0; j < 4; ++j) {
      ASSERT_LE(std::abs(int(lq[j])), kLevelSteps);
      const float e = l[j] - step * float(lq[j]);
      ASSERT_LE(std::fabs(e), step * 0.5f * 1.0001f) << j;
      const float e63 = l[j] - lmax / kLevelSteps * std::nearbyint(l[j] * kLevelSteps / lmax);
      err += e * e;
      err63 += e63 * e63;
    }
    ASSERT_LE(err, err63 * 1.0001f + 1e-30f);
  }
  const float bad[4] = {0.0f, NAN, 1.0f, 2.0f}, tiny[4] = {1e-31f, 0.0f, -1e-31f, 0.0f};
  EXPECT_TRUE(std::isnan(ref::round_levels_ref(bad, 4, lq)));
  EXPECT_EQ(std::vector<int>(lq, lq + 4), std::vector<int>(4, 0));
  EXPECT_EQ(ref::round_levels_ref(tiny, 4, lq), 0.0f);
  EXPECT_EQ(std::vector<int>(lq, lq + 4), std::vector<int>(4, 0));
}

// 2-bit KVQuant values accumulate in integers (kernels/ref/kv_decode_ref.h): the fused kernel
// against its scalar specification, and the specification against the exact sum of the decoded
// values within what the rounding of the weights and levels may move it by.
TEST(FusedAttention, CodebookTwoBitValuesInIntegersMatchTheirReference) {
  int fused_runs = 0;
  test::for_each_target([&] {
    for (int hd : {64, 128}) {
      for (const char* f : {"kvquant-2", "kvquant-2:sinks=0:outliers=0:norm=8"}) {
        Rng rng(uint64_t(hd) + 11);
        for_each_value_run(f, hd, rng, KvFormat::kCodebookRow, [&](const KvRun& run, int k) {
          ASSERT_EQ(run.bits, 2);
          const int n = run.n;
          std::vector<float> x(size_t(n) * size_t(hd));
          ref::decode_run_ref(run, x.data());
          int8_t lq[4];
          const float lambda = ref::round_levels_ref(run.levels, 4, lq);
          // The store's steps, computed once per codebook, are the specification's.
          ASSERT_NE(run.levels_q, nullptr);
          ASSERT_EQ(run.level_step, lambda);
          ASSERT_EQ(0, std::memcmp(run.levels_q, lq, 4));
          float lmax = 0.0f;
          for (int j = 0; j < 4; ++j) lmax = std::max(lmax, std::fabs(run.levels[j]));
          for (int n_q : {1, 3, 4}) {
            const size_t ld = size_t(n) + 3;
            const std::vector<float> p = run_probs(rng, n_q, ld, k);
            auto a = randn(rng, size_t(n_q) * size_t(hd)), b = a, e = a;
            const bool fused = cpu::accumulate_run_fused(run, p.data(), n_q, ld, a.data());
            ref::codebook_row_accumulate_ref(run, p.data(), n_q, ld, b.data());
            for (int q = 0; q < n_q; ++q) {
              // The exact sum, and the bound of the rounding: a weight a_t = p_t half_t moves
              // by at most d / 2 (d = max a / 255), a level by lambda / 2.
              std::vector<float> wa(static_cast<size_t>(n));
              for (int t = 0; t < n; ++t) {
                const float pt = p[size_t(q) * ld + size_t(t)];
                ref::axpy_ref(pt, &x[size_t(t) * size_t(hd)], &e[size_t(q) * size_t(hd)], hd);
                wa[size_t(t)] = pt * ref::run_norm_ref(run, t).half;
              }
              const float d = *std::max_element(wa.begin(), wa.end()) / 255.0f;
              float bound = 0.0f;
              for (const float at : wa) bound += d / 2 * lmax + at * lambda / 2 + d * lambda / 4;
              for (int c = 0; c < hd; ++c) {
                const size_t j = size_t(q) * size_t(hd) + size_t(c);
                ASSERT_NEAR(b[j], e[j], bound + 1e-5f * (1.0f + std::fabs(e[j]))) << "query " << q << " channel " << c;
              }
            }
            if (!fused) continue;
            ++fused_runs;
            ASSERT_NO_FATAL_FAILURE(expect_outputs_near(a, b));
          }
        });
      }
    }
  });
  if (hwy::SupportedTargets() & HWY_AVX2) {
    EXPECT_GT(fused_runs, 200);  // AVX2's kernel took them
  }
}

// A query that is not finite gives its head a NaN output on every path and format, never a
// silent zero (the SIMD softmax once turned NaN scores into an empty row; q4_0 / q8_0 keys
// cannot round such a query to q8_0 and score it NaN); the other heads are untouched.
TEST(FusedAttention, NonFiniteQueryGivesNaN) {
  const HeadShape s{4, 2, 64};
  for (const char* f : {"f32", "f16", "q8_0", "q4_0", "kivi-2:g=32:r=64", "kvquant-3"}) {
    for (KernelPath path : {KernelPath::kSimd, KernelPath::kRef}) {
      SCOPED_TRACE(std::string(f) + (path == KernelPath::kRef ? " ref" : " simd"));
      Rng rng(5);
      Cache c = make(f, f, s, 70);
      ASSERT_TRUE(c.cache);
      fill(*c.cache, rng, 70, s);
      auto q = randn(rng, size_t(s.n_heads) * s.head_dim);
      q[3] = NAN;  // head 0
      const Rope rope(s.head_dim, s.head_dim, 10000.0f);
      const AttentionParams p{s.n_heads, s.n_kv_heads, s.head_dim, 0.125f, &rope};
      ExecContext ctx(2, path);
      std::vector<float> out(q.size());
      ASSERT_TRUE(attend(ctx, p, *c.cache, 0, q.data(), 1, 69, out.data()).ok());
      for (int h = 0; h < s.n_heads; ++h) {
        for (int d = 0; d < s.head_dim; ++d) {
          const float x = out[size_t(h) * s.head_dim + d];
          if (h == 0) {
            ASSERT_TRUE(std::isnan(x)) << d << " " << x;
          } else {
            ASSERT_TRUE(std::isfinite(x)) << "head " << h;
          }
        }
      }
    }
  }
}

TEST(FusedAttention, MixedKeyAndValueFormats) {
  const HeadShape s{8, 2, 64};
  const std::pair<const char*, const char*> mixes[] = {
      {"kvquant-3", "kivi-2:g=32:r=64"}, {"q4_0", "f16"}, {"f16", "kvquant-2"}, {"kivi-4:g=32:r=64", "q8_0"},
      {"int4", "kvquant-4:outliers=0"}, {"f16", "int2:g=16"}, {"kvquant-3:sinks=70", "f32"},
      {"kvquant-3", "kvquant-3:rot=1"}, {"int4:rot=1", "kivi-2:g=32:r=64:rot=1"}, {"f16", "q8_0:rot=1"}};
  for (const auto& [k, v] : mixes) {
    for (int n : {65, 1000, 1300}) check_against_read(k, v, s, n, 2, KernelPath::kSimd);
  }
}

// Without GQA the packed formats are scored and accumulated by the fused kernels from their
// codes; a rotated store goes through them unchanged (only the query and output turn).
TEST(FusedAttention, RotatedStoresThroughTheFusedKernels) {
  const HeadShape s{2, 2, 64};
  for (const char* f : {"q4_0:rot=1", "int3:rot=1", "int4:g=32:rot=1", "kivi-2:g=32:r=64:rot=1",
                        "kivi-4:g=32:r=64:rot=1", "kvquant-3:prerope=0:rot=1"}) {
    for (int n : {65, 1300}) check_against_read(f, f, s, n, 2, KernelPath::kSimd);
  }
}

// Contexts split into several chunks: any thread count gives the same bits, and for
// batch-invariant caches a batched prefill equals decoding one token at a time.
// Group sizes 4 and 3: the fused kernels take a GQA group's queries in passes (decode: the
// group; prefill: 16 tokens of it), so a group of 3 runs decode as passes of 2 + 1 and prefill
// as passes of 4: each query's arithmetic must not depend on its pass. Group size 1: decode
// takes one query, prefill passes of 4 (KVQuant's keys then in their folded form).
TEST(FusedAttention, SplitKIsThreadInvariantAndPrefillEqualsDecode) {
  const int n = 2 * kAttentionChunk + 77;
  for (const HeadShape s : {HeadShape{8, 2, 64}, HeadShape{6, 2, 64}, HeadShape{4, 2, 64}, HeadShape{2, 2, 64}})
  for (const char* f : {"f16", "q4_0", "q8_0", "int3", "kvquant-3", "kvquant-2:sinks=3", "kvquant-3:norm=8", "kvquant-4",
                        "kivi-2", "int3:rot=1", "kivi-2:rot=1", "int4"}) {
    SCOPED_TRACE(std::string(f) + " group " + std::to_string(s.n_heads / s.n_kv_heads));
    Rng rng(5);
    Cache c = make(f, f, s, n);
    ASSERT_TRUE(c.cache);
    const size_t row = size_t(s.n_kv_heads) * s.head_dim, q_row = size_t(s.n_heads) * s.head_dim;
    auto k = randn(rng, size_t(n) * row), v = randn(rng, size_t(n) * row), q = randn(rng, size_t(n) * q_row);
    const Rope rope(s.head_dim, s.head_dim, 10000.0f);
    const AttentionParams p{s.n_heads, s.n_kv_heads, s.head_dim, 0.125f, &rope};
    // Prefill: every position in one call (queries in blocks, chunks merged in order).
    ASSERT_TRUE(c.cache->append(0, n, k.data(), v.data()).ok());
    std::vector<float> prefill(size_t(n) * q_row);
    ExecContext ctx2(2);
    ASSERT_TRUE(attend(ctx2, p, *c.cache, 0, q.data(), n, 0, prefill.data()).ok());
    // Decode of the last positions with 1, 2 and 3 threads (one task per chunk and head).
    const int tail = 5;
    for (int threads : {1, 2, 3}) {
      ExecContext ctx(threads);
      std::vector<float> dec(q_row);
      for (int pos = n - tail; pos < n; ++pos) {
        ASSERT_TRUE(attend(ctx, p, *c.cache, 0, &q[size_t(pos) * q_row], 1, pos, dec.data()).ok());
        if (c.cache->batch_invariant()) {
          ASSERT_EQ(0, std::memcmp(dec.data(), &prefill[size_t(pos) * q_row], q_row * 4))
              << "decode != prefill at " << pos << ", threads " << threads;
        }
      }
    }
    // Prefill with other thread counts: the same bits.
    for (int threads : {1, 3}) {
      ExecContext ctx(threads);
      std::vector<float> again(prefill.size());
      ASSERT_TRUE(attend(ctx, p, *c.cache, 0, q.data(), n, 0, again.data()).ok());
      ASSERT_EQ(0, std::memcmp(again.data(), prefill.data(), again.size() * 4)) << threads << " threads";
    }
    // Token-by-token growth: a fresh cache fed one token at a time, attended at each step.
    if (c.cache->batch_invariant()) {
      Cache d = make(f, f, s, n);
      ExecContext ctx(2);
      std::vector<float> dec(q_row);
      for (int pos = 0; pos < n; ++pos) {
        ASSERT_TRUE(d.cache->append(0, 1, &k[size_t(pos) * row], &v[size_t(pos) * row]).ok());
        if (pos % 97 != 0 && pos < n - 3) continue;
        ASSERT_TRUE(attend(ctx, p, *d.cache, 0, &q[size_t(pos) * q_row], 1, pos, dec.data()).ok());
        ASSERT_EQ(0, std::memcmp(dec.data(), &prefill[size_t(pos) * q_row], q_row * 4)) << "position " << pos;
      }
    }
  }
}

// A decode task takes a span of KV heads of one chunk, read page by page and head by head
// (attention.cc); the span is chosen from the chunk count and the thread count. Here 10 chunks
// of 8 KV heads give spans of 8, 4, 2 and 1 for 1, 2, 3 and 7 threads: every span must give
// each head the same bits (span 1 is the decode that the test above ties to prefill). Sinks
// and fp16 windows make several segments, whose runs the spans cross.
TEST(FusedAttention, DecodeSpansOfHeadsGiveTheSameBits) {
  const int n = 9 * kAttentionChunk + 77;
  for (const HeadShape s : {HeadShape{8, 8, 64}, HeadShape{16, 8, 64}})
  for (const char* f : {"f16", "q4_0", "q8_0", "kvquant-2", "kvquant-3:sinks=3:r=16", "kvquant-2:sinks=2:r=8", "kivi-2",
                        "int3:rot=1"}) {
    SCOPED_TRACE(std::string(f) + " group " + std::to_string(s.n_heads / s.n_kv_heads));
    Rng rng(9);
    Cache c = make(f, f, s, n);
    ASSERT_TRUE(c.cache);
    const size_t row = size_t(s.n_kv_heads) * s.head_dim, q_row = size_t(s.n_heads) * s.head_dim;
    const auto k = randn(rng, size_t(n) * row), v = randn(rng, size_t(n) * row), q = randn(rng, 3 * q_row);
    ASSERT_TRUE(c.cache->append(0, n, k.data(), v.data()).ok());
    ASSERT_TRUE(c.cache->end_step().ok());
    const Rope rope(s.head_dim, s.head_dim, 10000.0f);
    const AttentionParams p{s.n_heads, s.n_kv_heads, s.head_dim, 0.125f, &rope};
    std::vector<float> first;
    for (int threads : {1, 2, 3, 7}) {
      ExecContext ctx(threads);
      std::vector<float> out(3 * q_row);
      for (int i = 0; i < 3; ++i) {  // the last position, and two earlier ones (a partial last chunk)
        const int pos = n - 1 - 600 * i;
        ASSERT_TRUE(attend(ctx, p, *c.cache, 0, &q[size_t(i) * q_row], 1, pos, &out[size_t(i) * q_row]).ok());
      }
      for (float x : out) ASSERT_TRUE(std::isfinite(x));
      if (first.empty()) {
        first = out;
      } else {
        ASSERT_EQ(0, std::memcmp(out.data(), first.data(), out.size() * 4)) << threads << " threads";
      }
    }
  }
}

// A batched step (attend_batch): sequences of different cache types and lengths, some decoding
// one token over a context split into chunks, some prefilling a block, all in one pass over the
// threads; each sequence's output equals attend() on it alone, bit for bit, for any thread count.
TEST(FusedAttention, BatchedSequencesEqualAttendAlone) {
  const HeadShape s{8, 2, 64};
  struct Seq {
    const char* spec;
    int n, n_q;  // tokens held, queries (the last n_q positions)
  };
  const Seq seqs[] = {{"f16", 2 * kAttentionChunk + 10, 1}, {"kvquant-3", 300, 1}, {"q4_0", 40, 17},
                      {"kivi-2", kAttentionChunk + 5, 3},     {"int3", 1, 1},       {"kvquant-2:sinks=3", 1500, 20}};
  const Rope rope(s.head_dim, s.head_dim, 10000.0f);
  const AttentionParams p{s.n_heads, s.n_kv_heads, s.head_dim, 0.125f, &rope};
  const size_t q_row = size_t(s.n_heads) * s.head_dim;
  Rng rng(11);
  std::vector<Cache> caches;
  std::vector<std::vector<float>> qs, alone;
  for (const Seq& q : seqs) {
    caches.push_back(make(q.spec, q.spec, s, q.n));
    ASSERT_TRUE(caches.back().cache) << q.spec;
    fill(*caches.back().cache, rng, q.n, s);
    qs.push_back(randn(rng, size_t(q.n_q) * q_row));
    alone.emplace_back(qs.back().size());
    ExecContext ctx(1);
    ASSERT_TRUE(attend(ctx, p, *caches.back().cache, 0, qs.back().data(), q.n_q, q.n - q.n_q, alone.back().data()).ok());
  }
  for (int threads : {1, 2, 3}) {
    std::vector<std::vector<float>> outs;
    std::vector<AttendItem> items;
    for (size_t i = 0; i < std::size(seqs); ++i) {
      outs.emplace_back(alone[i].size(), 7.0f);
      items.push_back({caches[i].cache.get(), qs[i].data(), seqs[i].n_q, seqs[i].n - seqs[i].n_q, outs[i].data()});
    }
    ExecContext ctx(threads);
    ASSERT_TRUE(attend_batch(ctx, p, 0, items).ok());
    for (size_t i = 0; i < std::size(seqs); ++i) {
      ASSERT_EQ(0, std::memcmp(outs[i].data(), alone[i].data(), alone[i].size() * 4))
          << seqs[i].spec << ", " << threads << " threads";
    }
  }
  // An item the plan refuses names itself: a pre-RoPE cache without a Rope.
  const AttentionParams no_rope{s.n_heads, s.n_kv_heads, s.head_dim, 0.125f, nullptr};
  std::vector<float> o0(q_row), o1(q_row);
  const AttendItem two[] = {{caches[0].cache.get(), qs[0].data(), 1, seqs[0].n - 1, o0.data()},
                            {caches[1].cache.get(), qs[1].data(), 1, seqs[1].n - 1, o1.data()}};
  ExecContext ctx(2);
  int failed = -2;
  const Status st = attend_batch(ctx, no_rope, 0, two, &failed);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(failed, 1) << st.to_string();
}

}  // namespace
}  // namespace kvq
