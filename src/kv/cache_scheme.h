// SPDX-License-Identifier: MIT
// The one table of cache schemes (issue 8 §1): for each way of storing K or V — f32, f16, q8_0,
// q4_0, int-b, KIVI, KVQuant — its spec names and bit widths, the options its spec accepts and
// their defaults, the store that holds it and what the bits accounting counts for it. The spec
// grammar (kv/cache_spec.cc), the factory (make_cache) and cache_config() all read this table
// and nothing else, so adding a scheme is adding a row. Byte layouts live with each store
// (records of PagedRows, ggml block structs) and the accounting reads the same sizes
// (quant/bits_accounting.h).
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "kv/kv_store.h"
#include "kv/kvquant_store.h"
#include "kv/page_pool.h"
#include "kvq/status.h"
#include "quant/bits_accounting.h"

namespace kvq {

enum class TensorKind { kF32, kF16, kQ8_0, kQ4_0, kInt, kKivi, kKvquant };

struct TensorSpec;

// One spec name and the bit width it selects ("kivi-2": 2).
struct SchemeName {
  std::string_view name;
  int bits = 0;
};

struct CacheScheme {
  TensorKind kind;
  std::string_view family;             // for messages: "kivi"
  SchemeName names[4];                 // the spec names (unused entries empty; bits 0: a width
                                       // per layer from the calibration, kvquant-mixed)
  std::string_view options;            // option keys the spec accepts, comma-separated
  std::string_view options_help;       // their grammar, for the list of known types
  int group = 0;                       // default `g` (int: 0 = whole vector; kivi: G)
  int residual = 0;                    // default `r` (kivi: R)
  bool calibrated = false;             // needs per-layer parameters (--calib)
  // The empty store for one of K/V (params: the calibration, null when there is none).
  StatusOr<std::unique_ptr<KvStore>> (*make)(const TensorSpec& t, KvRole role, const KvCacheShape& shape,
                                             PagePool* pool, const KvquantParams* params);
  // What the bits accounting counts for it (quant/bits_accounting.h); params: the calibration
  // (kvquant-mixed takes its per-layer widths from it), null when there is none.
  TensorQuantConfig (*account)(const TensorSpec& t, KvRole role, const KvquantParams* params);
};

// Every scheme, in the order `kvq` lists them.
std::span<const CacheScheme> cache_schemes();
// The row of a kind (every kind has one).
const CacheScheme& cache_scheme(TensorKind kind);
// The row and bit width of a spec name, or null.
const CacheScheme* find_cache_scheme(std::string_view name, int* bits);
// "f32, f16, q8_0[:rot=0|1], ...": every name with its options, for error messages and help.
std::string known_cache_schemes();

}  // namespace kvq
