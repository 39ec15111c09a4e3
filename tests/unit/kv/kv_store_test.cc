// SPDX-License-Identifier: MIT
// Quantized KV stores: round trips, KIVI windows, sinks, outliers, bytes, bad specs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "base/rng.h"
#include "kv/cache_spec.h"
#include "kv/composite_cache.h"
#include "kv/kivi_store.h"
#include "kv/kvquant_store.h"
#include "quant/bits_accounting.h"
#include "quant/codebook.h"

namespace kvq {
namespace {

PagePool* test_pool() {
  static PagePool pool;
  return &pool;
}

constexpr KvCacheShape kShape{2, 2, 64, 512};  // n_layers, n_kv_heads, head_dim, n_ctx

std::vector<float> laplace_rows(int n, size_t row, uint64_t seed, float outlier_scale = 0.0f) {
  Rng rng(seed);
  std::vector<float> x(size_t(n) * row);
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = float(rng.laplace());
    // A few large channels, as real keys have (KVQuant §2).
    if (outlier_scale > 0 && (i % row) % 17 == 3) x[i] *= outlier_scale;
  }
  return x;
}

// Mean squared error of reading back every token of every head of layer il.
double read_mse(const KvStore& s, int il, const std::vector<float>& x, int n) {
  const int hd = s.shape().head_dim;
  std::vector<float> out(size_t(n) * hd);
  double se = 0;
  for (int h = 0; h < s.shape().n_kv_heads; ++h) {
    s.read(il, h, 0, n, out.data());
    for (int t = 0; t < n; ++t) {
      for (int d = 0; d < hd; ++d) {
        const double e = out[size_t(t) * hd + d] - x[size_t(t) * s.shape().row_values() + size_t(h) * hd + d];
        se += e * e;
      }
    }
  }
  return se / double(size_t(n) * s.shape().row_values());
}

KvquantParams params_for(const std::vector<float>& x, int n, int bits, double frac, KvRole role) {
  const size_t row = kShape.row_values();
  KvquantParams p;
  for (int il = 0; il < kShape.n_layers; ++il) {
    KvquantLayerParams lp;
    lp.codebook = make_nf_codebook(bits);
    if (role == KvRole::kKey) {
      lp.upper.resize(row);
      lp.lower.resize(row);
      for (size_t c = 0; c < row; ++c) {
        std::vector<float> col;
        for (int t = 0; t < n; ++t) col.push_back(x[size_t(t) * row + c]);
        std::sort(col.begin(), col.end());
        const size_t cut = size_t(double(n) * frac / 2.0);
        lp.lower[c] = col[cut];
        lp.upper[c] = col[size_t(n) - 1 - cut];
      }
    }
    p.layers.push_back(lp);
  }
  return p;
}

TEST(KvquantStore, OutliersReduceErrorOnHeavyTails) {
  const int n = 256;
  for (KvRole role : {KvRole::kKey, KvRole::kValue}) {
    const auto x = laplace_rows(n, kShape.row_values(), 1, 8.0f);
    double mse[2];
    for (int with : {0, 1}) {
      KvquantOptions o;
      o.bits = 3;
      o.codebook = CodebookKind::kNf;
      o.sinks = 0;
      o.outliers = with ? 0.02 : 0.0;
      auto s = KvquantStore::make(kShape, test_pool(), role, o, params_for(x, n, 3, o.outliers, role));
      ASSERT_TRUE(s.ok()) << s.status().to_string();
      ASSERT_TRUE((*s)->append(0, n, x.data()).ok());
      mse[with] = read_mse(**s, 0, x, n);
    }
    EXPECT_LT(mse[1], mse[0]) << (role == KvRole::kKey ? "keys" : "values");
  }
}

// A sparse outlier is stored as its fp16 correction to the dense decode (x - dense): read back,
// it is x to within that correction's rounding, |x - dense| 2^-11, at most 2^-10 |x| for an
// outlier (the dense decode lies within the inliers' range). Values: each token's largest and
// smallest value are outliers; keys: every value well beyond its channel's thresholds.
TEST(KvquantStore, OutliersReadBackAsTheirValues) {
  const int n = 100;
  const size_t row = kShape.row_values(), hd = size_t(kShape.head_dim);
  for (KvRole role : {KvRole::kKey, KvRole::kValue}) {
    const auto x = laplace_rows(n, row, 3, 8.0f);
    KvquantOptions o;
    o.bits = 2;
    o.sinks = 0;
    o.outliers = 0.02;
    const KvquantParams params = params_for(x, n, 2, o.outliers, role);
    auto s = KvquantStore::make(kShape, test_pool(), role, o, params).value();
    ASSERT_TRUE(s->append(0, n / 2, x.data()).ok());
    ASSERT_TRUE(s->end_step().ok());
    for (int t = n / 2; t < n; ++t) ASSERT_TRUE(s->append(0, 1, &x[size_t(t) * row]).ok());
    std::vector<float> out(size_t(n) * hd);
    size_t checked = 0;
    for (int h = 0; h < kShape.n_kv_heads; ++h) {
      s->read(0, h, 0, n, out.data());
      for (int t = 0; t < n; ++t) {
        const float* xr = &x[size_t(t) * row];
        const float mx = *std::max_element(xr, xr + row), mn = *std::min_element(xr, xr + row);
        for (size_t d = 0; d < hd; ++d) {
          const size_t c = size_t(h) * hd + d;
          const float v = xr[c];
          const bool outlier = role == KvRole::kValue
                                   ? v == mx || v == mn
                                   : v > params.layers[0].upper[c] + 0.05f * std::fabs(params.layers[0].upper[c]) ||
                                         v < params.layers[0].lower[c] - 0.05f * std::fabs(params.layers[0].lower[c]);
          if (!outlier) continue;
          ++checked;
          ASSERT_NEAR(out[size_t(t) * hd + d], v, std::ldexp(std::fabs(v), -10))
              << (role == KvRole::kKey ? "keys" : "values") << " token " << t << " channel " << c;
        }
      }
    }
    EXPECT_GE(checked, size_t(n)) << (role == KvRole::kKey ? "keys" : "values");
  }
}

}  // namespace
}  // namespace kvq

namespace kvq {
namespace {

std::unique_ptr<KvStore> kivi(KvRole role, int r) {
  auto s = KiviStore::make(kShape, test_pool(), role, 2, 8, r);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return std::move(*s);
}

// KIVI §1.5: keys are flushed R at a time after the step that fills the window, values slide
// one token at a time and the window holds R (+1 during a step). Checked at R-1, R, R+1, ...
TEST(KiviStore, WindowBoundariesInDecode) {
  const int R = 16;
  const auto x = laplace_rows(3 * R + 2, kShape.row_values(), 2);
  auto keys = kivi(KvRole::kKey, R);
  auto vals = kivi(KvRole::kValue, R);
  auto* k = static_cast<KiviStore*>(keys.get());
  auto* v = static_cast<KiviStore*>(vals.get());
  for (int t = 1; t <= 3 * R + 2; ++t) {
    ASSERT_TRUE(k->append(0, 1, &x[size_t(t - 1) * kShape.row_values()]).ok());
    ASSERT_TRUE(v->append(0, 1, &x[size_t(t - 1) * kShape.row_values()]).ok());
    EXPECT_EQ(k->n_window(0), (t - 1) % R + 1) << "keys after " << t << " tokens";
    EXPECT_EQ(v->n_window(0), std::min(t, R + 1)) << "values after " << t << " tokens";
    EXPECT_EQ(k->n_tokens(0), t);
    EXPECT_EQ(v->n_tokens(0), t);
  }
  // Window tokens read back as their fp16 values; quantized ones within the 2-bit step.
  std::vector<float> out(size_t(3 * R + 2) * kShape.head_dim);
  v->read(0, 1, 0, 3 * R + 2, out.data());
  const int nq = 3 * R + 2 - v->n_window(0);
  for (int t = 0; t < 3 * R + 2; ++t) {
    for (int d = 0; d < kShape.head_dim; ++d) {
      const float want = x[size_t(t) * kShape.row_values() + kShape.head_dim + d];
      const float got = out[size_t(t) * kShape.head_dim + d];
      if (t >= nq) {
        ASSERT_EQ(got, round_to_f16(want));
      } else {
        ASSERT_NEAR(got, want, 12.0f);  // 2-bit groups of 8 Laplace values: step < range/3
      }
    }
  }
}

// A KIVI window refuses what fp16 cannot hold (it would keep it as Inf), before anything changes.
TEST(KiviStore, WindowRefusesValuesBeyondFp16) {
  for (KvRole role : {KvRole::kKey, KvRole::kValue}) {
    auto s = kivi(role, 16);
    std::vector<float> x(kShape.row_values(), 0.5f);
    ASSERT_TRUE(s->append(0, 1, x.data()).ok());
    for (float bad : {1e5f, NAN}) {
      x[7] = bad;
      const Status st = s->append(0, 1, x.data());
      EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
      EXPECT_NE(st.message().find("kivi K/V"), std::string::npos) << st.message();
      EXPECT_EQ(s->n_tokens(0), 1);
    }
  }
}

// A batched prefill of T tokens is attended in fp16 and settled at the next append:
// T - (T mod R) keys and T - R values quantized (kivi.md §1.4).
TEST(KiviStore, PrefillThenSettle) {
  const int R = 16;
  for (int T : {R - 1, R, R + 1, 3 * R + 5}) {
    const auto x = laplace_rows(T + 1, kShape.row_values(), 3);
    auto keys = kivi(KvRole::kKey, R);
    auto vals = kivi(KvRole::kValue, R);
    auto* k = static_cast<KiviStore*>(keys.get());
    auto* v = static_cast<KiviStore*>(vals.get());
    ASSERT_TRUE(k->append(0, T, x.data()).ok());
    ASSERT_TRUE(v->append(0, T, x.data()).ok());
    EXPECT_EQ(k->n_window(0), T);
    EXPECT_EQ(v->n_window(0), T);
    ASSERT_TRUE(k->append(0, 1, &x[size_t(T) * kShape.row_values()]).ok());
    ASSERT_TRUE(v->append(0, 1, &x[size_t(T) * kShape.row_values()]).ok());
    EXPECT_EQ(k->n_window(0), T % R + 1) << T;
    EXPECT_EQ(v->n_window(0), std::min(T, R) + 1) << T;
  }
}

TEST(KiviStore, EagerQuantizesEverything) {
  auto vals = kivi(KvRole::kValue, 16);
  auto keys = kivi(KvRole::kKey, 16);
  vals->set_eager(true);
  keys->set_eager(true);
  const auto x = laplace_rows(21, kShape.row_values(), 4);
  ASSERT_TRUE(vals->append(0, 21, x.data()).ok());
  ASSERT_TRUE(keys->append(0, 21, x.data()).ok());
  EXPECT_EQ(static_cast<KiviStore*>(vals.get())->n_window(0), 0);
  EXPECT_EQ(static_cast<KiviStore*>(keys.get())->n_window(0), 21 % 8);  // a partial group waits
}

TEST(KvquantStore, SinksAreExactFp16) {
  const int n = 40;
  const auto x = laplace_rows(n, kShape.row_values(), 5, 4.0f);
  KvquantOptions o;
  o.bits = 2;
  o.sinks = 3;
  o.codebook = CodebookKind::kNf;
  for (KvRole role : {KvRole::kKey, KvRole::kValue}) {
    auto s = KvquantStore::make(kShape, test_pool(), role, o, params_for(x, n, 2, o.outliers, role)).value();
    ASSERT_TRUE(s->append(0, 2, x.data()).ok());
    ASSERT_TRUE(s->append(0, n - 2, &x[2 * kShape.row_values()]).ok());
    std::vector<float> out(size_t(n) * kShape.head_dim);
    s->read(0, 1, 0, n, out.data());
    for (int t = 0; t < 3; ++t) {
      for (int d = 0; d < kShape.head_dim; ++d) {
        ASSERT_EQ(out[size_t(t) * kShape.head_dim + d],
                  round_to_f16(x[size_t(t) * kShape.row_values() + kShape.head_dim + d]));
      }
    }
    ASSERT_TRUE(s->truncate(2).ok());
    EXPECT_EQ(s->n_tokens(0), 2);
  }
}

// Values keep exactly outliers_per_side top and bottom entries per token (§3 deployment).
TEST(KvquantStore, ExactValueOutlierCounts) {
  const int n = 50;
  const auto x = laplace_rows(n, kShape.row_values(), 6);
  KvquantOptions o;
  o.bits = 3;
  o.sinks = 1;
  o.outliers = 0.05;
  auto s = KvquantStore::make(kShape, test_pool(), KvRole::kValue, o, params_for(x, n, 3, 0, KvRole::kValue)).value();
  ASSERT_TRUE(s->append(0, n, x.data()).ok());
  const size_t k = outliers_per_side(kShape.row_values(), 0.05);
  EXPECT_EQ(static_cast<KvquantStore*>(s.get())->n_outliers(), size_t(n - 1) * 2 * k);
}

// norm=8 (NormParams8 per value token): the store's values read back as the fp16 form would
// with the same decoded norm, within half a codebook gap of the inliers; a token whose range no
// 8-bit norm holds is an error naming the option, and leaves the store as it was.
TEST(KvquantStore, Norm8ValuesAndTheirLimit) {
  const int n = 64;  // one whole page: once sealed (end_step), its outlier block is what bytes_for counts
  const auto x = laplace_rows(n, kShape.row_values(), 8);
  for (double outliers : {0.0, 0.02}) {
    KvquantOptions o;
    o.bits = 3;
    o.sinks = 0;
    o.outliers = outliers;
    o.norm_bits = 8;
    auto s = KvquantStore::make(kShape, test_pool(), KvRole::kValue, o, params_for(x, n, 3, 0, KvRole::kValue)).value();
    EXPECT_NE(s->name().find(":norm=8"), std::string::npos) << s->name();
    for (int il = 0; il < kShape.n_layers; ++il) ASSERT_TRUE(s->append(il, n, x.data()).ok());
    ASSERT_TRUE(s->end_step().ok());
    const size_t bytes = s->bytes_used();
    EXPECT_EQ(bytes, s->bytes_for(n));
    std::vector<float> big(kShape.row_values(), 1.0f);
    // More extremes than the outliers take (2 per side at 2%): the inliers span +-900.
    for (int i = 0; i < 10; ++i) big[size_t(i)] = i % 2 ? -900.0f : 900.0f;
    const Status st = s->append(0, 1, big.data());
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("norm=16"), std::string::npos) << st.message();
    EXPECT_EQ(s->n_tokens(0), n);
    EXPECT_EQ(s->bytes_used(), bytes);
  }
}

// r=N: the newest N tokens past the sinks stay fp16 and are quantized as they leave, at the end
// of a step. Each token then reads back exactly as a store without a window reads the same token
// rounded to fp16 (what the window held); the allocation is what bytes_for and the bits
// accounting say after every step; truncation and a refused append keep the counts.
TEST(KvquantStore, WindowHoldsTheNewestTokensInFp16) {
  const int n = 150, r = 16, row = int(kShape.row_values()), hd = kShape.head_dim;
  const auto x = laplace_rows(n, size_t(row), 9, 4.0f);
  std::vector<float> x16(x.size());
  for (size_t i = 0; i < x.size(); ++i) x16[i] = round_to_f16(x[i]);
  for (KvRole role : {KvRole::kKey, KvRole::kValue}) {
    for (double outliers : {0.0, 0.02}) {
      KvquantOptions o;
      o.bits = 3;
      o.sinks = 1;
      o.outliers = outliers;
      const KvquantParams params = params_for(x, n, 3, 0.02, role);
      auto plain = KvquantStore::make(kShape, test_pool(), role, o, params).value();
      o.window = r;
      auto win = KvquantStore::make(kShape, test_pool(), role, o, params).value();
      auto* w = static_cast<KvquantStore*>(win.get());
      EXPECT_NE(win->name().find(":r=16"), std::string::npos) << win->name();
      EXPECT_FALSE(win->batch_invariant());
      ASSERT_TRUE(plain->append(0, n, x16.data()).ok());
      // A 40-token chunk, then one token per step.
      for (int t = 0; t < n;) {
        const int m = t == 0 ? 40 : 1;
        for (int il = 0; il < kShape.n_layers; ++il) ASSERT_TRUE(win->append(il, m, x.data() + size_t(t) * row).ok());
        t += m;
        if (m > 1) {
          EXPECT_EQ(w->n_window(0), m - 1);  // every token past the sink until the step ends
        }
        ASSERT_TRUE(win->end_step().ok());
        EXPECT_EQ(w->n_window(0), std::min(r, t - 1));
        EXPECT_EQ(win->n_tokens(1), t);
        if (outliers == 0.0) {  // (a growing outlier page's capacity runs ahead of bytes_for)
          EXPECT_EQ(win->bytes_used(), win->bytes_for(t)) << t;
        }
      }
      std::vector<float> got(size_t(n) * hd), want(got.size());
      for (int h = 0; h < kShape.n_kv_heads; ++h) {
        win->read(0, h, 0, n, got.data());
        plain->read(0, h, 0, n, want.data());
        for (int t = 0; t < n; ++t) {
          for (int d = 0; d < hd; ++d) {
            const size_t i = size_t(t) * hd + size_t(d);
            // The window's tokens as appended (fp16), the others as the plain store has them.
            const float e = t >= n - r ? x16[size_t(t) * row + size_t(h * hd + d)] : want[i];
            ASSERT_EQ(got[i], e) << t << " " << d;
          }
        }
      }
      // The bits accounting of the same spec counts what the store allocated (without outliers:
      // 150 tokens end inside a page).
      auto spec = parse_cache_spec(outliers > 0 ? "kvquant-3:r=16:outliers=0.02" : "kvquant-3:r=16:outliers=0");
      ASSERT_TRUE(spec.ok());
      EXPECT_EQ(spec->k.kvquant.window, r);
      const CacheConfig cfg = cache_config(*spec, kShape);
      const TensorBytes tb = account_bits(cfg, n).value().*(role == KvRole::kKey ? &BitsReport::k : &BitsReport::v);
      if (outliers == 0.0) {
        EXPECT_EQ(double(win->bytes_used()), tb.total());
      }
      EXPECT_EQ(tb.fp16_window, double(r + 1) * row * 2 * kShape.n_layers);
      // A refused append changes nothing; truncation takes the window's tokens first.
      std::vector<float> bad(size_t(row), 1.0f);
      bad[5] = NAN;
      const size_t bytes = win->bytes_used();
      EXPECT_FALSE(win->append(0, 1, bad.data()).ok());
      EXPECT_EQ(win->n_tokens(0), n);
      // So does a value fp16 cannot hold (the window would keep it as Inf).
      bad[5] = 1e5f;
      const Status big = win->append(0, 1, bad.data());
      EXPECT_EQ(big.code(), StatusCode::kInvalidArgument);
      EXPECT_NE(big.message().find("exceeds the fp16 range"), std::string::npos) << big.message();
      EXPECT_EQ(win->n_tokens(0), n);
      EXPECT_EQ(w->n_window(0), r);
      EXPECT_EQ(win->bytes_used(), bytes);
      ASSERT_TRUE(win->truncate(n - 5).ok());
      EXPECT_EQ(w->n_window(0), r - 5);
      ASSERT_TRUE(win->truncate(n - 40).ok());
      EXPECT_EQ(w->n_window(0), 0);
      EXPECT_EQ(win->n_tokens(1), n - 40);
      win->read(0, 1, 0, n - 40, got.data());
      plain->read(0, 1, 0, n - 40, want.data());
      for (size_t i = 0; i < size_t(n - 40) * hd; ++i) ASSERT_EQ(got[i], want[i]);
      // A shift past the body reaches into the window: its oldest rows go too (a context of
      // fewer than a page past the sinks and the window).
      {
        auto small = KvquantStore::make(kShape, test_pool(), role, o, params).value();
        auto* sw = static_cast<KvquantStore*>(small.get());
        for (int t = 0; t < 70; ++t) {
          for (int il = 0; il < kShape.n_layers; ++il) ASSERT_TRUE(small->append(il, 1, x.data() + size_t(t) * row).ok());
          ASSERT_TRUE(small->end_step().ok());
        }
        ASSERT_EQ(sw->n_window(0), r);  // 1 sink, 53 quantized, 16 fp16
        ASSERT_TRUE(small->check_shift(1, 64, false).ok());
        small->shift(1, 64, nullptr);
        EXPECT_EQ(small->n_tokens(0), 6);
        EXPECT_EQ(sw->n_window(0), 5);
        small->read(0, 0, 1, 5, got.data());
        for (int t = 0; t < 5; ++t) {
          for (int d = 0; d < hd; ++d) ASSERT_EQ(got[size_t(t) * hd + d], x16[size_t(65 + t) * row + d]);
        }
        if (outliers == 0.0) {
          EXPECT_EQ(small->bytes_used(), small->bytes_for(6));
        }
      }
      // Simulated quantization: nothing waits in the window.
      win->set_eager(true);
      ASSERT_TRUE(win->append(0, 3, x.data()).ok());
      EXPECT_EQ(w->n_window(0), 0);
    }
  }
  auto neg = parse_cache_spec("kvquant-3:r=-1");
  EXPECT_FALSE(neg.ok());
}

TEST(CacheSpec, BadSpecsNameTheProblem) {
  struct Case {
    const char* spec;
    const char* needle;
  };
  for (const Case& c : {Case{"kivi-3", "unknown cache type 'kivi-3'"}, Case{"kvquant-5", "unknown cache type"},
                        Case{"kivi-2:g=0", "g=0"}, Case{"kivi-2:x=1", "bad option 'x=1'"},
                        Case{"kvquant-3:outliers=2", "outliers=2"}, Case{"kvquant-3:codebook=zz", "codebook=zz"},
                        Case{"kvquant-3:norm=4", "norm=4"},
                        Case{"int3:g", "bad option 'g'"}, Case{"f16:g=2", "options: none"},
                        Case{"", "unknown cache type ''"}, Case{"f16:rot=1", "options: none"},
                        Case{"int3:rot=2", "rot=2"}}) {
    auto s = parse_cache_spec(c.spec);
    ASSERT_FALSE(s.ok()) << c.spec;
    EXPECT_NE(s.status().message().find(c.needle), std::string::npos) << s.status().message();
  }
  const KvCacheShape hd8{2, 4, 8, 64};
  EXPECT_EQ(make_cache(parse_cache_spec("q4_0").value(), hd8).status().code(), StatusCode::kUnimplemented);
  EXPECT_EQ(make_cache(parse_cache_spec("kivi-2").value(), hd8).status().code(), StatusCode::kUnimplemented);
  EXPECT_TRUE(make_cache(parse_cache_spec("kivi-2:g=8").value(), hd8).ok());
  EXPECT_EQ(make_cache(parse_cache_spec("kivi-2:r=36").value(), kShape).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(make_cache(parse_cache_spec("int3:g=7").value(), kShape).status().code(), StatusCode::kInvalidArgument);
  const auto st = make_cache(parse_cache_spec("kvquant-3").value(), kShape).status();
  EXPECT_NE(st.message().find("--calib auto"), std::string::npos) << st.message();
  EXPECT_TRUE(parse_cache_spec("kvquant-2:outliers=0:sinks=0:qnorm=1:codebook=nf:prerope=0").ok());
}

// The scheme table is the one source of the grammar, the factory and the accounting: every
// name it lists parses to its row and bit width with the row's defaults, is listed in the
// error text of an unknown type, and builds a cache whose allocation the accounting predicts.
TEST(CacheScheme, EveryNameParsesBuildsAndIsAccounted) {
  const std::string known = known_cache_schemes();
  int n_names = 0;
  for (const CacheScheme& scheme : cache_schemes()) {
    EXPECT_EQ(&cache_scheme(scheme.kind), &scheme);
    for (const SchemeName& n : scheme.names) {
      if (n.name.empty()) continue;
      ++n_names;
      const std::string name(n.name);
      EXPECT_NE(known.find(name), std::string::npos) << name;
      auto spec = parse_cache_spec(name);
      ASSERT_TRUE(spec.ok()) << name << ": " << spec.status().to_string();
      EXPECT_EQ(spec->k.kind, scheme.kind) << name;
      EXPECT_EQ(spec->k.bits, n.bits) << name;
      EXPECT_EQ(spec->k.group, scheme.group) << name;
      EXPECT_EQ(spec->k.residual, scheme.residual) << name;
      EXPECT_EQ(spec->needs_calibration(), scheme.calibrated) << name;
      if (scheme.calibrated) continue;  // built with calibration in the store tests
      auto cache = make_cache(*spec, kShape);
      ASSERT_TRUE(cache.ok()) << name << ": " << cache.status().to_string();
      const int n_tok = 320;  // whole pages: account_bits counts tokens, a store its pages
      std::vector<float> x(size_t(n_tok) * kShape.row_values());
      Rng rng(7);
      for (auto& v : x) v = float(rng.normal());
      for (int il = 0; il < kShape.n_layers; ++il) {
        ASSERT_TRUE((*cache)->append(il, n_tok, x.data(), x.data()).ok()) << name;
      }
      ASSERT_TRUE((*cache)->end_step().ok()) << name;
      auto bits = account_bits(cache_config(*spec, kShape), n_tok);
      ASSERT_TRUE(bits.ok()) << name << ": " << bits.status().to_string();
      EXPECT_NEAR(double((*cache)->bytes_used()), bits->total_bytes(), 1e-6 * bits->total_bytes()) << name;
      EXPECT_EQ((*cache)->bytes_used(), (*cache)->bytes_for(n_tok)) << name;
    }
  }
  EXPECT_EQ(n_names, 14);
}

TEST(CacheSpec, RotationNeedsAPowerOfTwoAndPostRopeKeys) {
  const KvCacheShape hd48{2, 2, 48, 64};
  const auto odd = make_cache(parse_cache_spec("int4:rot=1").value(), hd48).status();
  EXPECT_EQ(odd.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(odd.message().find("power of two"), std::string::npos) << odd.message();
  // KVQuant keys are pre-RoPE by default: the rotation cannot reach the query there.
  KvquantParams kp, vp;
  for (int il = 0; il < kShape.n_layers; ++il) {
    KvquantLayerParams lp;
    lp.codebook = make_nf_codebook(3);
    vp.layers.push_back(lp);
    lp.upper.assign(kShape.row_values(), 2.0f);
    lp.lower.assign(kShape.row_values(), -2.0f);
    kp.layers.push_back(lp);
  }
  const auto pre = parse_cache_spec("kvquant-3:rot=1").status();
  EXPECT_NE(pre.message().find("before RoPE"), std::string::npos) << pre.message();
  EXPECT_TRUE(make_cache(parse_cache_spec("kvquant-3", "kvquant-3:rot=1").value(), kShape, {&kp, &vp}).ok());
  auto post = make_cache(parse_cache_spec("kvquant-3:prerope=0:rot=1").value(), kShape, {&kp, &vp});
  ASSERT_TRUE(post.ok()) << post.status().to_string();
  EXPECT_NE((*post)->name().find(":prerope=0:rot=1,V="), std::string::npos) << (*post)->name();
  // Rotated post-RoPE keys cannot be moved to new positions.
  EXPECT_FALSE(make_cache(parse_cache_spec("q8_0:rot=1").value(), kShape).value()->check_shift(0, 1).ok());
}

}  // namespace
}  // namespace kvq
