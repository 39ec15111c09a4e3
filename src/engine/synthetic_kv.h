// SPDX-License-Identifier: MIT
// Synthetic K/V activations that resemble a LLaMA layer's (kvquant.md §2): keys have a
// per-channel offset and scale (log-normal spread) and a few outlier channels per head with
// much larger magnitude, consistent across tokens; values are roughly normal with a mild
// per-token scale. The channel statistics are fixed by the seed; every sample() draws fresh
// tokens from the same distribution (so calibration and timed data differ but match).
#pragma once

#include <cstdint>
#include <vector>

namespace kvq {

class SyntheticKv {
 public:
  SyntheticKv(int n_kv_heads, int head_dim, uint64_t seed);
  int row() const { return int(mean_.size()); }
  // n_tokens rows of keys and of values, each [n_tokens, n_kv_heads * head_dim].
  void sample(int n_tokens, uint64_t seed, std::vector<float>* k, std::vector<float>* v) const;

 private:
  std::vector<float> mean_, scale_;  // per key channel
};

}  // namespace kvq
