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

constexpr const char* kKnown =
    "f32, f16, q8_0|q4_0[:rot=0|1], int2|int3|int4|int8[:g=N][:rot=0|1], kivi-2|kivi-4[:g=N][:r=N][:rot=0|1], "
    "kvquant-2|kvquant-3|kvquant-4|kvquant-mixed[:outliers=F][:sinks=N][:qnorm=0|1][:codebook=nuq|nf|uniform][:prerope=0|1]"
    "[:rot=0|1]";

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
  std::vector<std::string> allowed;
  if (base == "f32") {
    t.kind = TensorKind::kF32;
    t.bits = 32;
  } else if (base == "f16") {
    t.kind = TensorKind::kF16;
  } else if (base == "q8_0" || base == "q4_0") {
    t.kind = base == "q8_0" ? TensorKind::kQ8_0 : TensorKind::kQ4_0;
    t.bits = base == "q8_0" ? 8 : 4;
    allowed = {"rot"};
  } else if (base == "int2" || base == "int3" || base == "int4" || base == "int8") {
    t.kind = TensorKind::kInt;
    t.bits = base[3] - '0';
    allowed = {"g", "rot"};
  } else if (base == "kivi-2" || base == "kivi-4") {
    t.kind = TensorKind::kKivi;
    t.bits = base[5] - '0';
    t.group = 32;
    allowed = {"g", "r", "rot"};
  } else if (base == "kvquant-2" || base == "kvquant-3" || base == "kvquant-4" || base == "kvquant-mixed") {
    t.kind = TensorKind::kKvquant;
    // kvquant-mixed: each layer's width comes from the calibration (kvq calibrate --bits-budget).
    t.bits = base == "kvquant-mixed" ? 0 : base[8] - '0';
    t.kvquant.bits = t.bits;
    allowed = {"outliers", "sinks", "qnorm", "codebook", "prerope", "rot"};
  } else {
    return invalid_argument("unknown cache type '" + std::string(base) + "' in '" + std::string(spec) +
                            "' (known: " + kKnown + ")");
  }
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
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
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

StatusOr<std::unique_ptr<KvStore>> make_plain_store(const TensorSpec& t, KvRole role, const KvCacheShape& shape,
                                              PagePool* pool, const KvquantParams* params) {
  switch (t.kind) {
    case TensorKind::kF32: return std::unique_ptr<KvStore>(new DenseStore(shape, pool, DType::kF32, false));
    case TensorKind::kF16: return std::unique_ptr<KvStore>(new DenseStore(shape, pool, DType::kF16, false));
    case TensorKind::kQ8_0: return GgmlStore::make(shape, pool, 8);
    case TensorKind::kQ4_0: return GgmlStore::make(shape, pool, 4);
    case TensorKind::kInt: return UniformStore::make(shape, pool, t.bits, t.group);
    case TensorKind::kKivi: return KiviStore::make(shape, pool, role, t.bits, t.group, t.residual);
    case TensorKind::kKvquant:
      if (!params) {
        return invalid_argument("'" + t.text + "' needs calibration (per-channel key thresholds and "
                                "codebooks): pass --calib auto or --calib FILE");
      }
      return KvquantStore::make(shape, pool, role, t.kvquant, *params);
  }
  return internal_error("unhandled tensor kind");
}

StatusOr<std::unique_ptr<KvStore>> make_store(const TensorSpec& t, KvRole role, const KvCacheShape& shape,
                                              PagePool* pool, const KvquantParams* params) {
  KVQ_ASSIGN_OR_RETURN(auto store, make_plain_store(t, role, shape, pool, params));
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
  auto tensor = [](const TensorSpec& t, KvRole role, const KvquantParams* params) {
    TensorQuantConfig c;
    switch (t.kind) {
      case TensorKind::kF32: c.scheme = KvScheme::kF16; c.bits = 32; break;
      case TensorKind::kF16: c.scheme = KvScheme::kF16; c.bits = 16; break;
      case TensorKind::kQ8_0: c.scheme = KvScheme::kQ8_0; c.bits = 8; break;
      case TensorKind::kQ4_0: c.scheme = KvScheme::kQ4_0; c.bits = 4; break;
      case TensorKind::kInt:
        c.scheme = KvScheme::kUniform;
        c.bits = t.bits;
        c.group_size = t.group;
        c.whole_vector = true;
        break;
      case TensorKind::kKivi:
        c.scheme = KvScheme::kUniform;
        c.bits = t.bits;
        c.group_size = t.group;
        c.per_channel = role == KvRole::kKey;
        c.residual = t.residual;
        c.flush_in_blocks = role == KvRole::kKey;
        c.window_rows = kivi_window_rows(role == KvRole::kKey, t.residual, t.group);
        break;
      case TensorKind::kKvquant:
        c.scheme = t.kvquant.codebook == CodebookKind::kNf ? KvScheme::kNf : KvScheme::kNuq;
        c.bits = t.bits;
        c.per_channel = role == KvRole::kKey;
        c.outlier_fraction = t.kvquant.outliers;
        c.qnorm = t.kvquant.qnorm;
        // kvquant-mixed: the widths the calibration chose (none: account_bits says so).
        if (t.bits == 0 && params) {
          for (const auto& l : params->layers) c.layer_bits.push_back(l.codebook.bits);
        }
        break;
    }
    return c;
  };
  CacheConfig c;
  c.n_layers = shape.n_layers;
  c.n_kv_heads = shape.n_kv_heads;
  c.head_dim = shape.head_dim;
  c.k = tensor(spec.k, KvRole::kKey, calib.k);
  c.v = tensor(spec.v, KvRole::kValue, calib.v);
  if (spec.k.kind == TensorKind::kKvquant || spec.v.kind == TensorKind::kKvquant) {
    c.n_sink = spec.k.kind == TensorKind::kKvquant ? spec.k.kvquant.sinks : spec.v.kvquant.sinks;
  }
  return c;
}

}  // namespace kvq
