// SPDX-License-Identifier: MIT
// Cache spec strings parsed into a validated config, and the factory that builds a cache from
// it, both driven by the scheme table (kv/cache_scheme.h). docs/CACHE_SPEC.md documents the
// grammar:  NAME[:OPTION=VALUE]...
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kv/cache_scheme.h"
#include "kv/kv_cache.h"
#include "kv/kvquant_store.h"
#include "kv/page_pool.h"
#include "kvq/status.h"
#include "quant/bits_accounting.h"

namespace kvq {

// How one of K/V is stored.
struct TensorSpec {
  TensorKind kind = TensorKind::kF16;
  int bits = 16;        // 0: kvquant-mixed, a width per layer from the calibration
  int group = 0;        // int: 0 = whole vector; kivi: G (defaults: the scheme table)
  int residual = 0;     // kivi, kvquant: R, the fp16 window of the newest tokens (r=N)
  KvquantOptions kvquant;
  bool rot = false;     // rows stored in the randomized Hadamard basis (kv/rotated_store.h)
  std::string text;     // canonical spec string
};

struct CacheSpec {
  TensorSpec k, v;
  std::string text;  // "kivi-2" or "K=kvquant-3,V=f16"
  bool needs_calibration() const { return cache_scheme(k.kind).calibrated || cache_scheme(v.kind).calibrated; }
  // kvquant-mixed on either side: per-layer widths from a calibration file.
  bool mixed_widths() const {
    return (k.kind == TensorKind::kKvquant && k.bits == 0) || (v.kind == TensorKind::kKvquant && v.bits == 0);
  }
};

// Errors name the bad part of the spec and list what is known.
StatusOr<TensorSpec> parse_tensor_spec(std::string_view spec);
// The same spec for keys and values.
StatusOr<CacheSpec> parse_cache_spec(std::string_view spec);
StatusOr<CacheSpec> parse_cache_spec(std::string_view k_spec, std::string_view v_spec);
// Splits "f16,kivi-2,kvquant-3:outliers=0" at commas (for reports over several caches).
std::vector<std::string> split_spec_list(std::string_view list);

// Calibrated parameters that kvquant stores need (null when unused).
struct CacheCalibration {
  const KvquantParams* k = nullptr;
  const KvquantParams* v = nullptr;
};

// Builds an empty cache. Errors: kUnimplemented for a spec the shape cannot use (named),
// kInvalidArgument when a kvquant cache has no calibration.
// Storage comes from `pool` when given (caches sharing one budget), else from a pool of the
// cache's own (kv/page_pool.h).
StatusOr<std::unique_ptr<KvCache>> make_cache(const CacheSpec& spec, const KvCacheShape& shape,
                                              const CacheCalibration& calib = {},
                                              std::shared_ptr<PagePool> pool = nullptr);

// A full-precision cache (K and V in dtype, f32 or f16); keys_pre_rope keeps keys before RoPE
// (calibration captures them so).
std::unique_ptr<KvCache> make_dense_cache(const KvCacheShape& shape, DType dtype, bool keys_pre_rope);

// The bits-accounting description of a spec (quant/bits_accounting.h), for reports. A
// kvquant-mixed part takes its per-layer widths from calib (without it, account_bits refuses
// the config with a message asking for the calibration file).
CacheConfig cache_config(const CacheSpec& spec, const KvCacheShape& shape, const CacheCalibration& calib = {});

}  // namespace kvq
