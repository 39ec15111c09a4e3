// SPDX-License-Identifier: MIT
// What the tools ask of the engine beyond running models: the SIMD target in use, cache specs
// and what a cache of a spec allocates. Tools include this, not kv/ or quant/ directly.
#pragma once

#include <cstdint>

#include "kv/cache_spec.h"
#include "quant/bits_accounting.h"
#include "quant/common.h"  // simd_target_name(): the Highway target KernelPath::kSimd uses

namespace kvq {

// Bytes and bits per value that n_tokens of `spec` allocate (quant/bits_accounting.h); calib
// gives kvquant-mixed its per-layer widths.
inline StatusOr<BitsReport> predict_cache_bits(const CacheSpec& spec, const KvCacheShape& shape, int64_t n_tokens,
                                               const CacheCalibration& calib = {}) {
  return account_bits(cache_config(spec, shape, calib), n_tokens);
}

}  // namespace kvq
