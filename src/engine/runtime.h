// SPDX-License-Identifier: MIT
// What the tools ask of the engine beyond running models: the SIMD target in use, cache specs
// and what a cache of a spec allocates. Tools include this, not kv/ or quant/ directly.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/cpu/kv_fused.h"
#include "kv/cache_spec.h"
#include "quant/bits_accounting.h"
#include "quant/common.h"  // simd_target_name(): the Highway target KernelPath::kSimd uses

namespace kvq {

// The SIMD targets KernelPath::kSimd uses, as the tools print them: simd_target_name(), and the
// one q4_0 / q8_0 attention takes where it differs (AVX3_DL's VNNI, kernels/cpu/kv_fused.h).
inline std::string simd_targets_label() {
  std::string s = simd_target_name();
  const std::string ggml = cpu::ggml_kernels_target();
  if (ggml != s) s += ", q4_0/q8_0 attention " + ggml;
  return s;
}

// Bytes and bits per value that n_tokens of `spec` allocate (quant/bits_accounting.h); calib
// gives kvquant-mixed its per-layer widths.
inline StatusOr<BitsReport> predict_cache_bits(const CacheSpec& spec, const KvCacheShape& shape, int64_t n_tokens,
                                               const CacheCalibration& calib = {}) {
  return account_bits(cache_config(spec, shape, calib), n_tokens);
}

}  // namespace kvq
