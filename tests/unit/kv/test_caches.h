// SPDX-License-Identifier: MIT
// Caches of every spec at one small GQA shape, with stand-in KVQuant calibration, for the kv
// tests.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "base/fp16.h"
#include "attention/attention.h"
#include "kernels/cpu/ops.h"
#include "kernels/ref/hadamard_ref.h"
#include "kernels/rope.h"
#include "kernels/ref/kv_decode_ref.h"
#include "kernels/ref/ops_ref.h"
#include "kv/cache_spec.h"
#include "kv/kv_view.h"
#include "quant/codebook.h"
#include "quant/ggml_blocks.h"

namespace kvq {
namespace test {

// A query [hd] as attention scores it against keys of k_spec (kv/kv_view.h): rounded to f16
// for f16 keys, and for q4_0 / q8_0 keys to q8_0 blocks (in the rotated basis of a rot=1
// store, then turned back), as llama.cpp does; unchanged for every other format.
inline void round_query_for_keys(const std::string& k_spec, float* q, int hd) {
  if (k_spec == "f16") {
    for (int d = 0; d < hd; ++d) q[d] = round_to_f16(q[d]);
    return;
  }
  if (k_spec.rfind("q4_0", 0) != 0 && k_spec.rfind("q8_0", 0) != 0) return;
  std::vector<float> signs;
  if (k_spec.find("rot=1") != std::string::npos) {
    signs.resize(size_t(hd));
    hadamard_signs(hd, signs.data());
    ref::hadamard_rows_ref(q, 1, hd, signs.data(), false);
  }
  std::vector<BlockQ8_0> blocks(size_t(hd / kQK8_0));
  quantize_row_q8_0_ref(q, blocks.data(), hd);
  dequantize_row_q8_0_ref(blocks.data(), q, hd);
  if (!signs.empty()) ref::hadamard_rows_ref(q, 1, hd, signs.data(), true);
}

// Attention of query q [hd] (rounded by round_query_for_keys) over the keys kd and values vd
// [n_kv][hd] that read() gave for KV head kvh of layer il, its scores as the store's keys are
// scored: q . k, except KIVI's key blocks (uniform-cols runs, kernels/ref/kv_decode_ref.h), scored
// against each block's weighted query q * s rounded to int8 (ref::round_weighted_query_ref), and
// int2 / int4 keys of one group per head against q rounded to int8 (key_query_in_integers), in
// the stored basis (rot=1: q and the keys turned by the store's Hadamard transform, q by the
// transform of `path`, as attention turns it, so that a rounding sees the same w), the codes
// recovered from the keys read; its output sum_t p_t v_t, except 2- and 4-bit per-token groups
// (uniform-row runs at bits 2 and 4), whose weights p_t s_tg are rounded to uint8 per run
// (ref::round_weights_u8_ref), likewise in the stored basis, and 2-bit KVQuant values
// (codebook-row runs at bits 2, ref::codebook_row_accumulate_ref). *slack (when given): what a
// SIMD path may differ by beyond float reassociation: its scores (lane sums) and softmax
// (kernels/cpu/ops.h) move a probability by up to ~1e-5 of itself, enough to round a weight
// within 0.01 steps of a rounding boundary the other way, moving the output by at most
// (2^bits - 1) d (the largest code; KVQuant: kLevelSteps d lambda) for each such weight; the reference path's softmax is
// the oracle's, so it needs none unless its keys are rotated at attention time (pre-RoPE).
inline void attention_head_as_stored(const KvCache& cache, int il, int kvh, const float* q, const float* kd,
                                     const float* vd, float* out, int n_kv, int hd, float scale,
                                     KernelPath path = KernelPath::kRef, float* slack = nullptr) {
  if (slack) *slack = 0.0f;
  KvStoreView kv, vv;
  cache.views(il, &kv, &vv);
  std::vector<float> s(static_cast<size_t>(n_kv)), qr(q, q + hd), kr(static_cast<size_t>(hd)), signs;
  if (kv.rotated || vv.rotated) {
    signs.resize(size_t(hd));
    hadamard_signs(hd, signs.data());
  }
  if (kv.rotated && path == KernelPath::kSimd) cpu::hadamard_rows(qr.data(), 1, hd, signs.data(), false);
  if (kv.rotated && path == KernelPath::kRef) ref::hadamard_rows_ref(qr.data(), 1, hd, signs.data(), false);
  for (int t = 0; t < n_kv; ++t) s[size_t(t)] = ref::dot_ref(q, kd + size_t(t) * size_t(hd), hd);
  std::vector<float> w(static_cast<size_t>(hd));
  std::vector<int8_t> w8(static_cast<size_t>(hd));
  for (int si = 0; si < kv.n_segments; ++si) {
    const KvSegment& seg = kv.seg[si];
    for (int i = 0; i < seg.n && seg.t0 + i < n_kv;) {
      const int cnt = std::min(seg.n - i, seg.page_left(i));
      KvRun r;
      seg.run(kvh, i, cnt, &r);
      if (r.format == KvFormat::kUniformCols) {
        const auto* sc = reinterpret_cast<const f16_t*>(r.rows + r.scales_off);
        const auto* zc = reinterpret_cast<const f16_t*>(r.rows + r.zeros_off);
        float bias = 0.0f;
        for (int c = 0; c < hd; ++c) {
          w[size_t(c)] = qr[size_t(c)] * f16_to_f32(sc[c]);
          bias += qr[size_t(c)] * f16_to_f32(zc[c]);
        }
        const float d = ref::round_weighted_query_ref(w.data(), hd, w8.data());
        for (int j = 0; j < cnt && seg.t0 + i + j < n_kv; ++j) {
          const int t = seg.t0 + i + j;
          kr.assign(kd + size_t(t) * size_t(hd), kd + size_t(t + 1) * size_t(hd));
          if (kv.rotated) ref::hadamard_rows_ref(kr.data(), 1, hd, signs.data(), false);
          int32_t sum = 0;
          for (int c = 0; c < hd; ++c) {
            const float sc_c = f16_to_f32(sc[c]);  // a constant channel (scale 0) holds code 0
            const float code = sc_c == 0.0f ? 0.0f : std::nearbyint((kr[size_t(c)] - f16_to_f32(zc[c])) / sc_c);
            sum += int32_t(w8[size_t(c)]) * int32_t(code);
          }
          s[size_t(t)] = d * float(sum) + bias;
        }
      }
      if (r.format == KvFormat::kUniformRow && key_query_in_integers(r)) {
        // int2 / int4 keys of one group per head: against the query rounded to int8
        // (ref::uniform_row_scores_ref), each token's codes recovered from its keys as read.
        float qsum = 0.0f;
        for (int c = 0; c < hd; ++c) qsum += qr[size_t(c)];
        const float d = ref::round_weighted_query_ref(qr.data(), hd, w8.data());
        for (int j = 0; j < cnt && seg.t0 + i + j < n_kv; ++j) {
          const int t = seg.t0 + i + j;
          const uint8_t* meta = r.rows + size_t(j) * r.meta_stride;
          const float st = f16_to_f32(reinterpret_cast<const f16_t*>(meta + r.scales_off)[0]);
          const float zt = f16_to_f32(reinterpret_cast<const f16_t*>(meta + r.zeros_off)[0]);
          kr.assign(kd + size_t(t) * size_t(hd), kd + size_t(t + 1) * size_t(hd));
          if (kv.rotated) ref::hadamard_rows_ref(kr.data(), 1, hd, signs.data(), false);
          int32_t sum = 0;
          for (int c = 0; c < hd; ++c) {
            const float code = st == 0.0f ? 0.0f : std::nearbyint((kr[size_t(c)] - zt) / st);
            sum += int32_t(w8[size_t(c)]) * int32_t(code);
          }
          s[size_t(t)] = std::fma(d * float(sum), st, zt * qsum);
        }
      }
      i += cnt;
    }
  }
  for (auto& x : s) x *= scale;
  ref::softmax_ref(s.data(), n_kv);
  // Values: p_t v_t, except 2- and 4-bit per-token groups (uniform-row runs), whose weights
  // p_t s_tg are rounded to uint8 per run (ref::round_weights_u8_ref), in the stored basis, and
  // 2-bit KVQuant values (codebook-row runs at bits 2), weights and levels rounded as
  // ref::codebook_row_accumulate_ref specifies.
  std::vector<float> vrows(vd, vd + size_t(n_kv) * size_t(hd)), o(static_cast<size_t>(hd), 0.0f);
  if (vv.rotated) ref::hadamard_rows_ref(vrows.data(), n_kv, hd, signs.data(), false);
  std::vector<bool> done(static_cast<size_t>(n_kv), false);
  // Runs as attention forms them (attention.cc, for_each_run): consecutive from the first token of
  // each attention chunk in the segment, at most Rope::kKeyOffsets tokens inside one page.
  for (int si = 0; si < vv.n_segments; ++si) {
    const KvSegment& seg = vv.seg[si];
    for (int c0 = seg.t0 / kAttentionChunk * kAttentionChunk; c0 < std::min(seg.t0 + seg.n, n_kv); c0 += kAttentionChunk) {
      const int lo = std::max(c0, seg.t0), hi = std::min({c0 + kAttentionChunk, seg.t0 + seg.n, n_kv});
      for (int t = lo; t < hi;) {
        const int i = t - seg.t0, cnt = std::min({hi - t, seg.page_left(i), Rope::kKeyOffsets});
        KvRun r;
        seg.run(kvh, i, cnt, &r);
      if (r.format == KvFormat::kUniformRow && value_weights_in_integers(r)) {
        const int g = std::min(r.group, hd), n_groups = hd / g;
        std::vector<float> wt(size_t(cnt) * size_t(n_groups)), zsum(size_t(n_groups), 0.0f);
        std::vector<uint8_t> wt8(wt.size());
        auto scale_of = [&](int j, int k) {
          return f16_to_f32(reinterpret_cast<const f16_t*>(r.rows + size_t(j) * r.meta_stride + r.scales_off)[k]);
        };
        auto zero_of = [&](int j, int k) {
          return f16_to_f32(reinterpret_cast<const f16_t*>(r.rows + size_t(j) * r.meta_stride + r.zeros_off)[k]);
        };
        for (int j = 0; j < cnt; ++j) {
          const float pt = s[size_t(seg.t0 + i + j)];
          for (int k = 0; k < n_groups; ++k) {
            wt[size_t(j * n_groups + k)] = pt == 0.0f ? 0.0f : pt * scale_of(j, k);
            if (pt != 0.0f) zsum[size_t(k)] += pt * zero_of(j, k);
          }
        }
        const float d = ref::round_weights_u8_ref(wt.data(), int(wt.size()), wt8.data());
        if (slack && d > 0.0f) {
          for (const float x : wt) {
            const float u = x / d;  // a weight this close to a rounding boundary may round either way
            if (std::fabs(u - std::floor(u) - 0.5f) < 1e-2f) *slack += float((1 << r.bits) - 1) * d;
          }
        }
        for (int c = 0; c < hd; ++c) {
          int32_t sum = 0;
          for (int j = 0; j < cnt; ++j) {
            const float sc_c = scale_of(j, c / g);
            const float x = vrows[size_t(seg.t0 + i + j) * size_t(hd) + size_t(c)];
            const float code = sc_c == 0.0f ? 0.0f : std::nearbyint((x - zero_of(j, c / g)) / sc_c);
            sum += int32_t(wt8[size_t(j * n_groups + c / g)]) * int32_t(code);
          }
          o[size_t(c)] += d * float(sum) + zsum[size_t(c / g)];
        }
        for (int j = 0; j < cnt; ++j) done[size_t(seg.t0 + i + j)] = true;
      }
      if (r.format == KvFormat::kCodebookRow && r.bits == 2) {
        // 2-bit KVQuant values: their specification on the run as stored, with the oracle's
        // probabilities (its rounding checked against the exact sum in fused_attention_test).
        const float* pt = &s[size_t(seg.t0 + i)];
        ref::codebook_row_accumulate_ref(r, pt, 1, size_t(cnt), o.data());
        if (slack) {
          std::vector<float> wt(static_cast<size_t>(cnt));
          for (int j = 0; j < cnt; ++j) wt[size_t(j)] = pt[j] == 0.0f ? 0.0f : pt[j] * ref::run_norm_ref(r, j).half;
          std::vector<uint8_t> wt8(wt.size());
          int8_t lq[4];
          const float d = ref::round_weights_u8_ref(wt.data(), cnt, wt8.data());
          const float dl = d * ref::round_levels_ref(r.levels, 4, lq);
          for (const float x : wt) {
            const float u = d > 0.0f ? x / d : 0.0f;
            if (d > 0.0f && std::fabs(u - std::floor(u) - 0.5f) < 1e-2f) *slack += float(kLevelSteps) * dl;
          }
        }
        for (int j = 0; j < cnt; ++j) done[size_t(seg.t0 + i + j)] = true;
      }
      t += cnt;
      }
    }
  }
  for (int t = 0; t < n_kv; ++t) {
    if (!done[size_t(t)]) ref::axpy_ref(s[size_t(t)], &vrows[size_t(t) * size_t(hd)], o.data(), hd);
  }
  if (vv.rotated) {
    ref::hadamard_rows_ref(o.data(), 1, hd, signs.data(), true);
  }
  std::copy(o.begin(), o.end(), out);
}

// GQA 8 query heads on 2 kv heads, head_dim 64, 3 layers.
constexpr int kHeads = 8, kKvHeads = 2, kHd = 64, kLayers = 3;

// Per-layer widths of kvquant-mixed (bits 0) in these tests: every width at least once per side.
constexpr int kMixedKeyBits[kLayers] = {2, 3, 4}, kMixedValueBits[kLayers] = {4, 2, 3};

inline KvquantParams dummy_params(int bits, bool keys, int kv_heads = kKvHeads) {
  KvquantParams p;
  for (int il = 0; il < kLayers; ++il) {
    KvquantLayerParams lp;
    lp.codebook = make_nf_codebook(bits != 0 ? bits : keys ? kMixedKeyBits[il] : kMixedValueBits[il]);
    if (keys) {
      lp.upper.assign(size_t(kv_heads * kHd), 2.5f);
      lp.lower.assign(size_t(kv_heads * kHd), -2.0f);
    }
    p.layers.push_back(lp);
  }
  return p;
}

struct Built {
  std::unique_ptr<KvCache> cache;
  KvquantParams k, v;
};

// spec_text: one spec, or "K=spec,V=spec". Storage from `pool` when given (kv/page_pool.h);
// kv_heads other than kKvHeads for other vector lengths (e.g. the wide outlier layout).
inline Built build(const std::string& spec_text, int n_ctx, std::shared_ptr<PagePool> pool = nullptr,
                   int kv_heads = kKvHeads) {
  Built b;
  const size_t comma = spec_text.find(",V=");
  const CacheSpec spec = spec_text.rfind("K=", 0) == 0 && comma != std::string::npos
                             ? parse_cache_spec(spec_text.substr(2, comma - 2), spec_text.substr(comma + 3)).value()
                             : parse_cache_spec(spec_text).value();
  if (spec.k.kind == TensorKind::kKvquant) b.k = dummy_params(spec.k.bits, true, kv_heads);
  if (spec.v.kind == TensorKind::kKvquant) b.v = dummy_params(spec.v.bits, false, kv_heads);
  auto c = make_cache(spec, {kLayers, kv_heads, kHd, n_ctx}, {&b.k, &b.v}, std::move(pool));
  EXPECT_TRUE(c.ok()) << spec_text << ": " << c.status().to_string();
  if (c.ok()) b.cache = std::move(*c);
  return b;
}

}  // namespace test
}  // namespace kvq
