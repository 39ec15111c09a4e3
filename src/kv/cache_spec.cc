// SPDX-License-Identifier: MIT
#include "kv/cache_spec.h"

#include <algorithm>
#include <cstdlib>

#include "kv/composite_cache.h"
#include "kv/dense_store.h"
#include "kv/ggml_store.h"
#include "kv/kivi_store.h"
#include "kv/rotated_store.h"
#include "kv/uniform_store.h"

namespace kvq {

namespace {

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == sep) {
      out.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  return out;
}

StatusOr<long> parse_int(std::string_view spec, std::string_view key, std::string_view v, long lo, long hi) {
  const std::string str(v);
  char* end = nullptr;
  const long x = std::strtol(str.c_str(), &end, 10);
  if (str.empty() || *end != '\0' || x < lo || x > hi) {
    return invalid_argument("cache spec '" + std::string(spec) + "': " + std::string(key) + "=" + str +
                            " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return x;
}

StatusOr<double> parse_fraction(std::string_view spec, std::string_view key, std::string_view v) {
  const std::string str(v);
  char* end = nullptr;
  const double x = std::strtod(str.c_str(), &end);
  if (str.empty() || *end != '\0' || !(x >= 0.0 && x <= 0.5)) {
    return invalid_argument("cache spec '" + std::string(spec) + "': " + std::string(key) + "=" + str +
                            " must be a fraction in [0, 0.5], e.g. 0.01");
  }
  return x;
}

}  // namespace

StatusOr<TensorSpec> parse_tensor_spec(std::string_view spec) {
  const auto parts = split(spec, ':');
  const std::string_view base = parts[0];
  TensorSpec t;
  const CacheScheme* scheme = find_cache_scheme(base, &t.bits);
  if (!scheme) {
    return invalid_argument("unknown cache type '" + std::string(base) + "' in '" + std::string(spec) +
                            "' (known: " + known_cache_schemes() + ")");
  }
  t.kind = scheme->kind;
  t.group = scheme->group;
  t.residual = scheme->residual;
  t.kvquant.bits = t.bits;
  std::vector<std::string_view> allowed;
  if (!scheme->options.empty()) allowed = split(scheme->options, ',');
  std::vector<std::string> given;  // an option given twice is an error, not "the last wins"
  for (size_t i = 1; i < parts.size(); ++i) {
    const auto kv = split(parts[i], '=');
    const std::string key(kv[0]);
    if (std::find(given.begin(), given.end(), key) != given.end()) {
      return invalid_argument("cache spec '" + std::string(spec) + "': option '" + key + "' is given twice");
    }
    given.push_back(key);
    bool known = false;
    for (const auto& a : allowed) known |= a == key;
    if (kv.size() != 2 || !known) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      return invalid_argument("cache spec '" + std::string(spec) + "': bad option '" + std::string(parts[i]) +
                              "' for " + std::string(base) + " (options: " + (list.empty() ? "none" : list) +
                              ", written key=value)");
    }
    const std::string_view v = kv[1];
    if (key == "g") {
      KVQ_ASSIGN_OR_RETURN(long g, parse_int(spec, key, v, t.kind == TensorKind::kInt ? 0 : 1, 1 << 16));
      t.group = int(g);
    } else if (key == "r") {
      KVQ_ASSIGN_OR_RETURN(long r, parse_int(spec, key, v, 0, 1 << 20));
      t.residual = int(r);
    } else if (key == "outliers") {
      KVQ_ASSIGN_OR_RETURN(t.kvquant.outliers, parse_fraction(spec, key, v));
    } else if (key == "sinks") {
      KVQ_ASSIGN_OR_RETURN(long n, parse_int(spec, key, v, 0, 1 << 20));
      t.kvquant.sinks = int(n);
    } else if (key == "qnorm" || key == "prerope" || key == "rot") {
      KVQ_ASSIGN_OR_RETURN(long b, parse_int(spec, key, v, 0, 1));
      (key == "qnorm" ? t.kvquant.qnorm : key == "prerope" ? t.kvquant.pre_rope : t.rot) = b != 0;
    } else if (key == "norm") {
      if (v == "16") t.kvquant.norm_bits = 16;
      else if (v == "8") t.kvquant.norm_bits = 8;
      else return invalid_argument("cache spec '" + std::string(spec) + "': norm=" + std::string(v) + " (known: 16, 8)");
    } else if (key == "codebook") {
      if (v == "nuq") t.kvquant.codebook = CodebookKind::kNuq;
      else if (v == "nf") t.kvquant.codebook = CodebookKind::kNf;
      else if (v == "uniform") t.kvquant.codebook = CodebookKind::kUniform;
      else return invalid_argument("cache spec '" + std::string(spec) + "': codebook=" + std::string(v) +
                                   " (known: nuq, nf, uniform)");
    }
  }
  // Calibration fits a kvquant store's thresholds and codebooks on rotated rows.
  t.kvquant.rotate = t.rot;
  t.kvquant.window = t.residual;
  t.text = std::string(spec);
  return t;
}

StatusOr<CacheSpec> parse_cache_spec(std::string_view k_spec, std::string_view v_spec) {
  CacheSpec s;
  KVQ_ASSIGN_OR_RETURN(s.k, parse_tensor_spec(k_spec));
  KVQ_ASSIGN_OR_RETURN(s.v, parse_tensor_spec(v_spec));
  // Refused here, before any calibration, rather than when the cache is built.
  if (s.k.rot && s.k.kind == TensorKind::kKvquant && s.k.kvquant.pre_rope) return pre_rope_rotation_error(s.k.text);
  s.text = k_spec == v_spec ? std::string(k_spec) : "K=" + std::string(k_spec) + ",V=" + std::string(v_spec);
  return s;
}

StatusOr<CacheSpec> parse_cache_spec(std::string_view spec) { return parse_cache_spec(spec, spec); }

std::vector<std::string> split_spec_list(std::string_view list) {
  std::vector<std::string> out;
  for (auto p : split(list, ',')) out.emplace_back(p);
  return out;
}

namespace {

StatusOr<std::unique_ptr<KvStore>> make_store(const TensorSpec& t, KvRole role, const KvCacheShape& shape,
                                              PagePool* pool, const KvquantParams* params) {
  KVQ_ASSIGN_OR_RETURN(auto store, cache_scheme(t.kind).make(t, role, shape, pool, params));
  if (!t.rot) return store;
  return RotatedStore::make(std::move(store), role);
}

}  // namespace

StatusOr<std::unique_ptr<KvCache>> make_cache(const CacheSpec& spec, const KvCacheShape& shape,
                                              const CacheCalibration& calib, std::shared_ptr<PagePool> pool) {
  if (shape.n_ctx <= 0) return invalid_argument("the context size must be positive");
  if (!pool) pool = std::make_shared<PagePool>();
  KVQ_ASSIGN_OR_RETURN(auto k, make_store(spec.k, KvRole::kKey, shape, pool.get(), calib.k));
  KVQ_ASSIGN_OR_RETURN(auto v, make_store(spec.v, KvRole::kValue, shape, pool.get(), calib.v));
  return std::unique_ptr<KvCache>(new CompositeKvCache(std::move(pool), std::move(k), std::move(v)));
}

std::unique_ptr<KvCache> make_dense_cache(const KvCacheShape& shape, DType dtype, bool keys_pre_rope) {
  auto pool = std::make_shared<PagePool>();
  auto k = std::make_unique<DenseStore>(shape, pool.get(), dtype, keys_pre_rope);
  auto v = std::make_unique<DenseStore>(shape, pool.get(), dtype, false);
  return std::make_unique<CompositeKvCache>(std::move(pool), std::move(k), std::move(v));
}

CacheConfig cache_config(const CacheSpec& spec, const KvCacheShape& shape, const CacheCalibration& calib) {
  CacheConfig c;
  c.n_layers = shape.n_layers;
  c.n_kv_heads = shape.n_kv_heads;
  c.head_dim = shape.head_dim;
  c.k = cache_scheme(spec.k.kind).account(spec.k, KvRole::kKey, calib.k);
  c.v = cache_scheme(spec.v.kind).account(spec.v, KvRole::kValue, calib.v);
  if (spec.k.kind == TensorKind::kKvquant || spec.v.kind == TensorKind::kKvquant) {
    c.n_sink = spec.k.kind == TensorKind::kKvquant ? spec.k.kvquant.sinks : spec.v.kvquant.sinks;
  }
  return c;
}

}  // namespace kvq
