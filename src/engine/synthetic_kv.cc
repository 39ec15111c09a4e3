// SPDX-License-Identifier: MIT
#include "engine/synthetic_kv.h"

#include <cmath>

#include "base/rng.h"

namespace kvq {

namespace {
// Outlier channels per head: LLaMA keys show a handful of channels with magnitudes ~10x the
// rest (KVQuant Fig. 2), which is what per-channel key quantization is designed around.
constexpr int kOutlierChannels = 4;
constexpr float kOutlierGain = 10.0f;
}  // namespace

SyntheticKv::SyntheticKv(int n_kv_heads, int head_dim, uint64_t seed) {
  Rng rng(seed);
  const size_t row = size_t(n_kv_heads) * size_t(head_dim);
  mean_.resize(row);
  scale_.resize(row);
  for (size_t c = 0; c < row; ++c) {
    scale_[c] = float(std::exp(0.5 * rng.normal()));
    mean_[c] = float(0.5 * rng.normal()) * scale_[c];
  }
  for (int h = 0; h < n_kv_heads; ++h) {
    for (int j = 0; j < kOutlierChannels; ++j) {
      const size_t c = size_t(h) * size_t(head_dim) + rng.below(uint64_t(head_dim));
      scale_[c] *= kOutlierGain;
      mean_[c] = float(rng.uniform() < 0.5 ? -1 : 1) * 2.0f * scale_[c];
    }
  }
}

void SyntheticKv::sample(int n_tokens, uint64_t seed, std::vector<float>* k, std::vector<float>* v) const {
  Rng rng(seed);
  const size_t row = mean_.size();
  k->resize(size_t(n_tokens) * row);
  v->resize(size_t(n_tokens) * row);
  for (int t = 0; t < n_tokens; ++t) {
    float* kt = k->data() + size_t(t) * row;
    float* vt = v->data() + size_t(t) * row;
    const float token_scale = float(std::exp(0.2 * rng.normal()));
    for (size_t c = 0; c < row; ++c) {
      kt[c] = mean_[c] + scale_[c] * float(rng.normal());
      vt[c] = token_scale * float(rng.normal());
    }
  }
}

}  // namespace kvq
