// SPDX-License-Identifier: MIT
// Token sampling: greedy, temperature, top-k, top-p; deterministic for a seed.
#pragma once

#include <cstdint>
#include <vector>

#include "base/rng.h"

namespace kvq {

struct SamplingArgs {
  float temp = 0.8f;  // <= 0: greedy
  int top_k = 40;     // <= 0: all tokens
  float top_p = 0.95f;
  uint64_t seed = 42;
};

class Sampler {
 public:
  explicit Sampler(const SamplingArgs& args) : args_(args), rng_(args.seed) {}
  // logits: [n_vocab]. Greedy picks the lowest id among equal maxima.
  int32_t sample(const float* logits, int n_vocab);

 private:
  SamplingArgs args_;
  Rng rng_;
  std::vector<std::pair<float, int32_t>> cand_;
};

}  // namespace kvq
