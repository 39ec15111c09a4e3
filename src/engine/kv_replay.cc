// SPDX-License-Identifier: MIT
#include "engine/kv_replay.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "base/check.h"

namespace kvq {

int replay_row(int64_t pos, int window) {
  KVQ_CHECK(pos >= 0 && window >= 2, "replay_row(%lld, %d)", (long long)pos, window);
  if (pos < window) return int(pos);
  return 1 + int((pos - window) % (window - 1));
}

Status replay_fill(const LlamaModel& model, const KvActivations& acts, KvCache& cache, int n_tokens,
                   int chunk, const std::function<void(int)>& progress) {
  const ModelConfig& c = model.config();
  const int window = acts.args().window;
  KVQ_CHECK(acts.n_layers() == c.n_layers && cache.shape().n_layers == c.n_layers,
            "replay activations, cache and model disagree on the layer count");
  if (chunk < 1) return invalid_argument("the replay chunk must be at least 1 token, got " + std::to_string(chunk));
  if (window < 2) return invalid_argument("replaying needs a window of at least 2 tokens");
  if (n_tokens > cache.shape().n_ctx) {
    return invalid_argument("cannot fill " + std::to_string(n_tokens) + " tokens into a cache of " +
                            std::to_string(cache.shape().n_ctx));
  }
  const size_t row = size_t(c.kv_dim());
  std::vector<float> k(size_t(std::min(chunk, std::max(1, n_tokens))) * row), v(k.size());
  std::vector<float> cs;
  for (int pos0 = cache.n_tokens(0); pos0 < n_tokens;) {
    const int n = std::min(chunk, n_tokens - pos0);
    if (!cache.pre_rope()) {
      // Post-RoPE caches store keys rotated to their position, as the model's forward does.
      cs.resize(size_t(n) * size_t(c.rope_dim));
      model.rope().ggml_angles(pos0, n, cs.data());
    }
    for (int il = 0; il < c.n_layers; ++il) {
      const float* ks = acts.keys(il).data();
      const float* vs = acts.values(il).data();
      for (int t = 0; t < n; ++t) {
        const size_t src = size_t(replay_row(pos0 + t, window)) * row;
        std::memcpy(&k[size_t(t) * row], ks + src, row * sizeof(float));
        std::memcpy(&v[size_t(t) * row], vs + src, row * sizeof(float));
      }
      if (!cache.pre_rope()) model.rope().rotate_rows(k.data(), n, c.n_kv_heads, cs.data());
      const Status s = cache.append(il, n, k.data(), v.data());
      if (!s.ok()) return undo_step(cache, pos0, s);
    }
    const Status s = cache.end_step();
    if (!s.ok()) return undo_step(cache, pos0, s);
    pos0 += n;
    if (progress) progress(pos0);
  }
  return ok_status();
}

}  // namespace kvq
