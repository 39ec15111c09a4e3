// SPDX-License-Identifier: MIT
#include "kv/kv_cache.h"

namespace kvq {

std::vector<float> read_all(const KvCache& cache) {
  const KvCacheShape& s = cache.shape();
  std::vector<float> out;
  for (int il = 0; il < s.n_layers; ++il) {
    const int n = cache.n_tokens(il);
    std::vector<float> k(size_t(n) * size_t(s.head_dim)), v(k.size());
    for (int h = 0; h < s.n_kv_heads; ++h) {
      cache.read(il, h, 0, n, k.data(), v.data());
      out.insert(out.end(), k.begin(), k.end());
      out.insert(out.end(), v.begin(), v.end());
    }
  }
  return out;
}

}  // namespace kvq
