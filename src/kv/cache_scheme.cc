// SPDX-License-Identifier: MIT
#include "kv/cache_scheme.h"

#include <algorithm>

#include "base/check.h"
#include "kv/cache_spec.h"
#include "kv/dense_store.h"
#include "kv/ggml_store.h"
#include "kv/kivi_store.h"
#include "kv/uniform_store.h"

namespace kvq {
namespace {

using StoreOr = StatusOr<std::unique_ptr<KvStore>>;

StoreOr make_dense(const TensorSpec& t, KvRole, const KvCacheShape& shape, PagePool* pool, const KvquantParams*) {
  return std::unique_ptr<KvStore>(new DenseStore(shape, pool, t.bits == 32 ? DType::kF32 : DType::kF16, false));
}
StoreOr make_ggml(const TensorSpec& t, KvRole, const KvCacheShape& shape, PagePool* pool, const KvquantParams*) {
  return GgmlStore::make(shape, pool, t.bits);
}
StoreOr make_int(const TensorSpec& t, KvRole, const KvCacheShape& shape, PagePool* pool, const KvquantParams*) {
  return UniformStore::make(shape, pool, t.bits, t.group);
}
StoreOr make_kivi(const TensorSpec& t, KvRole role, const KvCacheShape& shape, PagePool* pool,
                  const KvquantParams*) {
  return KiviStore::make(shape, pool, role, t.bits, t.group, t.residual);
}
StoreOr make_kvquant(const TensorSpec& t, KvRole role, const KvCacheShape& shape, PagePool* pool,
                     const KvquantParams* params) {
  if (!params) {
    return invalid_argument("'" + t.text + "' needs calibration (per-channel key thresholds and "
                            "codebooks): pass --calib auto or --calib FILE");
  }
  return KvquantStore::make(shape, pool, role, t.kvquant, *params);
}

// Full precision: f32 is the f16 scheme with 32 bits.
TensorQuantConfig account_dense(const TensorSpec& t, KvRole, const KvquantParams*) {
  TensorQuantConfig c;
  c.scheme = KvScheme::kF16;
  c.bits = t.bits;
  return c;
}
TensorQuantConfig account_ggml(const TensorSpec& t, KvRole, const KvquantParams*) {
  TensorQuantConfig c;
  c.scheme = t.bits == 8 ? KvScheme::kQ8_0 : KvScheme::kQ4_0;
  c.bits = t.bits;
  return c;
}
// int-b: per-token groups over the whole d_kv vector (UniformStore).
TensorQuantConfig account_int(const TensorSpec& t, KvRole, const KvquantParams*) {
  TensorQuantConfig c;
  c.scheme = KvScheme::kUniform;
  c.bits = t.bits;
  c.group_size = t.group;
  c.whole_vector = true;
  return c;
}
// KIVI §3: keys per channel in groups of G tokens flushed R at a time, values per token in
// groups of G channels sliding out of an R-token fp16 window.
TensorQuantConfig account_kivi(const TensorSpec& t, KvRole role, const KvquantParams*) {
  const bool key = role == KvRole::kKey;
  TensorQuantConfig c;
  c.scheme = KvScheme::kUniform;
  c.bits = t.bits;
  c.group_size = t.group;
  c.per_channel = key;
  c.residual = t.residual;
  c.flush_in_blocks = key;
  c.window_rows = kivi_window_rows(key, t.residual, t.group);
  return c;
}
// KVQuant §3: keys per channel with offline thresholds, values per token. A uniform codebook
// is stored as a codebook table like nuq's, so it costs what nuq costs; nf's levels are fixed.
TensorQuantConfig account_kvquant(const TensorSpec& t, KvRole role, const KvquantParams* params) {
  TensorQuantConfig c;
  c.scheme = t.kvquant.codebook == CodebookKind::kNf ? KvScheme::kNf : KvScheme::kNuq;
  c.bits = t.bits;
  c.per_channel = role == KvRole::kKey;
  c.outlier_fraction = t.kvquant.outliers;
  c.qnorm = t.kvquant.qnorm;
  c.norm8 = role == KvRole::kValue && t.kvquant.norm_bits == 8;
  set_kvquant_window(&c, t.kvquant.window);  // the fp16 window of the newest tokens (r=N)
  // kvquant-mixed: the widths the calibration chose (none: account_bits says so).
  if (t.bits == 0 && params) {
    size_t heads = 0;  // widths per KV head in some layer: that many heads
    for (const auto& l : params->layers) heads = std::max(heads, l.head_codebooks.size());
    for (const auto& l : params->layers) {
      if (heads == 0) {
        c.layer_bits.push_back(l.codebook.bits);
        continue;
      }
      for (size_t h = 0; h < heads; ++h) {
        c.head_bits.push_back(l.head_codebooks.size() == heads ? l.head_codebooks[h].bits : l.codebook.bits);
      }
    }
  }
  return c;
}

constexpr CacheScheme kSchemes[] = {
    {TensorKind::kF32, "f32", {{"f32", 32}}, "", "", 0, 0, false, make_dense, account_dense},
    {TensorKind::kF16, "f16", {{"f16", 16}}, "", "", 0, 0, false, make_dense, account_dense},
    {TensorKind::kQ8_0, "q8_0", {{"q8_0", 8}}, "rot", "[:rot=0|1]", 0, 0, false, make_ggml, account_ggml},
    {TensorKind::kQ4_0, "q4_0", {{"q4_0", 4}}, "rot", "[:rot=0|1]", 0, 0, false, make_ggml, account_ggml},
    {TensorKind::kInt, "int", {{"int2", 2}, {"int3", 3}, {"int4", 4}, {"int8", 8}}, "g,rot", "[:g=N][:rot=0|1]", 0,
     0, false, make_int, account_int},
    {TensorKind::kKivi, "kivi", {{"kivi-2", 2}, {"kivi-4", 4}}, "g,r,rot", "[:g=N][:r=N][:rot=0|1]", 32, 128, false,
     make_kivi, account_kivi},
    {TensorKind::kKvquant, "kvquant", {{"kvquant-2", 2}, {"kvquant-3", 3}, {"kvquant-4", 4}, {"kvquant-mixed", 0}},
     "outliers,sinks,r,qnorm,codebook,prerope,rot,norm",
     "[:outliers=F][:sinks=N][:r=N][:qnorm=0|1][:codebook=nuq|nf|uniform][:prerope=0|1][:rot=0|1][:norm=16|8]", 0, 0,
     true,
     make_kvquant, account_kvquant},
};

}  // namespace

std::span<const CacheScheme> cache_schemes() { return kSchemes; }

const CacheScheme& cache_scheme(TensorKind kind) {
  for (const CacheScheme& s : kSchemes) {
    if (s.kind == kind) return s;
  }
  KVQ_UNREACHABLE();  // every TensorKind has a row
}

const CacheScheme* find_cache_scheme(std::string_view name, int* bits) {
  for (const CacheScheme& s : kSchemes) {
    for (const SchemeName& n : s.names) {
      if (!n.name.empty() && n.name == name) {
        *bits = n.bits;
        return &s;
      }
    }
  }
  return nullptr;
}

std::string known_cache_schemes() {
  std::string out;
  for (const CacheScheme& s : kSchemes) {
    if (!out.empty()) out += ", ";
    std::string names;
    for (const SchemeName& n : s.names) {
      if (n.name.empty()) continue;
      // Appended piece by piece: GCC 12 warns falsely (-Wrestrict, its bug 105329) on "|" + std::string.
      if (!names.empty()) names += '|';
      names += n.name;
    }
    out += names + std::string(s.options_help);
  }
  return out;
}

}  // namespace kvq
