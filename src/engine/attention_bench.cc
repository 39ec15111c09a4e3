// SPDX-License-Identifier: MIT
#include "engine/attention_bench.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>

#include "attention/attention.h"
#include "base/exec_context.h"
#include "base/rng.h"
#include "base/timer.h"
#include "engine/calibrate.h"
#include "engine/runtime.h"
#include "engine/read_bandwidth.h"
#include "engine/synthetic_kv.h"
#include "quant/common.h"

namespace kvq {

namespace {

constexpr float kRopeBase = 10000.0f;
constexpr int kFillBatch = 256;  // tokens per append, as a prefill chunk would be

// The only place that builds AttentionParams. *rope keeps alive what the params point to (a
// fixed-size table: RoPE is applied by composition, whatever the depth).
AttentionParams make_attention_params(const AttentionShape& s, Rope* rope) {
  *rope = Rope(s.head_dim, s.head_dim, kRopeBase);
  AttentionParams p;
  p.n_heads = s.n_heads;
  p.n_kv_heads = s.n_kv_heads;
  p.head_dim = s.head_dim;
  p.scale = 1.0f / std::sqrt(float(s.head_dim));
  p.rope = rope;
  return p;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / double(1 << 30));
  return buf;
}

Status validate(const AttentionBenchOptions& o) {
  if (o.shapes.empty() || o.depths.empty() || o.caches.empty()) {
    return invalid_argument("attention bench needs at least one shape, depth and cache type");
  }
  for (const auto& s : o.shapes) {
    if (s.n_heads < 1 || s.n_kv_heads < 1 || s.head_dim < 2 || s.head_dim % 2 || s.n_heads % s.n_kv_heads) {
      return invalid_argument("shape '" + s.name + "': heads must be a multiple of KV heads, head_dim even");
    }
  }
  for (int d : o.depths) {
    if (d < 1) return invalid_argument("depths must be >= 1 token, got " + std::to_string(d));
  }
  if (o.n_threads < 1 || o.repetitions < 1 || o.pool_tokens < 1 || o.calib_windows < 1 || o.calib_window < 2) {
    return invalid_argument("threads, repetitions, pool and calibration sizes must be positive");
  }
  return ok_status();
}

// kvquant parameters for every cache of one shape, fitted on a sample drawn from the same
// synthetic distribution as the timed tokens but with another seed: calibration data is never
// the data it is evaluated on.
StatusOr<std::vector<KvActivations::ForSpec>> calibrate_shape(const AttentionBenchOptions& o,
                                                              const AttentionShape& s, const SyntheticKv& gen,
                                                              const std::vector<CacheSpec>& specs) {
  std::vector<KvActivations::ForSpec> out(specs.size());
  if (std::none_of(specs.begin(), specs.end(), [](const CacheSpec& c) { return c.needs_calibration(); })) return out;
  CalibrationArgs ca;
  ca.n_windows = o.calib_windows;
  ca.window = o.calib_window;
  ca.seed = o.seed;
  std::vector<std::vector<float>> k(1), v(1);
  gen.sample(ca.n_windows * ca.window, o.seed + 1000, &k[0], &v[0]);
  KVQ_ASSIGN_OR_RETURN(KvActivations acts, KvActivations::from_samples(s.n_kv_heads, s.head_dim, s.head_dim,
                                                                       kRopeBase, ca, std::move(k), std::move(v)));
  for (size_t i = 0; i < specs.size(); ++i) {
    if (!specs[i].needs_calibration()) continue;
    Timer t;
    KVQ_ASSIGN_OR_RETURN(out[i], acts.for_spec(specs[i]));
    if (o.log) o.log("calibrated " + specs[i].text + " for " + s.name + " in " + std::to_string(int(t.seconds() * 1000)) + " ms");
  }
  return out;
}

KvCacheShape cache_shape(const AttentionShape& s, int n_ctx) {
  KvCacheShape c;
  c.n_layers = 1;
  c.n_kv_heads = s.n_kv_heads;
  c.head_dim = s.head_dim;
  c.n_ctx = n_ctx;
  return c;
}

// One decode call (one query token at the last position, whole depth) as a warm-up, its output
// checked: the number of calls a repetition times so that it lasts o.min_rep_seconds.
StatusOr<int> warm_up(ExecContext& ctx, const AttentionBenchOptions& o, const AttentionParams& p, const KvCache& cache,
                      int depth, const float* q, float* out) {
  Timer t;
  KVQ_RETURN_IF_ERROR(attend(ctx, p, cache, 0, q, 1, depth - 1, out));
  const double first = std::max(t.seconds(), 1e-7);
  for (int i = 0; i < p.n_heads * p.head_dim; ++i) {
    if (!std::isfinite(out[i])) return internal_error("attention over " + cache.name() + " gave a non-finite output");
  }
  return std::clamp(int(std::ceil(o.min_rep_seconds / first)), 1, 1000);
}

// Seconds of one decode call, averaged over one repetition of calls.
StatusOr<double> time_decode(ExecContext& ctx, const AttentionParams& p, const KvCache& cache, int depth, int calls,
                             const float* q, float* out) {
  Timer t;
  for (int c = 0; c < calls; ++c) KVQ_RETURN_IF_ERROR(attend(ctx, p, cache, 0, q, 1, depth - 1, out));
  return t.seconds() / calls;
}

// Fills cache from the pool (cyclically) up to depth tokens and settles windowed caches.
Status fill_to(const AttentionBenchOptions& o, const std::string& what, KvCache& cache, int depth,
               const std::vector<float>& pool_k, const std::vector<float>& pool_v, int pool_tokens) {
  const size_t row = cache.shape().row_values();
  Timer t;
  for (int filled = cache.n_tokens(0); filled < depth;) {
    const int at = filled % pool_tokens;
    const int n = std::min({kFillBatch, depth - filled, pool_tokens - at});
    KVQ_RETURN_IF_ERROR(cache.append(0, n, &pool_k[size_t(at) * row], &pool_v[size_t(at) * row]));
    filled += n;
    if (o.progress) o.progress(what, filled, depth, t.seconds());
  }
  return cache.end_step();
}

}  // namespace

StatusOr<AttentionShape> attention_shape(std::string_view name) {
  if (name == "llama7b") return AttentionShape{"llama7b", 32, 32, 128};
  if (name == "llama3-8b") return AttentionShape{"llama3-8b", 32, 8, 128};
  // The testbed's (tinystories-l6-d256-h64): short contexts at head_dim 64, GQA groups of 2.
  if (name == "testbed") return AttentionShape{"testbed", 4, 2, 64};
  return invalid_argument("unknown shape '" + std::string(name) + "' (known: llama7b, llama3-8b, testbed)");
}

StatusOr<AttentionBenchResult> run_attention_bench(const AttentionBenchOptions& opts) {
  KVQ_RETURN_IF_ERROR(validate(opts));
  std::vector<CacheSpec> specs = opts.caches;
  if (std::none_of(specs.begin(), specs.end(), [](const CacheSpec& c) { return c.text == "f16"; })) {
    KVQ_ASSIGN_OR_RETURN(CacheSpec f16, parse_cache_spec("f16"));
    specs.insert(specs.begin(), f16);
  }
  std::vector<int> depths = opts.depths;
  std::sort(depths.begin(), depths.end());
  depths.erase(std::unique(depths.begin(), depths.end()), depths.end());
  const int max_depth = depths.back();

  // Calibrate and check memory for everything before filling anything, so a run that cannot
  // fit fails in seconds, not after the smaller depths. A shape's caches are held at once (they
  // are timed in alternating rounds).
  std::vector<SyntheticKv> gens;
  std::vector<std::vector<KvActivations::ForSpec>> calib;
  for (const auto& s : opts.shapes) {
    gens.emplace_back(s.n_kv_heads, s.head_dim, opts.seed);
    KVQ_ASSIGN_OR_RETURN(auto c, calibrate_shape(opts, s, gens.back(), specs));
    calib.push_back(std::move(c));
    double need = 0;
    std::string names;
    for (size_t i = 0; i < specs.size(); ++i) {
      KVQ_ASSIGN_OR_RETURN(auto cache, make_cache(specs[i], cache_shape(s, max_depth), calib.back()[i].calibration()));
      need += double(cache->bytes_for(max_depth));
      names += (names.empty() ? "" : ", ") + specs[i].text;
    }
    if (opts.available_memory > 0 && need > 0.8 * opts.available_memory) {
      return out_of_memory(s.name + " with " + names + " caches, held at once, at " + std::to_string(max_depth) +
                           " tokens needs " + gib(need) + " per layer but only " + gib(opts.available_memory) +
                           " of memory is available: lower the depth or drop cache types");
    }
  }

  ExecContext ctx(opts.n_threads, opts.path);
  AttentionBenchResult result;
  result.simd_target = simd_targets_label();
  {
    KVQ_ASSIGN_OR_RETURN(ReadBandwidth bw, measure_read_bandwidth(ctx.pool(), opts.bandwidth_bytes, opts.bandwidth_passes));
    result.read_gbps = bw.gbps;
    result.bandwidth_method = bw.method;
    if (opts.log) opts.log("read bandwidth: " + std::to_string(int(bw.gbps * 1000)) + " MB/s");
  }
  if (std::any_of(specs.begin(), specs.end(), [](const CacheSpec& c) { return c.needs_calibration(); })) {
    result.calibration_note = "kvquant parameters (per-channel key thresholds, k-means codebooks, no Fisher "
                              "weighting) fitted on " + std::to_string(opts.calib_windows * opts.calib_window) +
                              " synthetic tokens drawn separately from the timed tokens (same distribution)";
  }

  for (size_t si = 0; si < opts.shapes.size(); ++si) {
    const AttentionShape& s = opts.shapes[si];
    Rope rope;
    const AttentionParams params = make_attention_params(s, &rope);
    std::vector<float> pool_k, pool_v;
    const int pool_tokens = std::min(opts.pool_tokens, max_depth);
    gens[si].sample(pool_tokens, opts.seed + 2000, &pool_k, &pool_v);
    std::vector<float> q(size_t(s.n_heads) * size_t(s.head_dim)), out(q.size());
    Rng rng(opts.seed + 3000);
    for (auto& x : q) x = float(rng.normal());
    std::vector<std::unique_ptr<KvCache>> caches;
    for (size_t i = 0; i < specs.size(); ++i) {
      KVQ_ASSIGN_OR_RETURN(auto cache, make_cache(specs[i], cache_shape(s, max_depth), calib[si][i].calibration()));
      caches.push_back(std::move(cache));
    }
    const size_t f16 = size_t(std::find_if(specs.begin(), specs.end(), [](const CacheSpec& c) { return c.text == "f16"; }) -
                              specs.begin());
    for (int depth : depths) {
      std::vector<AttentionBenchRow> rows(specs.size());
      std::vector<int> calls(specs.size());
      for (size_t i = 0; i < specs.size(); ++i) {
        const std::string what = "fill " + s.name + " " + specs[i].text;
        Timer fill;
        KVQ_RETURN_IF_ERROR(fill_to(opts, what, *caches[i], depth, pool_k, pool_v, pool_tokens));
        rows[i].fill_seconds = fill.seconds();
        KVQ_ASSIGN_OR_RETURN(calls[i], warm_up(ctx, opts, params, *caches[i], depth, q.data(), out.data()));
      }
      // Every cache in each repetition, forward in even ones and backward in odd ones, so that
      // each speedup is taken between calls seconds apart, never minutes.
      std::vector<std::vector<double>> times(specs.size());
      for (int r = 0; r < opts.repetitions; ++r) {
        for (size_t k = 0; k < specs.size(); ++k) {
          const size_t i = r % 2 == 0 ? k : specs.size() - 1 - k;
          KVQ_ASSIGN_OR_RETURN(const double sec, time_decode(ctx, params, *caches[i], depth, calls[i], q.data(), out.data()));
          times[i].push_back(sec);
        }
      }
      for (size_t i = 0; i < specs.size(); ++i) {
        AttentionBenchRow& row = rows[i];
        const double sec = median(times[i]);
        std::vector<double> ratios;
        for (int r = 0; r < opts.repetitions; ++r) ratios.push_back(times[f16][size_t(r)] / times[i][size_t(r)]);
        row.shape = s.name;
        row.depth = depth;
        row.cache = specs[i].text;
        row.us_per_token = sec * 1e6;
        row.bytes_read = caches[i]->bytes_used() / size_t(caches[i]->shape().n_layers);
        row.gbps = double(row.bytes_read) / sec / 1e9;
        row.read_gbps = result.read_gbps;
        row.bandwidth_fraction = row.gbps / result.read_gbps;
        row.speedup_vs_f16 = median(ratios);
        if (opts.log) {
          char buf[256];
          std::snprintf(buf, sizeof buf, "%s %s at %d tokens: filled in %.2f s, %.0f us/token", s.name.c_str(),
                        row.cache.c_str(), depth, row.fill_seconds, row.us_per_token);
          opts.log(buf);
        }
        result.rows.push_back(row);
      }
    }
  }

  // Rows in report order.
  auto shape_index = [&](const std::string& name) {
    return std::find_if(opts.shapes.begin(), opts.shapes.end(), [&](const auto& s) { return s.name == name; }) -
           opts.shapes.begin();
  };
  std::stable_sort(result.rows.begin(), result.rows.end(), [&](const auto& a, const auto& b) {
    const auto sa = shape_index(a.shape), sb = shape_index(b.shape);
    return sa != sb ? sa < sb : a.depth < b.depth;
  });
  return result;
}

}  // namespace kvq
