// SPDX-License-Identifier: MIT
#include "kv/cache_spec.h"

#include "kv/dense_cache.h"

namespace kvq {

StatusOr<CacheSpec> parse_cache_spec(std::string_view spec) {
  CacheSpec s;
  s.text = std::string(spec);
  if (spec == "f32") {
    s.kind = CacheKind::kF32;
  } else if (spec == "f16") {
    s.kind = CacheKind::kF16;
  } else {
    return invalid_argument("unknown cache type '" + std::string(spec) + "' (known: f32, f16)");
  }
  return s;
}

StatusOr<std::unique_ptr<KvCache>> make_cache(const CacheSpec& spec, const KvCacheShape& shape) {
  if (shape.n_ctx <= 0) return invalid_argument("the context size must be positive");
  switch (spec.kind) {
    case CacheKind::kF32: return std::unique_ptr<KvCache>(new DenseKvCache(shape, DType::kF32));
    case CacheKind::kF16: return std::unique_ptr<KvCache>(new DenseKvCache(shape, DType::kF16));
  }
  return internal_error("unhandled cache kind");
}

}  // namespace kvq
