// SPDX-License-Identifier: MIT
#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstddef>

namespace kvq {

int32_t Sampler::sample(const float* logits, int n_vocab) {
  if (args_.temp <= 0.0f || args_.top_k == 1) {
    return int32_t(std::max_element(logits, logits + n_vocab) - logits);
  }
  cand_.resize(size_t(n_vocab));
  for (int i = 0; i < n_vocab; ++i) cand_[size_t(i)] = {logits[i], i};
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t k = args_.top_k > 0 ? std::min<size_t>(size_t(args_.top_k), cand_.size()) : cand_.size();
  std::partial_sort(cand_.begin(), cand_.begin() + std::ptrdiff_t(k), cand_.end(), by_logit);
  cand_.resize(k);
  // Softmax with temperature over the top-k, then the smallest prefix whose mass reaches top_p.
  const float mx = cand_[0].first;
  double sum = 0.0;
  for (auto& c : cand_) {
    c.first = std::exp((c.first - mx) / args_.temp);
    sum += c.first;
  }
  double cum = 0.0;
  size_t keep = cand_.size();
  for (size_t i = 0; i < cand_.size(); ++i) {
    cum += cand_[i].first / sum;
    if (cum >= args_.top_p) {
      keep = i + 1;
      break;
    }
  }
  double mass = 0.0;
  for (size_t i = 0; i < keep; ++i) mass += cand_[i].first;
  double r = rng_.uniform() * mass;
  for (size_t i = 0; i < keep; ++i) {
    r -= cand_[i].first;
    if (r <= 0.0) return cand_[i].second;
  }
  return cand_[keep - 1].second;
}

}  // namespace kvq
