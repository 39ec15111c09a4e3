// SPDX-License-Identifier: MIT
// libFuzzer target: the cache-spec grammar (docs/CACHE_SPEC.md). The input is split at the
// first NUL into a key spec and a value spec, also tried as one spec and as a --cache list.
// Invariant: a Status or a spec whose text parses again to the same spec and whose bits can be
// accounted for a small model; never a crash, a leak or UB.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "kv/cache_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string s(reinterpret_cast<const char*>(data), size);
  const size_t nul = s.find('\0');
  const std::string k = s.substr(0, nul), v = nul == std::string::npos ? k : s.substr(nul + 1);
  kvq::KvCacheShape shape;
  shape.n_layers = 2;
  shape.n_kv_heads = 2;
  shape.head_dim = 64;
  shape.n_ctx = 256;
  for (const auto& item : kvq::split_spec_list(k)) (void)kvq::parse_cache_spec(item);
  for (const auto& spec : {kvq::parse_cache_spec(k), kvq::parse_cache_spec(k, v)}) {
    if (!spec.ok()) continue;
    // Canonical text round trip: what a report prints can be passed back.
    auto again = kvq::parse_cache_spec(spec->k.text, spec->v.text);
    if (!again.ok() || again->text != spec->text) std::abort();
    (void)kvq::account_bits(kvq::cache_config(*spec, shape), shape.n_ctx);
  }
  return 0;
}
