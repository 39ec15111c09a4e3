// SPDX-License-Identifier: MIT
// kvq calibrate on stories260K: weighted k-means really follows the weights, calibration is
// deterministic for a seed and independent of the thread count, files round-trip, and
// mismatched, truncated or wrong-version files are rejected with clear errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <tuple>

#include "engine/calibration_file.h"
#include "quant/kmeans.h"
#include "shared_data.h"

namespace kvq {
namespace {

using testing::read_text;
using testing::shared_path;

std::unique_ptr<LlamaModel> load(const char* name) {
  auto m = LlamaModel::load(shared_path(std::string("models/") + name));
  EXPECT_TRUE(m.ok()) << m.status().to_string();
  return std::move(*m);
}

StatusOr<CalibrationFile> calibrate(const LlamaModel& model, int n_threads, bool rot = false, double bits_budget = 0,
                                    int norm_bits = 16, double outliers = 0.01, bool per_head = false,
                                    int sinks = 1, double v_outliers = -1, int residual = 0) {
  const auto toks = model.tokenizer().encode(read_text("text/tinystories/train_head.txt").substr(0, 200000), true, true);
  CalibrationArgs ca;
  ca.n_windows = 3;
  ca.window = 128;
  ca.seed = 7;
  ca.fisher = true;
  ExecContext ctx(n_threads);
  KVQ_ASSIGN_OR_RETURN(KvActivations acts, KvActivations::capture(ctx, model, toks, ca));
  CalibrationMeta meta;
  meta.text = "train_head.txt (first 200 kB)";
  meta.rot = rot;
  meta.bits_budget = bits_budget;
  meta.norm_bits = norm_bits;
  meta.outliers = outliers;
  meta.v_outliers = v_outliers;
  meta.per_head_widths = per_head;
  meta.sinks = sinks;
  meta.residual = residual;
  return CalibrationFile::build(acts, model, meta);
}

std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// A copy of the file at path, named name in the test's temporary folder, with the byte `offset`
// bytes after the end of the first occurrence of `key` set to value; "" when key is absent.
std::string corrupt_copy(const std::string& path, const std::string& key, ptrdiff_t offset, uint8_t value,
                         const std::string& name) {
  auto bytes = file_bytes(path);
  const auto at = std::search(bytes.begin(), bytes.end(), key.begin(), key.end());
  if (at == bytes.end() || bytes.end() - at <= ptrdiff_t(key.size()) + offset) return "";
  *(at + ptrdiff_t(key.size()) + offset) = value;
  const std::string out = ::testing::TempDir() + "/" + name;
  std::ofstream(out, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  return out;
}

// Weight concentrated on a few samples pulls centroids onto them.
TEST(Calibration, WeightsMoveTheCodebook) {
  std::vector<float> x, w_flat, w_peak;
  for (int i = 0; i < 2000; ++i) {
    x.push_back(-1.0f + 2.0f * float(i) / 1999.0f);
    w_flat.push_back(1.0f);
    w_peak.push_back(std::fabs(x.back() - 0.9f) < 0.01f ? 1000.0f : 0.01f);
  }
  KMeansOptions o;
  o.k = 4;
  const auto flat = kmeans_1d(x, w_flat, o).value();
  const auto peak = kmeans_1d(x, w_peak, o).value();
  auto nearest = [](const std::vector<float>& c, float v) {
    float d = 10;
    for (float ci : c) d = std::min(d, std::fabs(ci - v));
    return d;
  };
  EXPECT_LT(nearest(peak.centroids, 0.9f), 0.01f);
  EXPECT_GT(nearest(flat.centroids, 0.9f), 0.1f);
}

TEST(Calibration, DeterministicAndThreadCountIndependent) {
  auto model = load("stories260K.gguf");
  auto a = calibrate(*model, 1);
  auto b = calibrate(*model, 2);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status().to_string() << b.status().to_string();
  const std::string pa = ::testing::TempDir() + "/a.kvqc", pb = ::testing::TempDir() + "/b.kvqc";
  ASSERT_TRUE(a->save(pa).ok());
  ASSERT_TRUE(b->save(pb).ok());
  EXPECT_EQ(file_bytes(pa), file_bytes(pb));
}

// `kvq calibrate --bits-budget`: per-layer widths within the budget, the same for any thread
// count, through the file unchanged; kvquant-mixed caches take them, and the bits accounting
// of such a cache is what its pool allocates.
TEST(Calibration, MixedWidthsRoundTripAndServeKvquantMixed) {
  auto model = load("stories260K.gguf");
  // stories260K's K/V vector is 32 values, so metadata is heavy: 4.71 bits at 2 bits, 6.7 at 4.
  auto a = calibrate(*model, 1, false, 5.5);
  auto b = calibrate(*model, 2, false, 5.5);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status().to_string() << b.status().to_string();
  ASSERT_NE(a->mixed(), nullptr);
  const MixedPlan& plan = *a->mixed();
  const int n_ctx = model->config().n_ctx_train;
  EXPECT_EQ(a->meta().budget_context, n_ctx);
  EXPECT_LE(plan.bits_per_value, 5.5);
  EXPECT_GT(plan.bits_per_value, 5.0);  // the budget is used
  EXPECT_EQ(plan.k_bits, b->mixed()->k_bits);
  EXPECT_EQ(plan.v_bits, b->mixed()->v_bits);
  // More width, less error, layer by layer (Fisher-weighted, with each width's own codebook).
  for (size_t il = 0; il < plan.k_error.size(); ++il) {
    EXPECT_GT(plan.k_error[il][0], plan.k_error[il][2]) << il;
    EXPECT_GT(plan.v_error[il][0], plan.v_error[il][2]) << il;
  }
  const std::string pa = ::testing::TempDir() + "/mixed_a.kvqc", pb = ::testing::TempDir() + "/mixed_b.kvqc";
  ASSERT_TRUE(a->save(pa).ok());
  ASSERT_TRUE(b->save(pb).ok());
  EXPECT_EQ(file_bytes(pa), file_bytes(pb));
  auto back = CalibrationFile::load(pa, *model);
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  ASSERT_NE(back->mixed(), nullptr);
  EXPECT_EQ(back->mixed()->k_bits, plan.k_bits);
  EXPECT_EQ(back->mixed()->v_bits, plan.v_bits);
  EXPECT_FLOAT_EQ(float(back->mixed()->bits_per_value), float(plan.bits_per_value));
  EXPECT_EQ(back->meta().bits_budget, 5.5);
  EXPECT_EQ(back->describe(), a->describe());
  // The cache: each layer's width from the file; accounted as allocated.
  const CacheSpec spec = parse_cache_spec("kvquant-mixed").value();
  auto params = back->for_spec(spec);
  ASSERT_TRUE(params.ok()) << params.status().to_string();
  for (size_t il = 0; il < plan.k_bits.size(); ++il) {
    EXPECT_EQ(params->k->layers[il].codebook.bits, plan.k_bits[il]);
    EXPECT_EQ(params->v->layers[il].codebook.bits, plan.v_bits[il]);
  }
  const KvCacheShape shape = model->kv_shape(n_ctx);
  auto cache = make_cache(spec, shape, params->calibration());
  ASSERT_TRUE(cache.ok()) << cache.status().to_string();
  CacheConfig cfg = cache_config(spec, shape, params->calibration());
  auto acc = account_bits(cfg, n_ctx);
  ASSERT_TRUE(acc.ok());
  EXPECT_NEAR(acc->bits_per_value(), plan.bits_per_value, 1e-9);
  // What the cache allocates for n_ctx tokens is the sum of its layers, each as in a uniform
  // cache of its width (kv_test checks the accounting against the pool itself).
  double sum = 0;
  const int n_layers = model->config().n_layers;
  for (int il = 0; il < n_layers; ++il) {
    for (bool keys : {true, false}) {
      const int w = keys ? plan.k_bits[size_t(il)] : plan.v_bits[size_t(il)];
      const CacheSpec u = parse_cache_spec(keys ? "kvquant-" + std::to_string(w) : "f16",
                                           keys ? "f16" : "kvquant-" + std::to_string(w)).value();
      auto up = back->for_spec(u);
      ASSERT_TRUE(up.ok()) << up.status().to_string();
      auto uc = make_cache(u, shape, up->calibration());
      ASSERT_TRUE(uc.ok());
      auto f16 = make_cache(parse_cache_spec("f16").value(), shape);
      sum += double((*uc)->bytes_for(n_ctx) - (*f16)->bytes_for(n_ctx) / 2) / n_layers;
    }
  }
  EXPECT_NEAR(double((*cache)->bytes_for(n_ctx)), sum, 1e-6 * sum);
  EXPECT_NE((*cache)->name().find("kvquant-mixed"), std::string::npos) << (*cache)->name();
  // Uniform specs still read the file; a large budget puts every layer at 4 bits.
  EXPECT_TRUE(back->for_spec(parse_cache_spec("kvquant-3").value()).ok());
  auto all4 = calibrate(*model, 1, false, 8.0);
  ASSERT_TRUE(all4.ok());
  for (int w : all4->mixed()->k_bits) EXPECT_EQ(w, 4);
  for (int w : all4->mixed()->v_bits) EXPECT_EQ(w, 4);
  // A budget below every layer at 2 bits is an error, as is a file without widths for
  // kvquant-mixed, and --calib auto for it.
  auto low = calibrate(*model, 1, false, 1.0);
  ASSERT_FALSE(low.ok());
  EXPECT_NE(low.status().message().find("every layer at 2 bits"), std::string::npos) << low.status().message();
  auto plain = calibrate(*model, 1);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->mixed(), nullptr);
  auto st = plain->for_spec(spec).status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("--bits-budget"), std::string::npos) << st.message();
  // A corrupt width is refused as corrupt.
  // Element 0 of kvq.mixed.k_bits (after the array type, element type and count): layer 0's width.
  const std::string bad = corrupt_copy(pa, "kvq.mixed.k_bits", 16, 7, "mixed_bad.kvqc");
  ASSERT_FALSE(bad.empty());
  st = CalibrationFile::load(bad, *model).status();
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.to_string();
  EXPECT_NE(st.message().find("width of 7 bits"), std::string::npos) << st.message();
}

// `kvq calibrate --width-per head`: a width per (layer, K|V, KV head) within the budget, the
// same for any thread count, through the file unchanged (new keys; a per-layer file still
// loads as per layer), and a kvquant-mixed cache with those widths allocates exactly what the
// plan accounted (plan bits == accounting == the cache's bytes).
TEST(Calibration, PerHeadWidthsRoundTripAndAccountExactly) {
  auto model = load("stories260K.gguf");
  const ModelConfig& mc = model->config();
  ASSERT_GT(mc.n_kv_heads, 1);
  const int n_ctx = mc.n_ctx_train;
  const KvCacheShape shape = model->kv_shape(n_ctx);
  // Budgets between every tensor at 2 and at 4 bits (without outliers 2.3 and 4.3 here).
  for (const auto& [outliers, norm, sinks, budget] : {std::tuple{0.0, 8, 0, 3.3}, std::tuple{0.01, 16, 1, 5.5}}) {
    SCOPED_TRACE(outliers);
    auto a = calibrate(*model, 1, false, budget, norm, outliers, true, sinks);
    auto b = calibrate(*model, 2, false, budget, norm, outliers, true, sinks);
    auto layer = calibrate(*model, 1, false, budget, norm, outliers, false, sinks);
    ASSERT_TRUE(a.ok() && b.ok() && layer.ok()) << a.status().to_string() << b.status().to_string();
    ASSERT_NE(a->mixed(), nullptr);
    const MixedPlan& plan = *a->mixed();
    ASSERT_TRUE(plan.per_head);
    EXPECT_LE(plan.bits_per_value, budget);
    EXPECT_EQ(plan.n_kv_heads, mc.n_kv_heads);
    ASSERT_EQ(plan.k_bits.size(), size_t(mc.n_layers * mc.n_kv_heads));
    EXPECT_EQ(plan.k_bits, b->mixed()->k_bits);
    EXPECT_EQ(plan.v_bits, b->mixed()->v_bits);
    EXPECT_LE(plan.bits_per_value, 5.5);
    EXPECT_FALSE(layer->mixed()->per_head);
    // Per-head errors split the per-layer ones (the same codebooks): they sum to them.
    for (int il = 0; il < mc.n_layers; ++il) {
      for (int w = 0; w < 3; ++w) {
        double k = 0, v = 0;
        for (int h = 0; h < mc.n_kv_heads; ++h) {
          k += plan.k_error[size_t(il * mc.n_kv_heads + h)][size_t(w)];
          v += plan.v_error[size_t(il * mc.n_kv_heads + h)][size_t(w)];
        }
        EXPECT_NEAR(k, layer->mixed()->k_error[size_t(il)][size_t(w)], 1e-9 * k);
        EXPECT_NEAR(v, layer->mixed()->v_error[size_t(il)][size_t(w)], 1e-9 * v);
      }
    }
    // Finer steps: the per-head plan's Fisher-weighted error is not above the per-layer plan's
    // by more than the codebook bound can cost (here it is below it).
    EXPECT_LE(plan.error, layer->mixed()->error * 1.0001);
    const std::string pa = ::testing::TempDir() + "/head_a.kvqc", pb = ::testing::TempDir() + "/head_b.kvqc",
                      pl = ::testing::TempDir() + "/head_layer.kvqc";
    ASSERT_TRUE(a->save(pa).ok());
    ASSERT_TRUE(b->save(pb).ok());
    ASSERT_TRUE(layer->save(pl).ok());
    EXPECT_EQ(file_bytes(pa), file_bytes(pb));
    auto back = CalibrationFile::load(pa, *model);
    ASSERT_TRUE(back.ok()) << back.status().to_string();
    ASSERT_NE(back->mixed(), nullptr);
    EXPECT_TRUE(back->mixed()->per_head);
    EXPECT_EQ(back->mixed()->k_bits, plan.k_bits);
    EXPECT_EQ(back->mixed()->v_bits, plan.v_bits);
    EXPECT_EQ(back->describe(), a->describe());
    EXPECT_NE(back->describe().find("per-head widths"), std::string::npos) << back->describe();
    // A corrupt per-head width is refused as corrupt, naming the head.
    {
      // Element 1 of kvq.mixed.v_head_bits (int32 elements after type, element type and count): layer 0, head 1.
      const std::string bad = corrupt_copy(pa, "kvq.mixed.v_head_bits", 16 + 4, 9, "head_bad.kvqc");
      ASSERT_FALSE(bad.empty());
      const Status st = CalibrationFile::load(bad, *model).status();
      EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.to_string();
      EXPECT_NE(st.message().find("layer 0 KV head 1 has a width of 9 bits"), std::string::npos) << st.message();
    }
    auto old = CalibrationFile::load(pl, *model);
    ASSERT_TRUE(old.ok()) << old.status().to_string();
    EXPECT_FALSE(old->mixed()->per_head);
    EXPECT_EQ(old->mixed()->k_bits, layer->mixed()->k_bits);
    // The cache: each head at its width, one codebook per (layer, width); accounted as the plan.
    std::string spec_text = outliers > 0 ? "kvquant-mixed" : "kvquant-mixed:outliers=0";
    if (norm == 8) spec_text += ":norm=8";
    if (sinks == 0) spec_text += ":sinks=0";
    const CacheSpec spec = parse_cache_spec(spec_text).value();
    auto params = back->for_spec(spec);
    ASSERT_TRUE(params.ok()) << params.status().to_string();
    bool differ = false;  // some layer's heads have different widths
    for (int il = 0; il < mc.n_layers; ++il) {
      const auto& kl = params->k->layers[size_t(il)];
      ASSERT_EQ(kl.head_codebooks.size(), size_t(mc.n_kv_heads));
      for (int h = 0; h < mc.n_kv_heads; ++h) {
        EXPECT_EQ(kl.head_codebooks[size_t(h)].bits, plan.k_width(il, h));
        EXPECT_EQ(params->v->layers[size_t(il)].head_codebooks[size_t(h)].bits, plan.v_width(il, h));
        differ |= plan.k_width(il, h) != plan.k_width(il, 0) || plan.v_width(il, h) != plan.v_width(il, 0);
      }
    }
    EXPECT_TRUE(differ) << a->describe_mixed();
    auto cache = make_cache(spec, shape, params->calibration());
    ASSERT_TRUE(cache.ok()) << cache.status().to_string();
    auto acc = account_bits(cache_config(spec, shape, params->calibration()), n_ctx);
    ASSERT_TRUE(acc.ok()) << acc.status().to_string();
    EXPECT_NEAR(acc->bits_per_value(), plan.bits_per_value, 1e-6);
    if (outliers == 0) {  // key outliers are data dependent; without them the bytes are exact
      const double values = 2.0 * n_ctx * mc.n_layers * mc.n_kv_heads * mc.head_dim;
      EXPECT_NEAR(8.0 * double((*cache)->bytes_for(n_ctx)) / values, plan.bits_per_value, 1e-9);
    }
  }
}

// `kvq calibrate --r N`: the widths are planned with the bytes of an fp16 window of N tokens, so
// the plan's bits per value is what kvquant-mixed:r=N allocates (the plan spends less on widths
// than without it); r round-trips (kvq.mixed.r), another r is refused with the fix, and a
// corrupt r is refused as corrupt.
TEST(Calibration, MixedWidthsPlannedForTheWindow) {
  auto model = load("stories260K.gguf");
  const ModelConfig& mc = model->config();
  const int n_ctx = mc.n_ctx_train;
  const KvCacheShape shape = model->kv_shape(n_ctx);
  const double budget = 3.3;
  auto none = calibrate(*model, 1, false, budget, 8, 0.0, true, 0);
  auto win = calibrate(*model, 1, false, budget, 8, 0.0, true, 0, -1, 16);
  ASSERT_TRUE(none.ok() && win.ok()) << none.status().to_string() << win.status().to_string();
  ASSERT_NE(win->mixed(), nullptr);
  EXPECT_LE(win->mixed()->bits_per_value, budget);
  EXPECT_GT(win->mixed()->error, none->mixed()->error);  // fewer bits left for the widths
  EXPECT_NE(win->describe_mixed().find("fp16 window r=16"), std::string::npos) << win->describe_mixed();
  const std::string path = ::testing::TempDir() + "/window.kvqc";
  ASSERT_TRUE(win->save(path).ok());
  auto back = CalibrationFile::load(path, *model);
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->meta().residual, 16);
  EXPECT_EQ(back->mixed()->k_bits, win->mixed()->k_bits);
  const CacheSpec spec = parse_cache_spec("kvquant-mixed:outliers=0:norm=8:sinks=0:r=16").value();
  auto params = back->for_spec(spec);
  ASSERT_TRUE(params.ok()) << params.status().to_string();
  auto cache = make_cache(spec, shape, params->calibration());
  ASSERT_TRUE(cache.ok()) << cache.status().to_string();
  const double values = 2.0 * n_ctx * mc.n_layers * mc.n_kv_heads * mc.head_dim;
  EXPECT_NEAR(8.0 * double((*cache)->bytes_for(n_ctx)) / values, win->mixed()->bits_per_value, 1e-9);
  auto acc = account_bits(cache_config(spec, shape, params->calibration()), n_ctx);
  ASSERT_TRUE(acc.ok()) << acc.status().to_string();
  EXPECT_NEAR(acc->bits_per_value(), win->mixed()->bits_per_value, 1e-9);
  // Another window (none included) is refused, naming the fix; a file without one reads as r=0.
  for (const char* other : {"kvquant-mixed:outliers=0:norm=8:sinks=0", "kvquant-mixed:outliers=0:norm=8:sinks=0:r=8"}) {
    const Status st = back->for_spec(parse_cache_spec(other).value()).status();
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << other;
    EXPECT_NE(st.message().find("fp16 window of r=16 tokens"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("kvq calibrate --r"), std::string::npos) << st.message();
  }
  EXPECT_EQ(none->meta().residual, 0);
  EXPECT_FALSE(none->for_spec(spec).ok());
  // Uniform widths take any window.
  EXPECT_TRUE(back->for_spec(parse_cache_spec("kvquant-3:outliers=0:norm=8:sinks=0:r=4").value()).ok());
  // kvq.mixed.r = 0 (the u32's low byte, after its type) is refused as corrupt.
  const std::string bad = corrupt_copy(path, "kvq.mixed.r", 4, 0, "window_bad.kvqc");
  ASSERT_FALSE(bad.empty());
  const Status st = CalibrationFile::load(bad, *model).status();
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.to_string();
  EXPECT_NE(st.message().find("kvq.mixed.r"), std::string::npos) << st.message();
}

// `kvq calibrate --norm 8`: the widths are planned with the bits a norm=8 cache allocates, so
// the plan's bits per value is the accounting of kvquant-mixed:norm=8 (with and without
// rotation and outliers); the setting round-trips, a file without it reads as 16, and a value
// norm the widths were not chosen for is refused, never silently re-budgeted.
TEST(Calibration, MixedWidthsPlannedForTheCacheNorm) {
  auto model = load("stories260K.gguf");
  const int n_ctx = model->config().n_ctx_train;
  const KvCacheShape shape = model->kv_shape(n_ctx);
  // Pre-RoPE keys are never rotated: rot=1 goes on the value spec only.
  struct Case {
    bool rot;
    double outliers;
    std::string k, v;  // the value spec without its ":norm=8"
  };
  for (const Case& c : {Case{false, 0.01, "kvquant-mixed", "kvquant-mixed"},
                        Case{false, 0.0, "kvquant-mixed:outliers=0", "kvquant-mixed:outliers=0"},
                        Case{true, 0.0, "kvquant-mixed:outliers=0", "kvquant-mixed:outliers=0:rot=1"}}) {
    SCOPED_TRACE(c.v);
    auto n8 = calibrate(*model, 2, c.rot, 5.5, 8, c.outliers);
    auto n16 = calibrate(*model, 2, c.rot, 5.5, 16, c.outliers);
    ASSERT_TRUE(n8.ok() && n16.ok()) << n8.status().to_string() << n16.status().to_string();
    ASSERT_NE(n8->mixed(), nullptr);
    const MixedPlan& plan = *n8->mixed();
    const std::string path = ::testing::TempDir() + "/n8.kvqc";
    ASSERT_TRUE(n8->save(path).ok());
    auto back = CalibrationFile::load(path, *model);
    ASSERT_TRUE(back.ok()) << back.status().to_string();
    EXPECT_EQ(back->meta().norm_bits, 8);
    EXPECT_EQ(back->describe(), n8->describe());
    EXPECT_NE(back->describe().find("norm 8"), std::string::npos) << back->describe();
    const CacheSpec spec = parse_cache_spec(c.k, c.v + ":norm=8").value();
    auto params = back->for_spec(spec);
    ASSERT_TRUE(params.ok()) << params.status().to_string();
    auto acc = account_bits(cache_config(spec, shape, params->calibration()), n_ctx);
    ASSERT_TRUE(acc.ok());
    EXPECT_NEAR(acc->bits_per_value(), plan.bits_per_value, 1e-9);
    // The cache builds (kv_test checks the accounting against what a pool allocates).
    auto cache = make_cache(spec, shape, params->calibration());
    ASSERT_TRUE(cache.ok()) << cache.status().to_string();
    // A norm the widths were not planned for: a clear error both ways.
    auto st = back->for_spec(parse_cache_spec(c.k, c.v).value()).status();
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("--norm 16"), std::string::npos) << st.message();
    st = n16->for_spec(spec).status();
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("norm=16"), std::string::npos) << st.message();
    // Uniform widths do not depend on the norm: the norm=8 file serves both norms.
    std::string uk = c.k, uv = c.v;
    uk.replace(0, 13, "kvquant-3");
    uv.replace(0, 13, "kvquant-3");
    EXPECT_TRUE(back->for_spec(parse_cache_spec(uk, uv).value()).ok());
    EXPECT_TRUE(back->for_spec(parse_cache_spec(uk, uv + ":norm=8").value()).ok());
  }
  // An older file (no kvq.calib.norm_bits: the key renamed away) reads as norm 16; a width
  // other than 16 or 8 is refused as corrupt.
  auto n8 = calibrate(*model, 2, false, 5.5, 8);
  ASSERT_TRUE(n8.ok());
  const std::string path = ::testing::TempDir() + "/n8b.kvqc";
  ASSERT_TRUE(n8->save(path).ok());
  const auto bytes = file_bytes(path);
  const std::string key = "kvq.calib.norm_bits";
  auto write_patched = [&](size_t skip, const std::string& to) {
    auto b = bytes;
    auto at = std::search(b.begin(), b.end(), key.begin(), key.end());
    EXPECT_NE(at, b.end());
    std::copy(to.begin(), to.end(), at + ptrdiff_t(skip));
    const std::string out = ::testing::TempDir() + "/n8_patched.kvqc";
    std::ofstream(out, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
    return CalibrationFile::load(out, *model);
  };
  auto old = write_patched(0, "kvq.calib.xorm_bits");
  ASSERT_TRUE(old.ok()) << old.status().to_string();
  EXPECT_EQ(old->meta().norm_bits, 16);
  const uint32_t twelve = 12;
  auto bad = write_patched(key.size() + 4, std::string(reinterpret_cast<const char*>(&twelve), 4));
  EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find("kvq.calib.norm_bits"), std::string::npos) << bad.status().message();
}

// `kvq calibrate --outliers 0.01 --outliers-v 0`: key outliers only. The keys are those of a
// file calibrated with 0.01 for both, the values those of one with 0 for both; the widths are
// planned at the accounting of that split (a cache with K outliers=0.01 and V outliers=0
// allocates the plan's bits); a spec with another fraction on either side is refused naming
// the side; an older file without the key reads as one fraction, a bad value is refused.
TEST(Calibration, KeyOnlyOutliersPlannedAndServedPerSide) {
  auto model = load("stories260K.gguf");
  const int n_ctx = model->config().n_ctx_train;
  const KvCacheShape shape = model->kv_shape(n_ctx);
  auto split = calibrate(*model, 2, false, 5.5, 16, 0.01, false, 1, 0.0);
  auto both = calibrate(*model, 2, false, 0, 16, 0.01), none = calibrate(*model, 2, false, 0, 16, 0.0);
  ASSERT_TRUE(split.ok() && both.ok() && none.ok()) << split.status().to_string();
  EXPECT_EQ(both->meta().v_outliers, 0.01);  // unset: the keys' fraction
  ASSERT_NE(split->mixed(), nullptr);
  const std::string path = ::testing::TempDir() + "/split.kvqc";
  ASSERT_TRUE(split->save(path).ok());
  auto back = CalibrationFile::load(path, *model);
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->meta().v_outliers, 0.0);
  EXPECT_NEAR(back->meta().outliers, 0.01, 1e-9);
  EXPECT_EQ(back->describe(), split->describe());
  EXPECT_NE(back->describe().find("outliers 0.01 (values 0)"), std::string::npos) << back->describe();
  const CacheSpec spec = parse_cache_spec("kvquant-mixed", "kvquant-mixed:outliers=0").value();
  auto p = back->for_spec(spec);
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  const CacheSpec uniform = parse_cache_spec("kvquant-3", "kvquant-3:outliers=0").value();
  auto u = back->for_spec(uniform).value();
  auto b = both->for_spec(parse_cache_spec("kvquant-3").value()).value();
  auto n = none->for_spec(parse_cache_spec("kvquant-3:outliers=0").value()).value();
  for (size_t il = 0; il < u.k->layers.size(); ++il) {
    EXPECT_EQ(u.k->layers[il].upper, b.k->layers[il].upper);
    EXPECT_EQ(u.k->layers[il].codebook.values, b.k->layers[il].codebook.values);
    EXPECT_EQ(u.v->layers[il].codebook.values, n.v->layers[il].codebook.values);
  }
  auto acc = account_bits(cache_config(spec, shape, p->calibration()), n_ctx);
  ASSERT_TRUE(acc.ok());
  EXPECT_NEAR(acc->bits_per_value(), split->mixed()->bits_per_value, 1e-9);
  EXPECT_TRUE(make_cache(spec, shape, p->calibration()).ok());
  auto st = back->for_spec(parse_cache_spec("kvquant-mixed").value()).status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("values' outliers=0.000000"), std::string::npos) << st.message();
  st = back->for_spec(parse_cache_spec("kvquant-mixed:outliers=0").value()).status();
  EXPECT_NE(st.message().find("keys' outliers=0.010000"), std::string::npos) << st.message();
  // An older file: the key renamed away; a NaN fraction: refused as corrupt.
  const std::string old = corrupt_copy(path, "kvq.calib.v_outliers", -1, 'x', "split_old.kvqc");
  ASSERT_FALSE(old.empty());
  auto o = CalibrationFile::load(old, *model);
  ASSERT_TRUE(o.ok()) << o.status().to_string();
  EXPECT_EQ(o->meta().v_outliers, o->meta().outliers);
  const std::string bad = corrupt_copy(path, "kvq.calib.v_outliers", 4 + 3, 0x7f, "split_nan.kvqc");
  ASSERT_FALSE(bad.empty());
  const std::string bad2 = corrupt_copy(bad, "kvq.calib.v_outliers", 4 + 2, 0xc0, "split_nan2.kvqc");
  auto nan = CalibrationFile::load(bad2, *model);
  EXPECT_EQ(nan.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(nan.status().message().find("kvq.calib.v_outliers"), std::string::npos) << nan.status().message();
}

// `kvq calibrate --rot 1`: values fitted on rotated rows (pre-RoPE keys are never rotated); the
// file says so and serves rotated value specs only.
TEST(Calibration, RotatedFileServesRotatedValues) {
  auto model = load("stories260K.gguf");  // head_dim 8: a power of two
  auto rot = calibrate(*model, 2, true), plain = calibrate(*model, 2);
  ASSERT_TRUE(rot.ok() && plain.ok()) << rot.status().to_string();
  const std::string path = ::testing::TempDir() + "/rot.kvqc";
  ASSERT_TRUE(rot->save(path).ok());
  auto back = CalibrationFile::load(path, *model);
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_TRUE(back->meta().rot);
  const CacheSpec rv = parse_cache_spec("kvquant-3", "kvquant-3:rot=1").value();
  auto p = back->for_spec(rv);
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  auto q = plain->for_spec(parse_cache_spec("kvquant-3").value()).value();
  EXPECT_EQ(p->k->layers[0].upper, q.k->layers[0].upper);  // keys as without rotation
  EXPECT_NE(p->v->layers[0].codebook.values, q.v->layers[0].codebook.values);
  const auto st = back->for_spec(parse_cache_spec("kvquant-3").value()).status();
  EXPECT_NE(st.message().find("rot=1"), std::string::npos) << st.message();
  EXPECT_FALSE(plain->for_spec(rv).ok());
}

TEST(Calibration, FileRoundTripsAndBadFilesAreRejected) {
  auto model = load("stories260K.gguf");
  auto cal = calibrate(*model, 2);
  ASSERT_TRUE(cal.ok()) << cal.status().to_string();
  const std::string path = ::testing::TempDir() + "/s.kvqc";
  ASSERT_TRUE(cal->save(path).ok());
  auto back = CalibrationFile::load(path, *model);
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->meta().weighting, CodebookWeighting::kFisherScale2);
  EXPECT_EQ(back->meta().n_windows, 3);
  for (const char* spec : {"kvquant-2", "kvquant-3:qnorm=1", "kvquant-4"}) {
    const CacheSpec s = parse_cache_spec(spec).value();
    auto p1 = cal->for_spec(s).value();
    auto p2 = back->for_spec(s).value();
    for (size_t il = 0; il < p1.k->layers.size(); ++il) {
      EXPECT_EQ(p1.k->layers[il].upper, p2.k->layers[il].upper);
      EXPECT_EQ(p1.k->layers[il].codebook.values, p2.k->layers[il].codebook.values) << spec;
      EXPECT_EQ(p1.v->layers[il].codebook.thresholds, p2.v->layers[il].codebook.thresholds) << spec;
    }
  }
  // Settings the file was not made for.
  EXPECT_EQ(back->for_spec(parse_cache_spec("kvquant-3:outliers=0").value()).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(back->for_spec(parse_cache_spec("kvquant-3:prerope=0").value()).status().code(),
            StatusCode::kInvalidArgument);
  // Another model.
  auto other = load("tinystories-l6-d256-h64.gguf");
  auto st = CalibrationFile::load(path, *other).status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("another model"), std::string::npos) << st.message();
  // Truncated.
  const auto bytes = file_bytes(path);
  const std::string cut = ::testing::TempDir() + "/cut.kvqc";
  for (size_t n : {size_t(10), bytes.size() / 3, bytes.size() - 8}) {
    std::ofstream(cut, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(n));
    EXPECT_FALSE(CalibrationFile::load(cut, *model).ok()) << n;
  }
  // A newer version.
  auto v2 = bytes;
  const std::string key = "kvq.calibration.version";
  auto it = std::search(v2.begin(), v2.end(), key.begin(), key.end());
  ASSERT_NE(it, v2.end());
  *(it + ptrdiff_t(key.size()) + 4) = 2;  // after the u32 type tag: the version's low byte
  std::ofstream(cut, std::ios::binary).write(reinterpret_cast<const char*>(v2.data()), std::streamsize(v2.size()));
  st = CalibrationFile::load(cut, *model).status();
  EXPECT_EQ(st.code(), StatusCode::kUnimplemented) << st.to_string();
  // Structural corruption (issue 12, item 5), each made by patching one field of the good file.
  auto patched = [&](const std::string& from, const std::string& to, size_t skip) {
    auto b = bytes;
    auto at = std::search(b.begin(), b.end(), from.begin(), from.end());
    EXPECT_NE(at, b.end()) << from;
    std::copy(to.begin(), to.end(), at + ptrdiff_t(skip));
    std::ofstream(cut, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
    return CalibrationFile::load(cut, *model).status();
  };
  // A NaN outlier fraction: fabs(x - NaN) > eps is false, so it used to pass every check.
  const float nan = std::nanf("");
  st = patched("kvq.calib.outliers", std::string(reinterpret_cast<const char*>(&nan), 4), 18 + 4);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("kvq.calib.outliers"), std::string::npos) << st.message();
  const float inf = INFINITY;
  st = patched("kvq.calib.loss", std::string(reinterpret_cast<const char*>(&inf), 4), 14 + 4);
  EXPECT_NE(st.message().find("kvq.calib.loss is not finite"), std::string::npos) << st.message();
  // Two tensors of the same name (first wins, silently, before), then one of a layer the
  // model does not have (the count is checked).
  st = patched("blk.0.k_lower", "blk.0.k_upper", 0);
  EXPECT_NE(st.message().find("duplicate tensor name 'blk.0.k_upper'"), std::string::npos) << st.message();
  st = patched("blk.0.k_lower", "blk.9.k_lower", 0);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  // A model file is not a calibration file.
  EXPECT_NE(CalibrationFile::load(shared_path("models/stories260K.gguf"), *model).status().message().find(
                "not a kvq calibration file"),
            std::string::npos);
}

}  // namespace
}  // namespace kvq
