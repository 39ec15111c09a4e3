// SPDX-License-Identifier: MIT
// Cache spec strings ("f32", "f16", ...) parsed into a validated config, and the factory
// that builds a cache from it. docs/CACHE_SPEC.md documents the grammar.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "kv/kv_cache.h"
#include "kvq/status.h"

namespace kvq {

enum class CacheKind { kF32, kF16 };

struct CacheSpec {
  CacheKind kind = CacheKind::kF16;
  std::string text;  // canonical spec string
};

// Errors name the bad part of the spec and list the known kinds.
StatusOr<CacheSpec> parse_cache_spec(std::string_view spec);

// Builds an empty cache. Errors: kUnimplemented for a spec the shape cannot use.
StatusOr<std::unique_ptr<KvCache>> make_cache(const CacheSpec& spec, const KvCacheShape& shape);

}  // namespace kvq
